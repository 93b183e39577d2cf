"""An axis's values as A1111's X/Y/Z plot reads them: a csv list whose items may be ranges.

The text is split by `csv` with its default dialect and every field stripped, as the script's
`csv_string_to_list_strip` does: `a,"b, c"` is two values, and a quote that is not the first character of its
field is an ordinary character (`a, "b, c"` is three). Then, for a number axis, each item may be a range:

- `1-5` every whole number from 1 to 5; `1-5 (+2)` by steps of 2 (1, 3, 5); `10-1 (-3)` counts down (10, 7, 4:
  the end is exclusive past the last number, as Python's `range(10, 2, -3)`);
- `10-20 [3]` three values spread evenly from 10 to 20 (10, 15, 20), whole numbers truncated toward zero;
- for decimal axes the same forms: `5-9 (+2)` is 5.0, 7.0, 9.0 (numpy's `arange(5, 9 + 2, 2)`, so a step that does
  not divide the span can overshoot the end, as in the script) and `0.5-1.5 [5]` is 0.5, 0.75, 1.0, 1.25, 1.5.

The patterns are the script's, unescaped `.` included. Where the script would crash (a value that is not a
number, a step of zero, a fractional count), sdbot says what was wrong in one line. Sizes are checked before a
list is built, so `1-1000000000` is refused, not allocated.
"""

from __future__ import annotations

import csv
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from typing import Any

import numpy as np

from bot.errors import UserError

Value = int | float | str

_NUMBER = r"[+-]?\s*\d+"
_DECIMAL = r"[+-]?\s*\d+(?:.\d*)?"
RANGE_INT = re.compile(rf"\s*({_NUMBER})\s*-\s*({_NUMBER})(?:\s*\(([+-]\d+)\s*\))?\s*")
RANGE_FLOAT = re.compile(rf"\s*({_DECIMAL})\s*-\s*({_DECIMAL})(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*")
COUNT_INT = re.compile(rf"\s*({_NUMBER})\s*-\s*({_NUMBER})(?:\s*\[(\d+)\s*])?\s*")
COUNT_FLOAT = re.compile(rf"\s*({_DECIMAL})\s*-\s*({_DECIMAL})(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*")

FORMS = "a list (10, 20, 30), a range (10-30), a stepped range (10-30 (+10)) or a counted range (10-30 [3])"


def split_values(text: str) -> list[str]:
    """The csv fields of `text`, stripped; rows (lines, any line ending) are chained."""
    return [field.strip() for row in csv.reader(StringIO(text, newline=None)) for field in row]


def expand(label: str, kind: type, items: list[str], limit: int) -> list[Value]:
    """Every item of an axis as values of `kind` (int, float or str), ranges expanded; at most `limit` values."""
    out: list[Value] = []
    for item in items:
        try:
            out += _item(label, item, _KINDS[kind], limit - len(out)) if kind in _KINDS else [item]
        except OverflowError:
            raise UserError(f"{label}: {item.strip()!r} is out of range") from None
        except _TooMany as many:
            raise UserError(f"{label}: {many.item!r} makes {many.size} values; an axis takes at most {limit}") from None
        if len(out) > limit:
            raise UserError(f"{label}: the values make more than {limit}; an axis takes at most {limit}")
    return out


class _TooMany(Exception):
    def __init__(self, item: str, size: int) -> None:
        self.item, self.size = item.strip(), size


def _item(label: str, item: str, kind: _Kind, room: int) -> list[Value]:
    """One item: a stepped range, else a counted range, else one number (the script tries them in this order)."""
    m = kind.stepped.fullmatch(item)
    if m is not None:
        start, end = kind.number(label, m.group(1)), kind.number(label, m.group(2))
        step = kind.number(label, m.group(3)) if m.group(3) is not None else 1
        if step == 0:
            raise UserError(f"{label}: the step of {item.strip()!r} must not be 0")
        size, build = kind.span(start, end, step)
        _room(item, size, room)
        return build()
    m = kind.counted.fullmatch(item)
    if m is not None:
        start, end = kind.number(label, m.group(1)), kind.number(label, m.group(2))
        count = _count(label, item, m.group(3), room)
        return [kind.cast(x) for x in np.linspace(start=start, stop=end, num=count).tolist()]
    return [kind.number(label, item)]


def _int_span(start: int, end: int, step: int) -> tuple[int, Callable[[], list[Value]]]:
    """`range(start, end + 1, step)`: the end is included when a step lands on it."""
    steps = range(start, end + 1, step)
    return _size(steps), lambda: list(steps)


def _float_span(start: float, end: float, step: float) -> tuple[int, Callable[[], list[Value]]]:
    """numpy's `arange(start, end + step, step)`, whose floating-point end may let one more value in."""
    size = max(0, math.ceil((end + step - start) / step))
    return size, lambda: [float(x) for x in np.arange(start, end + step, step).tolist()]


def _size(steps: range) -> int:
    try:
        return len(steps)
    except OverflowError:  # more than sys.maxsize numbers
        return sys.maxsize


def _count(label: str, item: str, text: str | None, room: int) -> int:
    if text is None:
        return 1
    if not text.isdigit():
        raise UserError(f"{label}: the count in {item.strip()!r} must be a whole number, e.g. 10-20 [3]")
    count = int(text)
    _room(item, count, room)
    return count


def _room(item: str, size: int, room: int) -> None:
    if size > room:
        raise _TooMany(item, size)


def _int(label: str, text: str) -> int:
    """`int(text)` as the script converts, or one clear line."""
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{label}: {text.strip()!r} is not a whole number; write {FORMS}") from None


def _float(label: str, text: str) -> float:
    """`float(text)` as the script converts, and finite; or one clear line."""
    try:
        value = float(text)
        if math.isfinite(value):
            return value
    except ValueError:
        pass
    raise UserError(f"{label}: {text.strip()!r} is not a number; write {FORMS}")


@dataclass(frozen=True)
class _Kind:
    """How a number axis reads its items: the two range patterns, the number parser, the stepped range."""

    stepped: re.Pattern[str]
    counted: re.Pattern[str]
    number: Callable[[str, str], Any]
    span: Callable[[Any, Any, Any], tuple[int, Callable[[], list[Value]]]]
    cast: type


_KINDS = {
    int: _Kind(RANGE_INT, COUNT_INT, _int, _int_span, int),
    float: _Kind(RANGE_FLOAT, COUNT_FLOAT, _float, _float_span, float),
}
