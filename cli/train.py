"""wsk train commands (to be filled)."""

COMMANDS = []
