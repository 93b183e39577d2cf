"""Migration scripts, oldest first: `0001_initial.py`, ... (a package only so that it is installed)."""
