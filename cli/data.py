"""wsk data commands (to be filled)."""

COMMANDS = []
