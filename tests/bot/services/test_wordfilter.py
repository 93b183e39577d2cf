"""The word filter: a table of evasions it must see through (and look-alikes it must leave alone), plus
properties over generated words and texts."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.services.wordfilter import find_words, normalize

WORDS = ["cat", "sex", "ass", "bad word", "nud*", "*porn", "kill"]

# (text, the listed words it must match); [] means it must match nothing.
CASES: list[tuple[str, list[str]]] = [
    # plain and case
    ("a cat on a mat", ["cat"]),
    ("A CAT", ["cat"]),
    ("Cat.", ["cat"]),
    ("(cat:1.3), masterpiece", ["cat"]),
    ("cat_girl", ["cat"]),
    # spacing and punctuation
    ("c a t", ["cat"]),
    ("c.a.t", ["cat"]),
    ("c-a-t", ["cat"]),
    ("c_a_t", ["cat"]),
    ("c. a. t", ["cat"]),
    ("c/a/t", ["cat"]),
    ("c'a't", ["cat"]),
    ("s*e*x", ["sex"]),
    # repeated letters
    ("caaaat", ["cat"]),
    ("kiiiill", ["kill"]),
    # leet
    ("c4t", ["cat"]),
    ("c@t", ["cat"]),
    ("$ex", ["sex"]),
    ("s3x", ["sex"]),
    ("a55", ["ass"]),
    ("k1ll", ["kill"]),
    ("ki11", ["kill"]),
    # Unicode look-alikes (other scripts, compatibility forms)
    ("a \u0441at", ["cat"]),  # Cyrillic es
    ("\u0455ex", ["sex"]),  # Cyrillic dze
    ("ｃａｔ", ["cat"]),  # fullwidth
    ("𝐜𝐚𝐭", ["cat"]),  # mathematical bold
    ("ⓒⓐⓣ", ["cat"]),  # circled
    ("ᴄᴀᴛ", ["cat"]),  # small capitals
    ("c\u200bat", ["cat"]),  # zero-width space
    ("c\u00adat", ["cat"]),  # soft hyphen
    ("c\u0337a\u0337t\u0337", ["cat"]),  # combining overlay
    # accents
    ("çåt", ["cat"]),
    ("séx", ["sex"]),
    ("kïll", ["kill"]),
    # phrases and wildcards
    ("a bad word here", ["bad word"]),
    ("badword", ["bad word"]),
    ("bad-word", ["bad word"]),
    ("nudity", ["nud*"]),
    ("NUDES", ["nud*"]),
    ("softporn", ["*porn"]),
    # word boundaries: no match inside other words
    ("concatenate", []),
    ("scat", []),
    ("cathedral", []),
    ("class", []),
    ("bassoon", []),
    ("sussex", []),
    ("skill", []),
    ("pornography", []),
    ("denude", []),
    ("alice's ex", []),
    ("is it", []),
    ("ca t", []),
    # several at once, in list order
    ("kill the cat", ["cat", "kill"]),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[repr(t)[1:-1][:30] for t, _ in CASES])
def test_evasion_table(text, expected):
    assert find_words(text, WORDS) == expected


def test_the_table_is_large():
    assert len(CASES) >= 30


def test_listed_words_are_normalized_too():
    """A word listed with accents or capitals matches its plain spelling, and the listed form is reported."""
    assert find_words("a cafe", ["Café"]) == ["Café"]
    assert find_words("anything", []) == []
    assert find_words("", WORDS) == []
    assert find_words("a cat", ["", "  ", "***"]) == []


words = st.text(alphabet=string.ascii_lowercase, min_size=3, max_size=10)
filler = st.lists(st.text(alphabet=string.ascii_lowercase + " ,.", max_size=12), max_size=4).map(" ".join)


@given(st.text(max_size=200))
def test_never_raises_and_normalizes_to_lowercase_ascii(text):
    out = normalize(text)
    assert out.isascii() and out == out.lower()
    assert normalize(out) == out
    find_words(text, WORDS)


@given(words, filler, filler)
def test_a_word_among_others_is_found(word, before, after):
    assert find_words(f"{before} {word} {after}", [word]) == [word]


@given(words, st.sampled_from([" ", ".", "-", "_", ". ", " * "]), st.booleans())
def test_separating_every_letter_or_shouting_still_matches(word, sep, upper):
    text = sep.join(word)
    assert find_words(text.upper() if upper else text, [word]) == [word]


@given(
    words,
    st.text(alphabet="bdfhjmqvwxyz", min_size=1, max_size=3),
    st.text(alphabet="bdfhjmqvwxyz", min_size=1, max_size=3),
)
def test_no_match_inside_a_longer_word(word, prefix, suffix):
    # Letters that are no leet stand-ins, and not the word's own first/last letter (which may repeat).
    prefix = prefix.replace(word[0], "")
    suffix = suffix.replace(word[-1], "")
    if prefix:
        assert find_words(f"{prefix}{word}", [word]) == []
    if suffix:
        assert find_words(f"{word}{suffix}", [word]) == []


LOOKALIKES = {
    "a": "\u0430",
    "c": "\u0441",
    "e": "\u0435",
    "o": "\u043e",
    "p": "\u0440",
    "x": "\u0445",
    "y": "\u0443",
    "i": "\u0456",
    "s": "\u0455",
}


@given(words, st.data())
def test_cyrillic_lookalikes_and_accents_still_match(word, data):
    swapped = "".join(LOOKALIKES.get(c, c) if data.draw(st.booleans()) else c for c in word)
    assert find_words(swapped, [word]) == [word]
    accented = "".join(c + "\u0301" for c in word)  # combining acute on every letter
    assert find_words(accented, [word]) == [word]
