"""wsk export commands (to be filled)."""

COMMANDS = []
