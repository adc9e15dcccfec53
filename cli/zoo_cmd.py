"""wsk zoo_cmd commands (to be filled)."""

COMMANDS = []
