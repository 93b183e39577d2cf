"""A1111's extra-network tags: `<lora:NAME:TE[:UNET[:DYN]]>` (and `<lyco:…>`) in a prompt.

A1111 (`modules/extra_networks.py`, the Lora extension's `extra_networks_lora.py`) finds every `<kind:args>`
with the pattern `<(\\w+):([^>]+)>`, removes it from the text before encoding (the infotext keeps the prompt as
typed), splits args on `:`; an item with one `=` is named (`te=`, `unet=`, `dyn=`), others are positional.
TE defaults to 1, UNET to TE, DYN to none. `lyco` is an alias of `lora`. Tags in the negative prompt count too,
and several tags add up.

Where sdbot differs, it says so: A1111 logs and skips an unknown kind (`<hypernet:…>`) or a multiplier that is not
a number; sdbot makes both a clear error, so a tag never silently does nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import EngineError

TAG = re.compile(r"<(\w+):([^>]+)>")
LORA_KINDS = ("lora", "lyco")


@dataclass(frozen=True, order=True)
class NetworkTag:
    """One `<lora:…>` tag: the name as typed and its multipliers."""

    name: str
    te: float = 1.0
    unet: float = 1.0
    dyn: int | None = None

    def key(self) -> tuple:
        """What decides the merged weights: names compare case-insensitively, as file lookup does."""
        return (self.name.lower(), self.te, self.unet, -1 if self.dyn is None else self.dyn)


def strip_tags(text: str) -> str:
    """The prompt the text encoder sees: every `<kind:args>` tag removed (A1111's `parse_prompt`)."""
    return TAG.sub("", text)


def parse_tags(text: str) -> list[NetworkTag]:
    """The LoRA tags of one prompt, in order; a malformed tag is an `EngineError` that quotes it."""
    return [_tag(m.group(0), m.group(1), m.group(2)) for m in TAG.finditer(text)]


def network_set(*texts: str) -> tuple[tuple, ...]:
    """The job's LoRA set as a canonical, hashable value (sorted keys): equal sets merge to equal weights."""
    return tuple(sorted(tag.key() for text in texts for tag in parse_tags(text)))


def tags_of(*texts: str) -> list[NetworkTag]:
    """Every tag of the prompt and negative prompt, in the canonical order the merge applies them."""
    return sorted((tag for text in texts for tag in parse_tags(text)), key=NetworkTag.key)


def lora_tag(name: str, weight: float = 1.0) -> str:
    """The tag `/imagine lora:` and `--lora NAME:W` add to a prompt."""
    return f"<lora:{name}:{weight:g}>"


def _tag(whole: str, kind: str, args: str) -> NetworkTag:
    if kind.lower() not in LORA_KINDS:
        raise EngineError(
            f"{whole}: sdbot knows the extra networks <lora:NAME:WEIGHT> and <lyco:NAME:WEIGHT>, not <{kind}:…>"
        )
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in args.split(":"):
        parts = item.split("=", 2)
        if len(parts) == 2:
            named[parts[0].strip().lower()] = parts[1]
        else:
            positional.append(item)
    unknown = sorted(set(named) - {"te", "unet", "dyn"})
    if unknown:
        raise EngineError(f"{whole}: unknown setting {unknown[0]}=; the settings are te=, unet= and dyn=")
    if not positional or not positional[0].strip():
        raise EngineError(f"{whole}: the tag needs a name first, e.g. <lora:add_detail:0.6>")
    name = positional[0].strip()
    te = _number(whole, "TE", positional[1]) if len(positional) > 1 else 1.0
    te = _number(whole, "TE", named["te"]) if "te" in named else te
    unet = _number(whole, "UNET", positional[2]) if len(positional) > 2 else te
    unet = _number(whole, "UNET", named["unet"]) if "unet" in named else unet
    dyn = _whole(whole, positional[3]) if len(positional) > 3 else None
    dyn = _whole(whole, named["dyn"]) if "dyn" in named else dyn
    if len(positional) > 4:
        raise EngineError(f"{whole}: too many values; the form is <lora:NAME:TE:UNET:DYN>")
    return NetworkTag(name, te, unet, dyn)


def _number(whole: str, what: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise EngineError(f"{whole}: the {what} multiplier must be a number such as 0.8 (got {text.strip()!r})")
    return value


def _whole(whole: str, text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise EngineError(f"{whole}: DYN must be a whole number, a rank such as 8 (got {text.strip()!r})") from None
    if value < 1:
        raise EngineError(f"{whole}: DYN must be 1 or more (got {value})")
    return value
