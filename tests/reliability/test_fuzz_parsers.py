"""Hypothesis fuzzing of every parser user text reaches: inline options (through to a validated request), the
A1111 prompt syntax, infotext, and preset import (infotext and JSON export files, into a real database).

The contract: any input either parses or raises our user-facing error (`UserError`, `EngineError`,
`StoreError`) with a one-line message; never an `IndexError`, `KeyError`, `TypeError`... A few hundred cases
each in CI; `--slow` loads the 10,000-example profile (tests/conftest.py) for each test here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bot.errors import UserError
from bot.option_spec import BY_FLAG
from bot.options import parse_inline
from bot.services.preset_infotext import infotext_options
from bot.store import migrate, preset_export
from bot.store import presets as preset_store
from bot.store.db import make_engine, make_sessions
from bot.store.errors import StoreError
from bot.store.options import REQUEST_FIELDS
from engine.errors import EngineError
from engine.infotext import format_infotext, parse_infotext, request_options
from engine.render.prompts import BREAK, parse_prompt_attention

SLOW = settings.default.max_examples >= 10_000  # the --slow profile is loaded before this module


def examples(ci: int, **kw) -> settings:
    """`ci` examples normally; the --slow profile's count (10,000) with --slow."""
    return settings(max_examples=settings.default.max_examples if SLOW else ci, deadline=None, **kw)


def one_line(error: BaseException) -> None:
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)


# --- strategies ------------------------------------------------------------------------------------------------

SYNTAX = st.sampled_from(
    list("()[]:\\,.-+ \n\t")
    + ["BREAK", " BREAK ", "--", "—", '"', "“", "”", "'", "x", "9" * 40, "1.5", "-2", "1e9", "nan", "inf", "\u200b"]
)
ANY = st.text(max_size=40)
TEXT = st.lists(st.one_of(SYNTAX, ANY), max_size=25).map("".join)

OPTION_NAMES = sorted(BY_FLAG) + ["bogus", "x", "SEED", "clip_skip", "Steps", "no-", "a1"]
VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "",
            "2:3",
            "16:9",
            "0:1",
            "9999:1",
            "512x768",
            "64x64",
            "65x64",
            "1x1",
            "99999x99999",
            "Euler a",
            "DPM++ 2M Karras",
            "Karras",
            "auto",
            "none",
            "tiny-sd15",
            "../../etc/passwd",
            '"quoted value"',
            "“smart”",
            "abc",
            "-1",
            "4294967296",
        ]
    ),
    ANY,
)
INLINE = st.lists(
    st.one_of(
        ANY,
        st.tuples(st.sampled_from(["--", "—", " --", "---"]), st.sampled_from(OPTION_NAMES), VALUES).map(
            lambda t: f" {t[0]}{t[1]} {t[2]}"
        ),
    ),
    max_size=8,
).map("".join)

PARAM_KEYS = [
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Seed",
    "Size",
    "Clip skip",
    "Model",
    "VAE",
    "Model hash",
    "Hires upscale",
    "Denoising strength",
    "Lora hashes",
    "Version",
]
INFOTEXT = st.one_of(
    TEXT,
    st.builds(format_infotext, ANY, ANY, st.dictionaries(st.sampled_from(PARAM_KEYS), VALUES, min_size=3, max_size=10)),
    st.builds(lambda p, n, tail: f"{p}\nNegative prompt: {n}\n{tail}", ANY, ANY, TEXT),
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY, inner, max_size=4),
    max_leaves=12,
)
OPTION_VALUES = st.one_of(JSON, VALUES, st.integers(-5, 5000), st.floats(0, 40))
GOOD_OPTIONS = st.fixed_dictionaries(
    {"steps": st.integers(1, 150)},
    optional={
        "cfg_scale": st.floats(1, 30),
        "sampler": st.sampled_from(["Euler a", "DDIM"]),
        "width": st.sampled_from([64, 512, 768]),
        "height": st.sampled_from([64, 512, 768]),
        "clip_skip": st.integers(1, 4),
        "negative_prompt": ANY,
        "prompt_prefix": ANY,
        "seed": st.integers(-1, 2**32),
    },
)
NAMES = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
GOOD_PRESET = st.fixed_dictionaries({"name": NAMES, "options": GOOD_OPTIONS}, optional={"default": st.just(False)})
PRESET = st.one_of(
    GOOD_PRESET,
    GOOD_PRESET,
    GOOD_PRESET,
    st.fixed_dictionaries({"name": NAMES, "options": GOOD_OPTIONS}, optional={"default": st.booleans()}),
    st.fixed_dictionaries(
        {
            "name": st.one_of(NAMES, ANY, JSON),
            "options": st.one_of(
                st.dictionaries(
                    st.sampled_from([*REQUEST_FIELDS, "prompt_prefix", "prompt_suffix", "bogus"]),
                    OPTION_VALUES,
                    max_size=6,
                ),
                JSON,
            ),
        },
        optional={"default": st.one_of(st.booleans(), JSON)},
    ),
)
VALID_EXPORT = st.fixed_dictionaries(
    {
        "format": st.just(preset_export.EXPORT_FORMAT),
        "version": st.just(1),
        "presets": st.lists(PRESET, max_size=4, unique_by=lambda p: str(p["name"]).lower()),
    }
).map(json.dumps)
EXPORT = st.one_of(
    VALID_EXPORT,
    VALID_EXPORT,
    st.fixed_dictionaries(
        {
            "format": st.sampled_from([preset_export.EXPORT_FORMAT] * 4 + ["other"]),
            "version": st.sampled_from([1, 1, 1, 2, "1", None]),
            "presets": st.one_of(st.lists(PRESET, max_size=5), JSON),
        }
    ).map(json.dumps),
    JSON.map(json.dumps),
    TEXT,
    st.binary(max_size=64),
)


