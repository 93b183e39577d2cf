"""Banned and flagged words: case-insensitive matching on word boundaries that survives simple evasions.

Pure functions, no I/O. A prompt and every listed word go through the same `normalize()`:

1. Unicode NFKC folds compatibility forms (fullwidth `ｃａｔ`, mathematical `𝐜𝐚𝐭`, circled `ⓒⓐⓣ`, ligatures).
2. A character from another script that Unicode's confusables data says looks like a Latin letter or digit
   becomes that letter (Cyrillic `сат` -> `cat`), via `confusable_homoglyphs` (the Unicode consortium's table).
3. `anyascii` transliterates what is left to ASCII: accents go (`çåt` -> `cat`), invisible characters (zero-width
   space, soft hyphen) and combining marks vanish, small capitals and superscripts become letters.
4. Lower case.

Then matching looks at a few views of that text, so that these still match `cat` while `concatenate`, `scat`
and `cathedral` do not:

* letters repeated (`caaat`): every letter of a word may repeat;
* punctuation between letters (`c.a.t`, `c-a-t`, `c@t` as leet): once read as a word break, once deleted;
* spaced letters (`c a t`, `c. a. t`): a word spelled with a break between every letter;
* leet digits and symbols (`c4t`, `$ex`, `h1de`): a small table of ASCII stand-ins, tried with `1`/`!` as `i`
  and as `l`. This table is ours on purpose: it is not Unicode normalisation but a handful of keyboard tricks.

A listed word may be a phrase (`bad word` also matches `badword` and `bad-word`) or carry `*` at either end as a
wildcard (`nud*` matches `nude` and `nudity`, `*porn` matches `softporn`).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from anyascii import anyascii
from confusable_homoglyphs import confusables

_LEET_I = str.maketrans(
    {
        "0": "o",
        "1": "i",
        "3": "e",
        "4": "a",
        "5": "s",
        "7": "t",
        "8": "b",
        "@": "a",
        "$": "s",
        "!": "i",
        "+": "t",
        "|": "l",
    }
)
_LEET_L = str.maketrans(
    {
        "0": "o",
        "1": "l",
        "3": "e",
        "4": "a",
        "5": "s",
        "7": "t",
        "8": "b",
        "@": "a",
        "$": "s",
        "!": "l",
        "+": "t",
        "|": "l",
    }
)
_LEET_VIEWS = (None, _LEET_I, _LEET_L)
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_PUNCT = re.compile(r"[^a-z0-9\s]+")
_SPACES = re.compile(r"\s+")
_MAX_TEXT = 20_000  # prompts are capped far below this; the cap keeps a hostile input cheap


@functools.lru_cache(maxsize=4096)
def _latin_lookalike(char: str) -> str:
    """The ASCII letter or digit Unicode's confusables data says `char` looks like, else `char` itself."""
    found = confusables.is_confusable(char, preferred_aliases=["latin"])
    for entry in found or ():
        for glyph in entry["homoglyphs"]:
            candidate = glyph["c"]
            if len(candidate) == 1 and candidate.isascii() and candidate.isalnum():
                return candidate
    return char


def normalize(text: str) -> str:
    """Lower-case ASCII that looks like `text` (see the module docstring); idempotent."""
    text = unicodedata.normalize("NFKC", text[:_MAX_TEXT])
    if not text.isascii():
        text = "".join(c if c.isascii() else _latin_lookalike(c) for c in text)
        text = anyascii(text)
    return text.lower()


def _views(normalized: str, leet: dict[int, str] | None) -> tuple[str, str]:
    """(punctuation as word breaks, punctuation deleted): both with single spaces between words."""
    text = normalized.translate(leet) if leet is not None else normalized
    broken = " " + _NOT_ALNUM.sub(" ", text).strip() + " "
    joined = " " + _SPACES.sub(" ", _PUNCT.sub("", text)).strip() + " "
    return broken, joined


@dataclass(frozen=True)
class _Entry:
    word: str  # as listed
    prefix: bool  # `*word`: may be the end of a longer word
    suffix: bool  # `word*`: may be the start of a longer word
    tokens: tuple[str, ...]  # the normalized word split into alphanumeric runs (a phrase has several)


def _entry(word: str) -> _Entry | None:
    raw = word.strip()
    prefix, suffix = raw.startswith("*"), raw.endswith("*")
    core = normalize(raw.strip("*"))
    tokens = tuple(t for t in _NOT_ALNUM.split(core) if t)
    return _Entry(word, prefix, suffix, tokens) if tokens else None


def _pattern(entry: _Entry, leet: dict[int, str] | None) -> str:
    tokens = [t.translate(leet) if leet is not None else t for t in entry.tokens]
    tokens = [t for t in (_NOT_ALNUM.sub("", t) for t in tokens) if t]
    letters = "".join(tokens)
    # Together: each letter may repeat; between the tokens of a phrase a break is optional.
    together = " ?".join("".join(re.escape(c) + "+" for c in t) for t in tokens)
    alternatives = [together]
    if len(letters) >= 2:  # spelled out: a break between every letter (`c a t`)
        alternatives.append(" ".join(re.escape(c) + "+" for c in letters))
    left = "[a-z0-9]*" if entry.prefix else ""
    right = "[a-z0-9]*" if entry.suffix else ""
    return f"(?<![a-z0-9]){left}(?:{'|'.join(alternatives)}){right}(?![a-z0-9])"


class WordMatcher:
    """A compiled word list; `find(text)` returns the listed words the text contains, in list order."""

    def __init__(self, words: Sequence[str]) -> None:
        self.entries = [e for e in (_entry(w) for w in words) if e is not None]
        self._regexes = []
        for leet in _LEET_VIEWS:
            if not self.entries:
                break
            groups = "|".join(f"(?P<w{i}>{_pattern(e, leet)})" for i, e in enumerate(self.entries))
            self._regexes.append((leet, re.compile(groups)))

    def find(self, text: str) -> list[str]:
        if not self.entries or not text:
            return []
        normalized = normalize(text)
        hits: set[int] = set()
        for leet, regex in self._regexes:
            for view in _views(normalized, leet):
                for match in regex.finditer(view):
                    if match.lastgroup is not None:  # each word is a named group, "w<its index>"
                        hits.add(int(match.lastgroup[1:]))
                if len(hits) == len(self.entries):
                    break
        return [self.entries[i].word for i in sorted(hits)]


@functools.lru_cache(maxsize=256)
def _matcher(words: tuple[str, ...]) -> WordMatcher:
    return WordMatcher(words)


def find_words(text: str, words: Iterable[str]) -> list[str]:
    """The entries of `words` that `text` contains (see the module docstring for what counts); [] for none."""
    return _matcher(tuple(words)).find(text)
