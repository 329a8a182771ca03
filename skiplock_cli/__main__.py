"""`python -m skiplock_cli …` is the `skiplock` command."""

from skiplock_cli.main import main

main()
