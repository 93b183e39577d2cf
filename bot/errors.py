"""User-facing errors of the bot side; the CLI and Discord handlers turn them into one clear message."""

from engine.errors import MessageError


class UserError(MessageError):
    """Something the user can fix; `str(err)` is the message to show."""


class ConfigError(UserError):
    """The config file is missing, unreadable or holds a bad key or value."""
