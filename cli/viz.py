"""wsk viz commands (to be filled)."""

COMMANDS = []
