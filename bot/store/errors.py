"""The store's user-facing errors: one base, `StoreError`, whose `str()` is a message fit to show a user.

The CLI prints it as one line and the Discord layer replies with it; services let it through unchanged. Anything
else escaping `bot.store` is a bug (or an outage) and is logged with an error id instead.
"""

from __future__ import annotations

from engine.errors import MessageError


class StoreError(MessageError):
    """A problem the user can understand (and usually fix); `str(err)` is the message to show."""


class DatabaseUnavailable(StoreError):
    """The database URL is malformed, names a missing driver or directory, or cannot be connected to."""


class DatabaseBusy(StoreError):
    """SQLite stayed locked past the busy timeout, or PostgreSQL reported a serialization failure/deadlock.

    `bot.store.db.transaction` retries the whole unit of work on this error; it reaches a user only when the
    retries run out, as "the database is busy", never as a raw driver message.
    """


class NotMigrated(StoreError):
    """The database schema is not at the migrations' head."""


class InvalidPresetName(StoreError):
    """A preset name breaks the naming rules."""


class InvalidOptions(StoreError):
    """An options dict (preset, guild defaults, job request) holds an unknown key or a bad value."""


class PresetNotFound(StoreError):
    """No preset of this user has that name."""


class PresetExists(StoreError):
    """The user already has a preset with that name (names are case-insensitive)."""


class PresetLimit(StoreError):
    """Saving would take the user past the configured number of presets."""


class InvalidImport(StoreError):
    """A preset export file or an infotext could not be imported."""


class JobNotFound(StoreError):
    """No job has that id."""


class IllegalTransition(StoreError):
    """A job status change the state machine does not allow (e.g. posting a job that never finished)."""


class InvalidGuildSetting(StoreError):
    """A guild setting got a value outside what is allowed."""


class ModerationItemNotFound(StoreError):
    """No moderation item has that id."""


class AlreadyDecided(StoreError):
    """A moderation item was already approved or rejected (e.g. by another moderator a moment earlier)."""