# --- pure parsers --------------------------------------------------------------------------------------------


@examples(500)
@given(TEXT)
def test_prompt_attention_parses_any_text(text):
    runs = parse_prompt_attention(text)  # A1111's quirks kept: a BREAK inside brackets is weighted text
    assert runs and all(isinstance(t, str) and isinstance(w, float) for t, w in runs)
    assert all(t == BREAK for t, w in runs if w == -1.0)
    if not any(c in text for c in "()[]:\\") and "BREAK" not in text:
        assert runs == [(text, 1.0)]


@examples(500)
@given(INLINE)
def test_inline_options_parse_or_give_a_user_error(text):
    try:
        parsed = parse_inline(text)
    except UserError as exc:
        one_line(exc)
        return
    assert isinstance(parsed.prompt, str) and all(isinstance(p, str) for p in parsed.presets)
    for key, value in parsed.options.items():
        assert key in REQUEST_FIELDS or key in ("aspect_ratio", "preset"), key
        if isinstance(value, float):
            assert math.isfinite(value)


@examples(500)
@given(INFOTEXT)
def test_infotext_parses_any_text_and_maps_or_says_why(text):
    info = parse_infotext(text)
    assert isinstance(info.prompt, str) and all(isinstance(v, str) for v in info.params.values())
    try:
        options, unknown = request_options(info)
    except EngineError as exc:
        one_line(exc)
        return
    assert set(options) <= set(REQUEST_FIELDS) and all(isinstance(k, str) for k in unknown)


@examples(500)
@given(INFOTEXT, st.booleans())
def test_infotext_import_gives_options_or_a_store_error(text, keep_seed):
    try:
        options, unknown, dropped = infotext_options(text, keep_seed=keep_seed)
    except StoreError as exc:
        one_line(exc)
        return
    assert options and set(options) <= set(REQUEST_FIELDS) | {"prompt_prefix", "prompt_suffix"}
    assert keep_seed or "seed" not in options


# --- through the database --------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def sessions(tmp_path: Path):
    db = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}")
    await migrate.upgrade(db)
    yield make_sessions(db)
    await db.dispose()


_users = iter(range(10**6, 10**9))


@examples(150, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(EXPORT, st.booleans())
async def test_preset_import_is_all_or_nothing(sessions, text, overwrite):
    """A preset file imports completely or not at all, and says why not."""
    user = next(_users)
    async with sessions.begin() as s:
        await preset_store.save(s, user, "mine", {"steps": 12})
    try:
        async with sessions.begin() as s:
            result = await preset_export.import_json(s, user, text, overwrite=overwrite)
    except StoreError as exc:
        event(f"refused: {type(exc).__name__}")
        one_line(exc)
        async with sessions.begin() as s:
            assert [p.name for p in await preset_store.list_for_user(s, user)] == ["mine"]
        return
    event("imported")
    async with sessions.begin() as s:
        names = {p.name for p in await preset_store.list_for_user(s, user)}
    assert set(result.created) | set(result.updated) <= names


@examples(150, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(INLINE)
async def test_a_typed_prompt_becomes_a_request_or_a_user_error(sessions, text):
    """What /imagine does before queueing: inline options, presets, resolution, validation."""
    from bot.services.presets import PresetService

    user = next(_users)
    try:
        inline = parse_inline(text)
        command = await PresetService(sessions).resolve_command(
            user, None, list(inline.presets), {**inline.options, "prompt": inline.prompt or None}
        )
    except (UserError, EngineError, StoreError) as exc:
        event(f"refused: {type(exc).__name__}")
        one_line(exc)
        return
    event("a request")
    assert command.request.prompt and command.request.width % 8 == 0


@pytest.mark.skipif(not SLOW, reason="the 10,000-case count is checked in the --slow run")
def test_the_slow_run_generates_10000_cases_per_parser():
    assert settings.default.max_examples >= 10_000
