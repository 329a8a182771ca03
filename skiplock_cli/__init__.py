"""`skiplock`: the command line for a skiplock scheduler's HTTP API."""
