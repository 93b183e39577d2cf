"""User-facing errors of the bot side; the CLI and Discord handlers turn them into one clear message."""


class UserError(Exception):
    """Something the user can fix; `str(err)` is the message to show."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(UserError):
    """The config file is missing, unreadable or holds a bad key or value."""
