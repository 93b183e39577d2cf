"""Reading an A1111 infotext with A1111's own rules (spec §3, `modules/infotext_utils.py`), quirks included: each
prompt line is stripped, and the last line only counts as parameters when at least 3 `Key: value` pairs are found.

`engine.infotext` is the public face: it writes infotexts, reads them from PNGs and maps them to request options.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from engine.errors import EngineError

NEGATIVE_PREFIX = "Negative prompt:"

# A1111's pattern, verbatim (spec §3). It is only ever used through `_find_pairs`, see there.
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
# From a failed start: the whitespace the pattern would skip, then the run of key characters it would scan.
_RE_SKIP = re.compile(r"\s*(\w[\w \-/]*)?")


def _find_pairs(line: str) -> list[tuple[str, str]]:
    """Exactly `_RE_PARAM.findall(line)`, in linear time.

    Why not findall itself: after a failed attempt it retries one character later, and inside a long run of key
    characters with no ':' every retry rescans to the run's end, so a 100 kB line from an uploaded PNG would take
    minutes (quadratic). Every start inside that run fails the same way (the run has no ':'), and every start in
    leading whitespace lands on the same character, so skipping them yields the same matches (the same groups and
    the same end positions; only the unused span start could differ).
    """
    pairs: list[tuple[str, str]] = []
    pos, end = 0, len(line)
    while pos < end:
        match = _RE_PARAM.match(line, pos)
        if match is not None:
            pairs.append((match.group(1), match.group(2)))
            pos = match.end()  # always > pos: a match holds at least "xx:"
            continue
        skip = _RE_SKIP.match(line, pos)
        assert skip is not None  # the pattern can match the empty string
        pos = skip.end() if skip.group(1) else skip.end() + 1
    return pairs


def _unquote(value: str) -> str:
    """A1111's `unquote`: a value in double quotes is JSON text; if it does not decode, keep it as written."""
    if len(value) < 1 or value[0] != '"' or value[-1] != '"':
        return value
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        return value
    return decoded if isinstance(decoded, str) else value


@dataclass(frozen=True)
class Infotext:
    """A parsed infotext. `negative_prompt` is None when the text has no "Negative prompt:" line.

    `params` holds the parameter line's pairs in the order written, values as (unquoted) strings: the parser
    cannot know a key's type, and callers such as `to_dict` must show exactly what the image says.
    """

    prompt: str
    negative_prompt: str | None
    params: dict[str, str] = field(hash=False)


def parse_infotext(text: str) -> Infotext:
    """Parse an infotext with A1111's rules (spec §3, `parse_generation_parameters`).

    The stripped text is split on "\\n"; the last line is the parameter line only if A1111's pattern finds at
    least 3 pairs in it. Every other line is stripped; lines before the first line starting with
    "Negative prompt:" form the prompt, that line (without the prefix) and the rest the negative prompt, each
    joined with "\\n" the way A1111 accumulates them (so leading empty lines are dropped). Quoted values are
    JSON-decoded (kept as written if that fails). A later duplicate key wins, as in A1111's dict.
    Unlike A1111, a pair with an empty value is kept as "" rather than dropped (A1111 hits an IndexError on it).
    Any text parses (garbage is a prompt-only Infotext); only non-text input raises EngineError.
    """
    if not isinstance(text, str):
        raise EngineError(f"an infotext must be text, not {type(text).__name__}")
    *lines, last = text.strip().split("\n")
    pairs = _find_pairs(last)
    if len(pairs) < 3:
        lines.append(last)
        pairs = []

    prompt, negative = "", ""
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX) :].strip()
        if in_negative:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    params: dict[str, str] = {}
    for key, value in pairs:
        params[key] = _unquote(value)
    return Infotext(prompt=prompt, negative_prompt=negative if in_negative else None, params=params)


def to_dict(info: Infotext) -> dict[str, str]:
    """The JSON object `sdbot infotext` prints: Prompt, Negative prompt (when present), then the parameters.

    Parameter keys are kept as written. A parameter literally named "Prompt" or "Negative prompt" (only in
    malformed text) is left out so it cannot hide the real prompt.
    """
    result: dict[str, str] = {"Prompt": info.prompt}
    if info.negative_prompt is not None:
        result["Negative prompt"] = info.negative_prompt
    for key, value in info.params.items():
        if key not in ("Prompt", "Negative prompt"):
            result[key] = value
    return result
