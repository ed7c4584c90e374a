"""Command-line interface: thin wrappers over dinogeo's Python functions."""
