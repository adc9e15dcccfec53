"""wsk proposals commands (to be filled)."""

COMMANDS = []
