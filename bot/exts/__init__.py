"""Feature areas: each a package with `setup(bot)` in `__init__`, a thin cog and pure helpers."""
