"""Dynamic prompts: the extension's draws per seed, its syntax, wildcard files, combinatorial mode, the infotext
keys, and one-line errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from dynamicprompts.generators import RandomPromptGenerator
from dynamicprompts.wildcards import WildcardManager
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import EngineError
from engine.render.dynamic_prompts import DynamicPrompts, Resolved, has_syntax, template_params


@pytest.fixture
def wildcards(tmp_path: Path) -> Path:
    root = tmp_path / "wildcards"
    (root / "people").mkdir(parents=True)
    (root / "colors.txt").write_text("red\nblue\n# a comment\n\n  green  \nred\n", encoding="utf-8")
    (root / "people" / "jobs.txt").write_text("painter\nbaker\n", encoding="utf-8")
    (root / "nested.txt").write_text("{tiny|huge} __colors__\n", encoding="utf-8")
    (root / "loop.txt").write_text("__loop__\n", encoding="utf-8")
    return root


NONE = DynamicPrompts(None)


def one(template: str, seed: int, dp: DynamicPrompts = NONE) -> str:
    return dp.for_seeds(template, "", [seed])[0].prompt


def test_draws_are_the_extensions(wildcards):
    """The same call the extension makes: a generator seeded with the job's seed, one seed per image."""
    template = "a {red|green|blue} {cat|dog|bird} by a __people/jobs__, {2$$x|y|z}"
    seeds = [1000 + i for i in range(6)]
    extension = RandomPromptGenerator(WildcardManager(wildcards), seed=seeds[0]).generate(template, 6, seeds=seeds)
    assert [r.prompt for r in DynamicPrompts(wildcards).for_seeds(template, "", seeds)] == extension


templates = st.lists(
    st.sampled_from(["a", "cat", "{x|y|z}", "{2$$p|q|r|s}", "{0.2::u|3::v}", "{1-3$$ and $$k|l|m}", ", "]),
    min_size=1,
    max_size=6,
).map(" ".join)


@settings(deadline=None, max_examples=40)  # the library's pyparsing grammar takes tens of ms per prompt
@given(template=templates, seeds=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=5))
def test_an_image_s_prompt_depends_only_on_its_seed(template, seeds):
    batch = NONE.for_seeds(template, template, seeds)
    assert batch == [NONE.for_seeds(template, template, [seed])[0] for seed in seeds]
    assert all(not has_syntax(r.prompt) for r in batch)


def test_variants_and_counts():
    for seed in range(30):
        assert one("{a|b|c}", seed) in {"a", "b", "c"}
        picked = one("{2$$a|b|c}", seed).split(",")
        assert len(picked) == 2 and len(set(picked)) == 2 and set(picked) <= {"a", "b", "c"}
        assert 1 <= len(one("{1-3$$ and $$a|b|c}", seed).split(" and ")) <= 3
    assert {one("{a|b|c}", seed) for seed in range(30)} == {"a", "b", "c"}


def test_weights():
    draws = Counter(one("{0.05::rare|10::common}", seed) for seed in range(200))
    assert draws["common"] > 180 and draws["rare"] + draws["common"] == 200
    assert {one("{0::never|1::always}", seed) for seed in range(50)} == {"always"}


def test_wildcards_from_files(wildcards):
    dp = DynamicPrompts(wildcards)
    drawn = {one("__colors__", seed, dp) for seed in range(60)}
    assert drawn == {"red", "blue", "green"}  # stripped, comments and blank lines skipped, de-duplicated
    assert {one("__people/jobs__", seed, dp) for seed in range(30)} == {"painter", "baker"}
    assert {one("__jobs__", seed, dp) for seed in range(30)} == {"painter", "baker"}  # the library's ** fallback
    nested = one("__nested__", 3, dp)
    assert nested.split()[0] in {"tiny", "huge"} and nested.split()[1] in {"red", "blue", "green"}
    assert dp.wildcard_names() == ["colors", "loop", "nested", "people/jobs"]


def test_a_missing_wildcard_is_an_error(wildcards):
    with pytest.raises(EngineError, match=r"^no wildcard named __animals__: put the values in wildcards/animals.txt"):
        DynamicPrompts(wildcards).for_seeds("a __animals__", "", [1])
    with pytest.raises(EngineError, match="no wildcard named __colors__"):
        NONE.for_seeds("a __colors__", "", [1])  # no wildcards folder at all
    assert NONE.wildcard_names() == []


def test_a_wildcard_that_refers_to_itself_is_an_error(wildcards):
    with pytest.raises(EngineError, match="refers to itself"):
        DynamicPrompts(wildcards).for_seeds("__loop__", "", [1])


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("a {x|y} $ b", "the dynamic prompt syntax is broken at character 9 of 'a {x|y} $ b'"),
        ("{x|y} {a|b", "broken at character 7"),
    ],
)
def test_broken_syntax_is_one_line(template, message):
    with pytest.raises(EngineError) as err:
        NONE.for_seeds(template, "", [1])
    assert message in str(err.value) and "\n" not in str(err.value)


plain = st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=60).filter(lambda t: "__" not in t)


@settings(deadline=None)
@given(text=plain, seed=st.integers(0, 2**32 - 1))
def test_a_prompt_without_the_syntax_is_untouched(text, seed):
    assert NONE.for_seeds(text, text, [seed, seed + 1]) == [Resolved(text, text)] * 2


@pytest.mark.parametrize(
    ("text", "syntax"),
    [
        ("a cat", False),
        ("(masterpiece:1.2), [a|b], <lora:x:1>, #tag, $5", False),
        ("snake_case_name", False),
        ("a { b", False),
        ("{a|b}", True),
        ("{a}", True),
        ("a __colors__", True),
        ("${x=a} ${x}", True),
    ],
)
def test_has_syntax(text, syntax):
    assert has_syntax(text) is syntax


def test_combinatorial_lists_the_combinations_in_order(wildcards):
    dp = DynamicPrompts(wildcards)
    assert [r.prompt for r in dp.combinations("a {x|y} __colors__", "", 100)] == [
        "a x blue",
        "a x green",
        "a x red",
        "a y blue",
        "a y green",
        "a y red",
    ]
    assert dp.combinations("plain", "", 5) == [Resolved("plain", "")]


def test_combinatorial_takes_the_first_count_as_the_extensions_max_generations():
    assert [r.prompt for r in NONE.combinations("{a|b|c} {d|e}", "", 4)] == ["a d", "a e", "b d", "b e"]
    # the negative prompt's combinations are repeated along the positive ones, as the extension's
    # repeat_iterable_to_length does (not crossed with them)
    assert NONE.combinations("{a|b|c}", "{m|n}", 3) == [Resolved("a", "m"), Resolved("b", "n"), Resolved("c", "m")]


@pytest.mark.parametrize(
    ("prompt", "negative", "params"),
    [
        ("a {x|y}", "blurry", {"Template": "a {x|y}", "Negative Template": "blurry"}),
        ("a cat", "{ugly|bad}", {"Template": "a cat", "Negative Template": "{ugly|bad}"}),
        ("a {x|y}", "", {"Template": "a {x|y}"}),
        ("a cat", "blurry", {}),
    ],
)
def test_template_params(prompt, negative, params):
    assert template_params(prompt, negative) == params
