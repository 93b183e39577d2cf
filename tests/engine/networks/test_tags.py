"""The `<lora:…>` tag parser: A1111's forms in a table, and properties for any text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import EngineError
from engine.networks.tags import TAG, NetworkTag, lora_tag, network_set, parse_tags, strip_tags


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<lora:add_detail:0.6>", NetworkTag("add_detail", 0.6, 0.6)),
        ("<lora:add_detail>", NetworkTag("add_detail", 1.0, 1.0)),
        ("<lora:x:0.5:0.2>", NetworkTag("x", 0.5, 0.2)),
        ("<lora:x:0.5:0.2:8>", NetworkTag("x", 0.5, 0.2, 8)),
        ("<lora:x:te=0.3>", NetworkTag("x", 0.3, 0.3)),
        ("<lora:x:unet=0.4>", NetworkTag("x", 1.0, 0.4)),
        ("<lora:x:0.9:unet=0.4:dyn=4>", NetworkTag("x", 0.9, 0.4, 4)),
        ("<lora:x:te=0.1:0.7>", NetworkTag("x", 0.1, 0.1)),  # te= beats the positional TE; UNET defaults to TE
        ("<lyco:my hada:-0.5>", NetworkTag("my hada", -0.5, -0.5)),
        ("<LORA:x:1>", NetworkTag("x", 1.0, 1.0)),
    ],
)
def test_a1111_forms(text, expected):
    assert parse_tags(f"a cat, {text}, smiling") == [expected]
    assert strip_tags(f"a cat, {text}, smiling") == "a cat, , smiling"


@pytest.mark.parametrize(
    "text, message",
    [
        ("<lora:x:abc>", "<lora:x:abc>: the TE multiplier must be a number such as 0.8 (got 'abc')"),
        ("<lora:x:1:nan>", "the UNET multiplier must be a number"),
        ("<lora:x:1:1:big>", "DYN must be a whole number"),
        ("<lora:x:1:1:0>", "DYN must be 1 or more"),
        ("<lora:x:1:1:1:1>", "too many values"),
        ("<lora: :1>", "the tag needs a name first"),
        ("<lora:x:foo=1>", "unknown setting foo="),
        ("<hypernet:x:1>", "<hypernet:x:1>: sdbot knows the extra networks <lora:NAME:WEIGHT> and <lyco:NAME:WEIGHT>"),
    ],
)
def test_malformed_tags_are_one_clear_error(text, message):
    with pytest.raises(EngineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_tags(text)


def test_the_set_is_canonical():
    assert network_set("<lora:b:1> a <lora:A:0.5>") == network_set("a", "<lora:a:0.5><lora:B:1>")
    assert network_set("a") == ()
    assert lora_tag("add_detail", 0.8) == "<lora:add_detail:0.8>"


names = st.text(st.characters(blacklist_characters="<>:=", blacklist_categories=("Cs",)), min_size=1).filter(
    lambda s: s.strip() != ""
)
weights = st.floats(-10, 10, allow_nan=False).map(lambda w: round(w, 3))


@given(st.text())
def test_any_text_parses_or_fails_with_an_engine_error(text):
    try:
        tags = parse_tags(text)
    except EngineError:
        return
    assert len(tags) == len(TAG.findall(text))


@given(st.text(st.characters(blacklist_characters="<", blacklist_categories=("Cs",))))
def test_text_without_tags_is_untouched(text):
    assert strip_tags(text) == text and parse_tags(text) == []


@given(st.text(), names, weights, st.text())
def test_a_written_tag_reads_back_and_strips_away(before, name, weight, after):
    text = f"{before.replace('<', '')}{lora_tag(name, weight)}{after.replace('<', '')}"
    tags = parse_tags(text)
    assert tags == [NetworkTag(name.strip(), float(f"{weight:g}"), float(f"{weight:g}"))]
    assert TAG.search(strip_tags(text)) is None
