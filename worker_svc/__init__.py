"""Execution plane: runs `bash -c COMMAND` attempts and reports on them; no database."""
