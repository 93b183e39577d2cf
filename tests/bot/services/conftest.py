"""The services run on the store tests' databases: a migrated SQLite file, and `any_*` also a real PostgreSQL."""

from tests.bot.store.conftest import (  # noqa: F401 - fixtures
    any_engine,
    any_sessions,
    db_url,
    engine,
    migrated_template,
    sessions,
)
