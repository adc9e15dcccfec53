"""wsk pseudo commands (to be filled)."""

COMMANDS = []
