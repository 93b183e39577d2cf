"""Alembic migrations for `bot.store` (async env.py, batch mode for SQLite); run them with `sdbot db upgrade`."""
