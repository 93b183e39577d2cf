"""The engine's user-facing errors: `EngineError` and the base every layer's user-facing error shares.

Every invalid value, missing file or refused format raises `EngineError` with a message that can be shown
to a user as it is: it says what was wrong and what is allowed. Anything else escaping the engine is a bug.
"""


class MessageError(Exception):
    """An error whose `str()` is a message fit to show a user as it is.

    The base of each layer's user-facing error (`EngineError` here, `bot.errors.UserError`,
    `bot.store.errors.StoreError`), which stay distinct types so each layer catches only its own.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class EngineError(MessageError):
    """A problem the user can fix; `str(err)` is the message to show."""


class JobCancelled(EngineError):
    """The job was cancelled (by its owner, a moderator, a timeout or shutdown)."""


def internal_message(exc: BaseException) -> str:
    """What a user reads when a bug (not an `EngineError`) ended their job: the kind and the first line."""
    detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    kind = type(exc).__name__
    return f"the image could not be made because of an internal error ({kind}{': ' + detail if detail else ''})"
