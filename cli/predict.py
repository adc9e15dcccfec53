"""wsk predict commands (to be filled)."""

COMMANDS = []
