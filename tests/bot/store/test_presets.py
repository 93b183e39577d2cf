"""Preset operations against a real, migrated database: save, get, list, rename, delete, defaults, limits."""

from __future__ import annotations

import pytest

from bot.store import presets
from bot.store.errors import InvalidOptions, InvalidPresetName, PresetExists, PresetLimit, PresetNotFound
from engine.config import Limits

ALICE, BOB = 111, 222


async def _save(sessions, user, name, options, **kw):
    async with sessions.begin() as s:
        return await presets.save(s, user, name, options, **kw)


async def test_save_creates_then_updates(any_sessions):
    """save() says whether it created or updated; options are replaced, not merged."""
    first = await _save(any_sessions, ALICE, "Portrait", {"steps": 30, "cfg_scale": 5})
    assert first.created and first.preset.options == {"steps": 30, "cfg_scale": 5.0}
    second = await _save(any_sessions, ALICE, "portrait", {"width": 512, "height": 768})
    assert not second.created and second.preset.id == first.preset.id
    async with any_sessions.begin() as s:
        got = await presets.get(s, ALICE, "PORTRAIT")
    assert got.options == {"width": 512, "height": 768}
    assert got.name == "portrait"  # the spelling last saved


async def test_names_are_per_user(any_sessions):
    """Two users can each have a preset with the same name."""
    await _save(any_sessions, ALICE, "anime", {"steps": 20})
    await _save(any_sessions, BOB, "anime", {"steps": 40})
    async with any_sessions.begin() as s:
        assert (await presets.get(s, ALICE, "anime")).options["steps"] == 20
        assert (await presets.get(s, BOB, "anime")).options["steps"] == 40


async def test_get_missing_is_a_clear_error(any_sessions):
    async with any_sessions.begin() as s:
        with pytest.raises(PresetNotFound, match="you have no preset named 'nope'"):
            await presets.get(s, ALICE, "nope")
        assert await presets.find(s, ALICE, "nope") is None


async def test_list_and_autocomplete_names(any_sessions):
    """Listing is by name; autocomplete matches a prefix case-insensitively, '_' and '%' taken literally."""
    for name in ("zeta", "Alpha", "al_x", "alpha2", "alxy"):
        await _save(any_sessions, ALICE, name, {"steps": 10})
    async with any_sessions.begin() as s:
        assert [p.name for p in await presets.list_for_user(s, ALICE)] == ["al_x", "Alpha", "alpha2", "alxy", "zeta"]
        assert await presets.names(s, ALICE, "AL") == ["al_x", "Alpha", "alpha2", "alxy"]
        assert await presets.names(s, ALICE, "al_") == ["al_x"]
        assert await presets.names(s, ALICE, "%") == []
        assert await presets.names(s, ALICE, "", limit=2) == ["al_x", "Alpha"]
        assert await presets.names(s, BOB) == []
        assert await presets.count(s, ALICE) == 5


async def test_rename(any_sessions):
    await _save(any_sessions, ALICE, "old", {"steps": 12})
    await _save(any_sessions, ALICE, "taken", {"steps": 13})
    async with any_sessions.begin() as s:
        renamed = await presets.rename(s, ALICE, "OLD", "new-name")
        assert renamed.name == "new-name"
        assert (await presets.get(s, ALICE, "new-name")).options == {"steps": 12}
        assert await presets.find(s, ALICE, "old") is None
        again = await presets.rename(s, ALICE, "new-name", "NEW-NAME")  # a change of case only
        assert again.name == "NEW-NAME"
    async with any_sessions.begin() as s:
        with pytest.raises(PresetExists, match="you already have a preset named 'taken'"):
            await presets.rename(s, ALICE, "new-name", "TAKEN")
    async with any_sessions.begin() as s:
        with pytest.raises(PresetNotFound):
            await presets.rename(s, ALICE, "ghost", "whatever")


async def test_delete(any_sessions):
    await _save(any_sessions, ALICE, "gone", {"steps": 12})
    async with any_sessions.begin() as s:
        await presets.delete(s, ALICE, "GONE")
    async with any_sessions.begin() as s:
        assert await presets.find(s, ALICE, "gone") is None
        with pytest.raises(PresetNotFound):
            await presets.delete(s, ALICE, "gone")


