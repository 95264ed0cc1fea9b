"""The `bmcell` command line: one module per command, assembled in main.py."""
