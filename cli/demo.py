"""wsk demo commands (to be filled)."""

COMMANDS = []
