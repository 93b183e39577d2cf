"""engine.infotext_parser: A1111's parameter-line rules (spec §3), quirks included, in linear time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import EngineError
from engine.infotext_parser import _RE_PARAM, Infotext, _find_pairs, parse_infotext, to_dict
from tests.engine.test_infotext import _ANY_CHAR, _SYNTAX_CHARS, OLD_FORM, REAL, REAL_PARAMS

PARSE_CASES = [
    pytest.param(
        REAL,
        Infotext(
            "masterpiece, best quality, 1girl,\n(detailed eyes:1.2), <lora:add_detail:0.5>",
            "(worst quality, low quality:1.4), EasyNegative\nbad hands",
            REAL_PARAMS,
        ),
        id="real-a1111",
    ),
    pytest.param(
        OLD_FORM,
        Infotext(
            "a photo of a cat",
            None,
            {
                "Steps": "20",
                "Sampler": "DPM++ 2M Karras",
                "CFG scale": "7.5",
                "Seed": "42",
                "Size": "512x512",
                "Model hash": "45dee52b",
            },
        ),
        id="old-sampler-form",
    ),
    pytest.param("just a prompt, with: colons", Infotext("just a prompt, with: colons", None, {}), id="no-params"),
    # Two pairs are not enough for A1111: the line stays prompt text.
    pytest.param("a cat\nSteps: 20, Seed: 1", Infotext("a cat\nSteps: 20, Seed: 1", None, {}), id="two-pairs"),
    pytest.param(
        "Steps: 1, Seed: 2, CFG scale: 3",
        Infotext("", None, {"Steps": "1", "Seed": "2", "CFG scale": "3"}),
        id="params-only",
    ),
    pytest.param("a\nNegative prompt: b", Infotext("a", "b", {}), id="negative-no-params"),
    pytest.param("", Infotext("", None, {}), id="empty"),
    pytest.param("\n\n  \n", Infotext("", None, {}), id="blank"),
    # A1111 strips every line and the whole text.
    pytest.param(
        "  a  \n\t b \nSteps: 1, Seed: 2, CFG scale: 3\n\n",
        Infotext("a\nb", None, {"Steps": "1", "Seed": "2", "CFG scale": "3"}),
        id="stripped-lines",
    ),
    pytest.param(
        "a\r\nNegative prompt: b\r\nSteps: 1, Seed: 2, CFG scale: 3\r\n",
        Infotext("a", "b", {"Steps": "1", "Seed": "2", "CFG scale": "3"}),
        id="crlf",
    ),
    # A quoted value that is not valid JSON is kept as written.
    pytest.param(
        'p\nSteps: 1, Seed: 2, CFG scale: 3, Note: "bad \\q"',
        Infotext("p", None, {"Steps": "1", "Seed": "2", "CFG scale": "3", "Note": '"bad \\q"'}),
        id="bad-json-kept",
    ),
    pytest.param(
        'p\nSteps: 1, Seed: 2, Text: "猫, \\"😀\\"\\n"',
        Infotext("p", None, {"Steps": "1", "Seed": "2", "Text": '猫, "😀"\n'}),
        id="json-escapes",
    ),
    pytest.param(
        "Negative prompt:\nSteps: 1, Seed: 2, CFG scale: 3",
        Infotext("", "", {"Steps": "1", "Seed": "2", "CFG scale": "3"}),
        id="empty-negative",
    ),
    # A later duplicate key wins, as in A1111's dict.
    pytest.param("p\nSteps: 1, Seed: 2, Steps: 3", Infotext("p", None, {"Steps": "3", "Seed": "2"}), id="duplicate"),
    pytest.param(
        "p\nSteps: 1, Seed: 2, Empty: , Tail:",
        Infotext("p", None, {"Steps": "1", "Seed": "2", "Empty": "", "Tail": ""}),
        id="empty-values",
    ),
    pytest.param(
        "猫と😀\nNegative prompt: 低品質\nSteps: 20, Sampler: Euler a, CFG scale: 7",
        Infotext("猫と😀", "低品質", {"Steps": "20", "Sampler": "Euler a", "CFG scale": "7"}),
        id="cjk-emoji",
    ),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES)
def test_parse_infotext(text: str, expected: Infotext) -> None:
    info = parse_infotext(text)
    assert info == expected
    assert list(info.params) == list(expected.params)  # the order written is kept


@pytest.mark.parametrize("value", [None, b"Steps: 1", 42, ["a"]])
def test_parse_rejects_non_text(value: object) -> None:
    with pytest.raises(EngineError, match="must be text"):
        parse_infotext(value)  # type: ignore[arg-type]


def test_parse_is_linear_on_hostile_lines() -> None:
    # Plain re.findall needs seconds for 20 kB of key characters without ':' (quadratic); _find_pairs does not.
    for line in ("a" * 300_000, "a " * 150_000, " " * 300_000, 'Ab: "x, ' * 40_000):
        parse_infotext("prompt\n" + line)


def test_to_dict() -> None:
    data = to_dict(parse_infotext(REAL))
    assert list(data) == ["Prompt", "Negative prompt", *REAL_PARAMS]
    assert data["Lora hashes"] == "a: 1, b: 2"
    assert to_dict(parse_infotext("just a prompt")) == {"Prompt": "just a prompt"}
    # A parameter named like the prompt cannot hide it.
    assert to_dict(Infotext("p", None, {"Prompt": "x", "Steps": "1"})) == {"Prompt": "p", "Steps": "1"}


@given(st.text(st.one_of(_SYNTAX_CHARS, _ANY_CHAR, st.sampled_from(["a", "b", " ", ":"])), max_size=60))
def test_find_pairs_is_findall(line: str) -> None:
    assert _find_pairs(line) == _RE_PARAM.findall(line)


@given(st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.text())))
def test_parse_non_text_raises_engine_error(value: object) -> None:
    with pytest.raises(EngineError):
        parse_infotext(value)  # type: ignore[arg-type]
