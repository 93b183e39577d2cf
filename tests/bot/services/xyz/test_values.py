"""Axis values: the script's csv split and range forms (tables of its own examples, and hypothesis properties
against the rules as the script states them: Python's `range`, numpy's `arange` and `linspace`)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import UserError
from bot.services.xyz.values import expand, split_values

LIMIT = 1000


def ints(text: str) -> list:
    return expand("Steps", int, split_values(text), LIMIT)


def floats(text: str) -> list:
    return expand("CFG Scale", float, split_values(text), LIMIT)


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("Euler, DPM++ 2M Karras", ["Euler", "DPM++ 2M Karras"]),
        ('a,"b, c"', ["a", "b, c"]),
        ('a, "b, c"', ["a", '"b', 'c"']),  # csv's default dialect: a quote after a space is an ordinary character
        ("a\nb, c", ["a", "b", "c"]),
        ("  spaced  ,x ", ["spaced", "x"]),
        ("", []),
        ("a,,b", ["a", "", "b"]),
    ],
)
def test_split_values_as_csv(text, values):
    assert split_values(text) == values


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("10,20,30", [10, 20, 30]),
        ("1-5", [1, 2, 3, 4, 5]),
        ("1-5 (+2)", [1, 3, 5]),
        ("1-6 (+2)", [1, 3, 5]),
        ("10-1 (-3)", [10, 7, 4]),  # the end is exclusive past b: range(10, 2, -3)
        ("5-1", []),
        ("10-20 [3]", [10, 15, 20]),
        ("1-10 [4]", [1, 4, 7, 10]),
        ("1-2 [4]", [1, 1, 1, 2]),  # linspace truncated toward zero
        ("-5--1", [-5, -4, -3, -2, -1]),
        ("1-3, 7, 9-10", [1, 2, 3, 7, 9, 10]),
        (" 2 - 4 (+1 ) ", [2, 3, 4]),
        ("2-4 ( +1)", None),  # the script allows no space after "("
        ("3-9 [0]", []),
        ("3-9 []", None),  # not a range form: "3-9 []" is then not a number
    ],
)
def test_int_forms(text, values):
    if values is None:
        with pytest.raises(UserError, match="is not a whole number"):
            ints(text)
    else:
        assert ints(text) == values


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("5-9 (+2)", [5.0, 7.0, 9.0]),
        ("0.5-1.5 [5]", [0.5, 0.75, 1.0, 1.25, 1.5]),
        ("0.5-1.5", [0.5, 1.5]),
        ("7", [7.0]),
        ("4.5, 6", [4.5, 6.0]),
        ("1-2 (+0.5)", [1.0, 1.5, 2.0]),
        ("1-2 (+0.1)", np.arange(1.0, 2.1, 0.1).tolist()),  # 12 values, the last 2.1000000000000005, as A1111
        ("2-1 (-0.5)", [2.0, 1.5, 1.0]),
    ],
)
def test_float_forms(text, values):
    assert floats(text) == values


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        (int, "abc", "Steps: 'abc' is not a whole number; write a list (10, 20, 30), a range"),
        (int, "1.5", "'1.5' is not a whole number"),
        (int, "+ 5-7", "'+ 5' is not a whole number"),
        (int, "1-5 (+0)", "the step of '1-5 (+0)' must not be 0"),
        (int, "1-100000000000", "makes 100000000000 values; an axis takes at most 1000"),
        (int, "1-5 [100000]", "makes 100000 values"),
        (int, "0-" + "9" * 400, "makes"),
        (float, "0-1 [2.5]", "the count in '0-1 [2.5]' must be a whole number"),
        (float, "nan", "'nan' is not a number"),
        (float, "inf", "'inf' is not a number"),
        (float, "1x5-2", "'1x5' is not a number"),  # the script's unescaped `.` matches any character
        (float, "0-1 (+0.0)", "must not be 0"),
        (float, "0-1000000 (+0.001)", "an axis takes at most 1000"),
    ],
)
def test_bad_values_say_what_is_wrong(kind, text, message):
    with pytest.raises(UserError) as err:
        expand("Steps" if kind is int else "CFG Scale", kind, split_values(text), LIMIT)
    assert message in str(err.value)


def test_the_limit_counts_every_item():
    with pytest.raises(UserError, match="'4-6' makes 3 values; an axis takes at most 5"):
        expand("Steps", int, split_values("1-3, 4-6"), 5)
    with pytest.raises(UserError, match="the values make more than 5; an axis takes at most 5"):
        expand("Steps", int, split_values("1-5, 6"), 5)
    assert expand("Steps", int, split_values("1-3, 4-5"), 5) == [1, 2, 3, 4, 5]


def test_strings_stay_as_typed():
    assert expand("Sampler", str, split_values("Euler a, 1-5"), LIMIT) == ["Euler a", "1-5"]


spaces = st.sampled_from(["", " ", "  "])
small = st.integers(-50, 50)


@given(a=small, b=small, step=st.integers(-9, 9).filter(bool), sp=spaces, stepped=st.booleans())
def test_int_range_is_pythons_range(a, b, step, sp, stepped):
    text = f"{sp}{a}{sp}-{sp}{b}{sp}" + (f"({step:+d}){sp}" if stepped else "")
    assert ints(text) == list(range(a, b + 1, step if stepped else 1))


@given(a=small, b=small, count=st.integers(0, 40), sp=spaces)
def test_int_count_is_truncated_linspace(a, b, count, sp):
    text = f"{a}{sp}-{sp}{b}{sp}[{count}]"
    assert ints(text) == [int(x) for x in np.linspace(a, b, num=count).tolist()]


decimals = st.decimals(-100, 100, places=2, allow_nan=False, allow_infinity=False)


@given(a=decimals, b=decimals, count=st.integers(0, 40))
def test_float_count_is_linspace(a, b, count):
    assert floats(f"{a}-{b} [{count}]") == np.linspace(float(a), float(b), num=count).tolist()


@given(a=decimals, b=decimals, step=st.decimals(-5, 5, places=2).filter(lambda d: d != 0 and abs(d) >= 0.01))
def test_float_step_is_arange(a, b, step):
    text = f"{a}-{b} ({step:+})"
    expected = np.arange(float(a), float(b) + float(step), float(step)).tolist()
    if len(expected) > LIMIT:
        with pytest.raises(UserError):
            floats(text)
    else:
        assert floats(text) == expected


@given(values=st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=8))
def test_a_plain_list_is_its_numbers(values):
    assert ints(", ".join(str(v) for v in values)) == values


@given(text=st.text(max_size=40))
def test_any_text_expands_or_says_why(text):
    for kind in (int, float, str):
        try:
            out = expand("Axis", kind, split_values(text), LIMIT)
        except UserError:
            continue
        assert all(isinstance(v, kind) for v in out)