async def test_default_preset(any_sessions):
    """One default per user: setting another replaces it, clearing or deleting the preset removes it."""
    await _save(any_sessions, ALICE, "a", {"steps": 1})
    await _save(any_sessions, ALICE, "b", {"steps": 2})
    async with any_sessions.begin() as s:
        assert await presets.get_default(s, ALICE) is None
        await presets.set_default(s, ALICE, "A")
        assert (await presets.get_default(s, ALICE)).name == "a"
        await presets.set_default(s, ALICE, "b")
        assert (await presets.get_default(s, ALICE)).name == "b"
        assert await presets.get_default(s, BOB) is None
    async with any_sessions.begin() as s:
        assert await presets.clear_default(s, ALICE) is True
        assert await presets.clear_default(s, ALICE) is False
        assert await presets.get_default(s, ALICE) is None
        await presets.set_default(s, ALICE, "a")
        await presets.delete(s, ALICE, "a")
    async with any_sessions.begin() as s:
        assert await presets.get_default(s, ALICE) is None
        with pytest.raises(PresetNotFound):
            await presets.set_default(s, ALICE, "missing")


async def test_limit_is_a_clear_error(any_sessions):
    """At the limit a new name is refused, but saving over an existing preset still works."""
    for i in range(3):
        await _save(any_sessions, ALICE, f"p{i}", {"steps": 10 + i}, limit=3)
    with pytest.raises(PresetLimit, match="you already have 3 presets, the limit is 3"):
        await _save(any_sessions, ALICE, "p3", {"steps": 9}, limit=3)
    updated = await _save(any_sessions, ALICE, "P0", {"steps": 50}, limit=3)
    assert not updated.created
    assert (await _save(any_sessions, BOB, "p3", {"steps": 9}, limit=3)).created


@pytest.mark.parametrize(
    "options, message",
    [
        ({"steps": 0}, "invalid preset option steps: steps must be from 1 to 150"),
        ({"steps": "20"}, "preset option steps must be a whole number"),
        ({"steps": True}, "preset option steps must be a whole number"),
        ({"cfg_scale": 99}, "invalid preset option cfg_scale: CFG scale must be from 1 to 30"),
        ({"width": 513}, "invalid preset option width: width must be a multiple of 8"),
        ({"width": 2048, "height": 2048}, "invalid preset option width/height: size 2048x2048"),
        ({"sampler": "DPM fast"}, "invalid preset option sampler"),
        ({"schedule": "Sideways"}, "invalid preset option sampler: unknown schedule type"),
        ({"vae": ""}, "invalid preset option vae"),
        ({"prompt_prefix": 3}, "preset option prompt_prefix must be text"),
        ({"prompt_prefix": "x" * 5000}, "preset option prompt_prefix is 5000 characters long"),
        ({"tiling": 2}, "unknown preset option 'tiling'; allowed: prompt, "),
        ({}, "a preset needs at least one option"),
        ({"steps": None}, "a preset needs at least one option"),
    ],
)
async def test_invalid_options_name_the_option(any_sessions, options, message):
    with pytest.raises(InvalidOptions) as info:
        await _save(any_sessions, ALICE, "bad", options)
    assert message in str(info.value)


async def test_options_are_normalized(any_sessions):
    """Combined sampler names are split; a bare sampler keeps no schedule; ints stay ints, CFG becomes float."""
    saved = await _save(any_sessions, ALICE, "n", {"sampler": "dpm++ 2m karras", "cfg_scale": 7, "seed": 5})
    assert saved.preset.options == {"sampler": "DPM++ 2M", "schedule": "Karras", "cfg_scale": 7.0, "seed": 5}
    bare = await _save(any_sessions, ALICE, "m", {"sampler": "euler a"})
    assert bare.preset.options == {"sampler": "Euler a"}


async def test_configured_limits_apply(any_sessions):
    """Presets are checked against the configured engine limits, not only the defaults."""
    with pytest.raises(InvalidOptions, match="steps must be from 1 to 40"):
        await _save(any_sessions, ALICE, "x", {"steps": 41}, limits=Limits(max_steps=40))
    assert (await _save(any_sessions, ALICE, "y", {"steps": 300}, limits=Limits(max_steps=500))).created


async def test_invalid_names_are_refused(any_sessions):
    with pytest.raises(InvalidPresetName, match="contains ' '"):
        await _save(any_sessions, ALICE, "two words", {"steps": 3})
