"""Midjourney-style inline options in a prompt: `a cat --seed 5 --ar 2:3 --no text, blur --portrait`.

Pure parsing, shared by /imagine, the edit modal and /preset save, so every path fails the same way. The
prompt is the text before the first option; an option's value runs to the next option (so `--no text, blur`
and `--sampler DPM++ 2M Karras` need no quotes; quotes are allowed). `--name` that is not an option names a
preset. Discord's mobile keyboards turn `--` into an em dash, so `—seed` works too. `--lora NAME:0.8` (or
`--lora a:0.5, b`) adds A1111's `<lora:NAME:0.8>` tag to the prompt, which is where LoRAs live. `--cn canny:0.8`
makes a ControlNet unit (module and weight) of the image that comes with the command.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.errors import UserError
from bot.option_spec import BOOL, BY_FLAG, BY_PARAM, CN, FLAG_NAMES, FLOAT, INT, LORA, PRESET, RATIO, SIZE, TEXT

_OPTION = re.compile(r"(?:^|(?<=\s))(?:--|—)([A-Za-z][\w-]*)")


@dataclass(frozen=True)
class InlineOptions:
    """What a prompt carried: the bare prompt, typed options (request keys), and preset names in order."""

    prompt: str
    options: dict[str, Any] = field(default_factory=dict)
    presets: tuple[str, ...] = ()


def parse_inline(text: str) -> InlineOptions:
    """Split `text` into prompt, options and preset names; a bad value is a `UserError` naming the option."""
    matches = list(_OPTION.finditer(text))
    prompt = text[: matches[0].start()] if matches else text
    options: dict[str, Any] = {}
    presets: list[str] = []
    tags: list[str] = []
    for i, m in enumerate(matches):
        name = m.group(1).lower().replace("_", "-")
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        raw = _unquote(text[m.end() : end].strip())
        option = BY_FLAG.get(name)
        if option is None:
            if raw:
                raise UserError(
                    f"unknown option --{m.group(1)}; options are --{', --'.join(FLAG_NAMES)} "
                    f"(a bare --name uses your preset of that name)"
                )
            presets.append(m.group(1))
            continue
        if option.kind == PRESET:
            if not raw:
                raise UserError("--preset needs a preset name, e.g. --preset portrait")
            presets.append(raw)
            continue
        if option.kind == LORA:
            tags += lora_tags(raw)
            continue
        if option.kind == CN:
            options["controls"] = [control_unit(raw)]
            continue
        options.update(convert(name, option.key, option.kind, raw))
    return InlineOptions(" ".join([prompt.strip(), *tags]).strip(), options, tuple(presets))


def lora_tags(raw: str) -> list[str]:
    """`add_detail:0.8, style` -> ["<lora:add_detail:0.8>", "<lora:style:1>"]; a bad weight is a `UserError`."""
    from engine.networks.tags import lora_tag

    tags = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, sep, weight = item.rpartition(":")
        if not sep:
            name, weight = item, "1"
        try:
            value = float(weight)
        except ValueError:
            value = math.nan
        if not name.strip() or not math.isfinite(value) or any(c in name for c in "<>:"):
            raise UserError(f"--lora takes NAME or NAME:WEIGHT, e.g. --lora add_detail:0.8 (got {item!r})")
        tags.append(lora_tag(name.strip(), value))
    if not tags:
        raise UserError("--lora needs a LoRA name, e.g. --lora add_detail:0.8")
    return tags


def control_unit(raw: str) -> dict[str, Any]:
    """`canny:0.8` -> a ControlNet unit's settings {"module": "canny", "weight": 0.8}; the module is checked by
    the engine with the job (its message lists the modules), a bad form here."""
    module, sep, weight = raw.strip().rpartition(":")
    if not sep:
        module, weight = raw.strip(), ""
    try:
        value = float(weight) if weight else 1.0
    except ValueError:
        value = math.nan
    if not module.strip() or not math.isfinite(value):
        raise UserError(f"--cn takes MODULE or MODULE:WEIGHT, e.g. --cn canny:0.8 (got {raw!r})")
    return {"module": module.strip(), "weight": value} if weight else {"module": module.strip()}


def append_to_prompt(text: str, addition: str) -> str:
    """`text` with `addition` at the end of its prompt, before any --options (whose values run to the end)."""
    m = _OPTION.search(text)
    if m is None:
        return f"{text.rstrip()} {addition}"
    return f"{text[: m.start()].rstrip()} {addition} {text[m.start() :]}"


def convert(name: str, key: str, kind: str, raw: str) -> dict[str, Any]:
    """One option's typed value; `UserError` says what the option takes."""
    if kind == BOOL:
        if raw.lower() not in _BOOLS:
            raise UserError(f"--{name} takes on or off, or nothing for on (got {raw!r})")
        return {key: _BOOLS[raw.lower()]}
    if raw == "" and kind != TEXT:
        raise UserError(f"--{name} needs a value, e.g. --{name} {_EXAMPLES[kind]}")
    if kind == INT:
        try:
            return {key: int(raw)}
        except ValueError:
            raise UserError(f"--{name} takes a whole number, e.g. --{name} 30 (got {raw!r})") from None
    if kind == FLOAT:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise UserError(f"--{name} takes a number, e.g. --{name} 7.5 (got {raw!r})")
        return {key: value}
    if kind == RATIO:
        return {key: parse_ratio(raw)}
    if kind == SIZE:
        width, height = parse_size_text(raw)
        return {"width": width, "height": height}
    return {key: raw}


