"""Ban durations as typed in the reject-and-ban modal and /mod ban."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import UserError
from bot.exts.moderation._duration import describe, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        (" 3 days ", timedelta(days=3)),
        ("1 hour 30 min", timedelta(hours=1, minutes=30)),
        ("FOREVER", None),
        ("permanent", None),
    ],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "5", "0m", "30s", "5y", "-1d", "1d x", "99999w"])
def test_bad_durations_say_what_is_allowed(text):
    with pytest.raises(UserError, match="a ban lasts e.g. 30m, 12h, 7d, 2w"):
        parse_duration(text)


@given(st.text(max_size=30))
def test_any_text_parses_or_raises_our_error(text):
    try:
        parse_duration(text)
    except UserError:
        pass


@given(st.integers(1, 500), st.sampled_from(["m", "h", "d", "w"]))
def test_describe_round_trips(n, unit):
    duration = parse_duration(f"{n}{unit}")
    assert parse_duration(describe(duration).removeprefix("for ").replace(" ", "")) == duration
