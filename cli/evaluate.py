"""wsk evaluate commands (to be filled)."""

COMMANDS = []