_EXAMPLES = {INT: "30", FLOAT: "7.5", RATIO: "2:3", SIZE: "512x768", TEXT: "..."}
_BOOLS = {
    "": True,
    "on": True,
    "true": True,
    "yes": True,
    "1": True,
    "off": False,
    "false": False,
    "no": False,
    "0": False,
}


def parse_ratio(raw: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d{1,4})\s*[:/x]\s*(\d{1,4})\s*", raw)
    if not m or not int(m.group(1)) or not int(m.group(2)):
        raise UserError(f"--ar takes an aspect ratio such as 2:3 or 16:9 (got {raw!r})")
    w, h = int(m.group(1)), int(m.group(2))
    if max(w / h, h / w) > 4:
        raise UserError(f"--ar {w}:{h} is too extreme; ratios from 1:4 to 4:1 are allowed")
    return w, h


def parse_size_text(raw: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d{1,5})\s*[x×*]\s*(\d{1,5})\s*", raw.lower())
    if not m:
        raise UserError(f"size takes WIDTHxHEIGHT, e.g. 512x768 (got {raw!r})")
    return int(m.group(1)), int(m.group(2))


def from_slash(**values: Any) -> dict[str, Any]:
    """Slash-command parameters (by parameter name) as stored keys; unset (None) ones left out, a size parsed."""
    out: dict[str, Any] = {}
    for param, value in values.items():
        if value is None:
            continue
        option = BY_PARAM[param]
        if option.kind == SIZE:
            out["width"], out["height"] = parse_size_text(value)
        else:
            out[option.key] = value
    return out


def sized_by_ratio(options: Mapping[str, Any], base: tuple[int, int]) -> dict[str, Any]:
    """`options` with `--ar` (`aspect_ratio`) turned into `width`/`height`, the same for /imagine and /preset save.

    The ratio keeps the area of `base`, the size the command would get without it (Midjourney's --ar keeps the
    area; a 768x768 preset with --ar 2:3 stays about 768x768's pixels). A size given alongside wins: the ratio
    is dropped, as a typed option wins over what it would otherwise change."""
    out = dict(options)
    ratio = out.pop("aspect_ratio", None)
    if ratio is not None and not ("width" in out and "height" in out):
        out["width"], out["height"] = size_for_ratio(ratio, base[0] * base[1])
    return out


def size_for_ratio(ratio: tuple[int, int], pixels: int) -> tuple[int, int]:
    """The size with `ratio` and about `pixels` pixels, sides multiples of 8 (as Midjourney's --ar keeps area)."""
    w, h = ratio
    height = math.sqrt(pixels * h / w)
    width = height * w / h
    return max(64, round(width / 8) * 8), max(64, round(height / 8) * 8)


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'“”":
        return raw[1:-1].strip()
    if len(raw) >= 2 and raw[0] == "“" and raw[-1] == "”":
        return raw[1:-1].strip()
    return raw
