"""The preset file against a real, migrated database: export, import all or nothing, and every bad file refused
with a line saying what is wrong."""

from __future__ import annotations

import json

import pytest

from bot.store import preset_export, presets
from bot.store.errors import InvalidImport, PresetExists, PresetLimit, PresetNotFound
from tests.bot.store.test_presets import ALICE, BOB, _save


async def test_export_import_round_trip(any_sessions):
    """Exported presets (with the default mark) import into another account unchanged."""
    await _save(any_sessions, ALICE, "Portrait", {"width": 512, "height": 768, "prompt_prefix": "photo of"})
    await _save(any_sessions, ALICE, "anime", {"sampler": "Euler a", "negative_prompt": "lowres"})
    async with any_sessions.begin() as s:
        await presets.set_default(s, ALICE, "anime")
        text = await preset_export.export_json(s, ALICE)
    doc = json.loads(text)
    assert doc["format"] == "sdbot-presets" and [p["name"] for p in doc["presets"]] == ["anime", "Portrait"]
    async with any_sessions.begin() as s:
        result = await preset_export.import_json(s, BOB, text)
    assert set(result.created) == {"anime", "Portrait"} and result.updated == () and result.default == "anime"
    async with any_sessions.begin() as s:
        mine = {p.name: p.options for p in await presets.list_for_user(s, ALICE)}
        theirs = {p.name: p.options for p in await presets.list_for_user(s, BOB)}
        assert mine == theirs
        assert (await presets.get_default(s, BOB)).name == "anime"


async def test_export_only_some(any_sessions):
    await _save(any_sessions, ALICE, "a", {"steps": 1})
    await _save(any_sessions, ALICE, "b", {"steps": 2})
    async with any_sessions.begin() as s:
        doc = json.loads(await preset_export.export_json(s, ALICE, only=["B"]))
        assert [p["name"] for p in doc["presets"]] == ["b"]
        with pytest.raises(PresetNotFound):
            await preset_export.export_json(s, ALICE, only=["zzz"])


async def test_import_conflicts_and_overwrite(any_sessions):
    """Existing names are refused unless overwrite; with it they are updated, and nothing is half-done."""
    await _save(any_sessions, ALICE, "keep", {"steps": 1})
    text = json.dumps(
        {
            "format": "sdbot-presets",
            "version": 1,
            "presets": [{"name": "KEEP", "options": {"steps": 9}}, {"name": "fresh", "options": {"steps": 8}}],
        }
    )
    async with any_sessions.begin() as s:
        with pytest.raises(PresetExists, match="'keep'"):
            await preset_export.import_json(s, ALICE, text)
    async with any_sessions.begin() as s:
        assert await presets.find(s, ALICE, "fresh") is None  # all or nothing
        result = await preset_export.import_json(s, ALICE, text, overwrite=True)
    assert result.created == ("fresh",) and result.updated == ("KEEP",)
    async with any_sessions.begin() as s:
        assert (await presets.get(s, ALICE, "keep")).options == {"steps": 9}


async def test_import_respects_the_limit(any_sessions):
    await _save(any_sessions, ALICE, "one", {"steps": 1}, limit=2)
    text = json.dumps(
        {
            "format": "sdbot-presets",
            "version": 1,
            "presets": [{"name": "two", "options": {"steps": 2}}, {"name": "three", "options": {"steps": 3}}],
        }
    )
    async with any_sessions.begin() as s:
        with pytest.raises(PresetLimit, match="would give you 3; the limit is 2"):
            await preset_export.import_json(s, ALICE, text, limit=2)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "not valid JSON"),
        ("[]", "not an sdbot preset export"),
        ('{"format": "sdbot-presets", "version": 2, "presets": []}', "version 2 is not supported"),
        ('{"format": "sdbot-presets", "version": 1, "presets": [1]}', "preset #1 in the file needs a 'name'"),
        (
            '{"format": "sdbot-presets", "version": 1, "presets": [{"name": "a b", "options": {}}]}',
            "preset #1 in the file: preset name 'a b' contains ' '",
        ),
        (
            '{"format": "sdbot-presets", "version": 1, "presets": [{"name": "x", "options": {"steps": -1}}]}',
            "preset 'x' in the file: invalid preset option steps",
        ),
        (
            '{"format": "sdbot-presets", "version": 1, "presets": [{"name": "x", "options": {"steps": 1}},'
            ' {"name": "X", "options": {"steps": 2}}]}',
            "two presets named 'x' and 'X'",
        ),
        (
            '{"format": "sdbot-presets", "version": 1, "presets": [{"name": "x", "default": true, "options": '
            '{"steps": 1}}, {"name": "y", "default": true, "options": {"steps": 2}}]}',
            "marks both 'x' and 'y'",
        ),
        (b"\xff\xfe", "not UTF-8"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
async def test_bad_import_files(any_sessions, text, message):
    async with any_sessions.begin() as s:
        with pytest.raises(InvalidImport) as info:
            await preset_export.import_json(s, ALICE, text)
    assert message in str(info.value)
