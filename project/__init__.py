"""Repository-wide facts every layer may use: where things are (paths.py)
and how every command line looks (cli.py). Standard library only."""
