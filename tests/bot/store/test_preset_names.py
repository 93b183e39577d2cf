"""Property tests for preset names: the rules hold for any text, and lookups ignore case."""

from __future__ import annotations

import itertools
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.store import presets
from bot.store.errors import InvalidPresetName, PresetNotFound

ALLOWED = string.ascii_letters + string.digits + "-_"
valid_names = st.text(alphabet=ALLOWED, min_size=1, max_size=32)
_users = itertools.count(10_000)


@given(st.text(max_size=60))
def test_any_text_is_a_valid_name_or_a_clear_error(text):
    """validate_name returns the stripped name when it follows the rules, else raises InvalidPresetName."""
    try:
        name = presets.validate_name(text)
    except InvalidPresetName as exc:
        assert "1-32 characters" in str(exc)
        stripped = text.strip()
        assert not (1 <= len(stripped) <= 32 and all(ch in ALLOWED for ch in stripped))
    else:
        assert name == text.strip()
        assert 1 <= len(name) <= 32 and all(ch in ALLOWED for ch in name)


@given(valid_names, st.sampled_from(["", " ", "\t", "  \n"]), st.sampled_from(["", " ", "\n"]))
def test_valid_names_survive_surrounding_whitespace(name, before, after):
    assert presets.validate_name(before + name + after) == name
    assert presets.name_key(name) == name.lower()


@given(
    valid_names,
    st.text(alphabet=st.characters(blacklist_characters=ALLOWED), min_size=1, max_size=3),
    st.integers(min_value=0, max_value=32),
)
def test_any_other_character_is_refused(name, bad, at):
    candidate = name[:at] + bad + name[at:]
    if candidate.strip() != candidate or not candidate.strip():
        return  # whitespace at the edges is trimmed, which the test above covers
    try:
        presets.validate_name(candidate)
    except InvalidPresetName:
        return
    raise AssertionError(f"{candidate!r} was accepted")


@given(st.text(alphabet=ALLOWED, min_size=33, max_size=60))
def test_long_names_are_refused(name):
    try:
        presets.validate_name(name)
    except InvalidPresetName as exc:
        assert f"is {len(name)} characters long" in str(exc)
    else:
        raise AssertionError("accepted")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=valid_names, flips=st.lists(st.booleans(), min_size=32, max_size=32))
async def test_names_are_case_insensitive_in_the_database(any_sessions, name, flips):
    """Any re-casing of a saved name finds the same preset, and saving under it updates rather than adds."""
    user = next(_users)
    variant = "".join(ch.swapcase() if flip else ch for ch, flip in zip(name, flips))
    async with any_sessions.begin() as s:
        await presets.save(s, user, name, {"steps": 10})
    async with any_sessions.begin() as s:
        assert (await presets.get(s, user, variant)).name == name
        again = await presets.save(s, user, variant, {"steps": 11})
        assert not again.created and again.preset.name == variant
        assert await presets.count(s, user) == 1
        assert await presets.names(s, user, variant[:3]) == [variant]
        await presets.delete(s, user, name.upper())
        try:
            await presets.get(s, user, name)
        except PresetNotFound:
            pass
        else:
            raise AssertionError("still there")
