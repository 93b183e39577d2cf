"""User-facing errors of the bot side; the CLI and Discord handlers turn them into one clear message."""

from bot.store.errors import StoreError
from engine.errors import EngineError, MessageError


class UserError(MessageError):
    """Something the user can fix; `str(err)` is the message to show."""


class ConfigError(UserError):
    """The config file is missing, unreadable or holds a bad key or value."""


# The errors a user can cause, from every layer: shown as they are, never as a traceback.
USER_ERRORS = (UserError, EngineError, StoreError)
