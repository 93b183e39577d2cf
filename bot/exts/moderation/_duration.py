"""Ban durations as moderators type them: `30m`, `12h`, `7d`, `2w`, `1d12h`, or `forever`."""

from __future__ import annotations

import re
from datetime import timedelta

from bot.errors import UserError

FOREVER = ("forever", "permanent", "permanently", "perm", "never")
MIN = timedelta(minutes=1)
MAX = timedelta(days=3650)
_UNITS = {
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
_PART = re.compile(r"\s*([0-9]{1,6})\s*([a-z]+)\s*")
HELP = "a ban lasts e.g. 30m, 12h, 7d, 2w (or 1d12h), from 1 minute to 10 years, or forever"


def parse_duration(text: str) -> timedelta | None:
    """The duration typed, or None for a ban without end; `UserError` saying what is allowed otherwise."""
    value = (text or "").strip().lower()
    if value in FOREVER:
        return None
    pos, seconds = 0, 0
    while pos < len(value):
        match = _PART.match(value, pos)
        if match is None or match.group(2) not in _UNITS:
            raise UserError(f"{HELP}; got {text[:40]!r}")
        seconds += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise UserError(f"{HELP}; got {text[:40]!r}")
    duration = timedelta(seconds=seconds)
    if not MIN <= duration <= MAX:
        raise UserError(f"{HELP}; got {text[:40]!r}")
    return duration


def describe(duration: timedelta | None) -> str:
    if duration is None:
        return "for good"
    seconds = int(duration.total_seconds())
    for name, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"for {n} {name}{'s' if n != 1 else ''}"
    return f"for {seconds} seconds"  # pragma: no cover - whole minutes always divide
