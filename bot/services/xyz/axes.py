"""The X/Y/Z plot's axes: A1111's axis types mapped to sdbot's request fields, and `TYPE: VALUES` parsing.

An axis is written as the script shows it, `Steps: 10,20,30` or `CFG Scale: 5-9 (+2)`: the type (A1111's label,
any case; a few sdbot spellings are accepted too), a colon, then the values (`bot.services.xyz.values`). Each type
says what it changes in a cell's settings (the fields of `engine.request.GenerationRequest`, as plain data), how
its cell labels read (`Steps: 20`, or the value alone for Sampler, Prompt S/R and Checkpoint name) and how costly a
change of it is (the script renders the costliest axis outermost: a checkpoint or VAE switch is slow).

`LoRA weight` is sdbot's own: `LoRA weight: 0-1 [5]` sets the weight of the prompt's one `<lora:…>` tag,
`LoRA weight NAME: …` of the LoRA NAME (its tag is added to the prompt when the prompt has none).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

from bot.errors import UserError
from bot.services.xyz.values import Value, expand, split_values
from engine.networks.tags import TAG, parse_tags
from engine.samplers import normalize_sampler

MAX_AXIS_VALUES = 100  # far above any cell cap; only bounds the work of expanding a typo such as 1-1000000
SEED_RANGE = 4294967294  # the script's `random.randrange(4294967294)` for a seed of -1

Settings = MutableMapping[str, Any]  # a cell's request fields by name: prompt, negative_prompt, steps, …


@dataclass(frozen=True)
class AxisType:
    """One axis type. `key` is the request field it sets ("" when `apply` is special); `labelled`: cell labels
    read `Label: value` (A1111's format_value_add_label), else the value alone; `cost` as the script weighs it."""

    label: str
    kind: type
    key: str = ""
    labelled: bool = True
    cost: float = 0.0
    aliases: tuple[str, ...] = ()


NOTHING = AxisType("Nothing", str, labelled=False)
SEED = AxisType("Seed", int, "seed")
STEPS = AxisType("Steps", int, "steps")
CFG = AxisType("CFG Scale", float, "cfg_scale", aliases=("cfg",))
PROMPT_SR = AxisType("Prompt S/R", str, labelled=False, aliases=("prompt sr", "sr"))
SAMPLER = AxisType("Sampler", str, "sampler", labelled=False)
CHECKPOINT = AxisType("Checkpoint name", str, "model", labelled=False, cost=1.0, aliases=("checkpoint", "model"))
VAE = AxisType("VAE", str, "vae", cost=0.7)
CLIP_SKIP = AxisType("Clip skip", int, "clip_skip", aliases=("clip-skip", "clipskip"))
DENOISING = AxisType("Denoising", float, "strength", aliases=("denoising strength", "strength"))
HIRES_STEPS = AxisType("Hires steps", int, "hires_steps")
HIRES_UPSCALER = AxisType("Hires upscaler", str, "hires_upscaler")
LORA_WEIGHT = AxisType("LoRA weight", float, aliases=("lora",))

TYPES: tuple[AxisType, ...] = (
    NOTHING,
    SEED,
    STEPS,
    CFG,
    PROMPT_SR,
    SAMPLER,
    CHECKPOINT,
    VAE,
    CLIP_SKIP,
    DENOISING,
    HIRES_STEPS,
    HIRES_UPSCALER,
    LORA_WEIGHT,
)
TYPE_NAMES = ", ".join(t.label for t in TYPES if t is not NOTHING)


def _folded(text: str) -> str:
    return " ".join(text.split()).casefold()


_BY_NAME: dict[str, AxisType] = {_folded(name): t for t in TYPES for name in (t.label, *t.aliases)}


@dataclass(frozen=True)
class Axis:
    """One parsed axis: its type, the values as typed (the grid's `X Values`) and the expanded values.
    `lora` names the LoRA of a `LoRA weight` axis ("" = the prompt's only one)."""

    type: AxisType
    text: str
    values: tuple[Value, ...]
    lora: str = ""

    def __len__(self) -> int:
        return len(self.values)

    def labels(self) -> list[str]:
        """The cell labels along this axis, as the script writes them."""
        return [self.label(value) for value in self.values]

    def label(self, value: Value) -> str:
        if self.type is NOTHING:
            return ""
        shown = round(value, 8) if isinstance(value, float) else value
        if self.type is CHECKPOINT:
            return os.path.basename(str(value))
        if self.type is LORA_WEIGHT:
            return f"{self.lora or self.type.label}: {shown}"
        return f"{self.type.label}: {shown}" if self.type.labelled else str(shown)

    def apply(self, settings: Settings, value: Value) -> None:
        """Change one cell's settings for `value` (the script's `apply`)."""
        APPLY.get(self.type, _set_field)(self, settings, value)

    def bound(self, settings: Settings) -> Axis:
        """This axis for a grid over `settings`: an unnamed `LoRA weight` axis names the prompt's only LoRA
        (a user error when there is none or several), so its labels can say which LoRA it is."""
        if self.type is LORA_WEIGHT and not self.lora:
            return replace(self, lora=_only_lora(settings))
        return self

    def with_fixed_seeds(self, rand: random.Random) -> Axis:
        """A Seed axis with each -1 drawn as the script draws it (`fix_axis_seeds`); other axes as they are."""
        if self.type is not SEED:
            return self
        return replace(self, values=tuple(rand.randrange(SEED_RANGE) if v == -1 else v for v in self.values))


NO_AXIS = Axis(NOTHING, "", (0,))


def parse_axis(text: str, limit: int = MAX_AXIS_VALUES) -> Axis:
    """`TYPE: VALUES` as an axis; a user error naming the types, or the value, that was wrong."""
    name, colon, values_text = text.partition(":")
    if not colon:
        raise UserError(f"an axis looks like `Steps: 10, 20, 30` (a type, a colon, the values); got {text.strip()!r}")
    axis_type, lora = _axis_type(name)
    items = split_values(values_text)
    if not items:
        raise UserError(f"{axis_type.label}: no values; write them after the colon, e.g. `Steps: 10, 20, 30`")
    values = expand(axis_type.label, axis_type.kind, items, limit)
    if not values:
        raise UserError(f"{axis_type.label}: {values_text.strip()!r} gives no values (a range such as 5-1 is empty)")
    if axis_type is SAMPLER:
        for value in values:
            normalize_sampler(str(value))  # an unknown sampler fails here, before anything runs (confirm_samplers)
    return Axis(axis_type, values_text.strip(), tuple(values), lora)


def axis_type(name: str) -> AxisType:
    """The type of that label or sdbot spelling, any case; a user error naming the types."""
    found = _BY_NAME.get(_folded(name))
    if found is None or found is NOTHING:
        raise UserError(f"unknown axis type {name.strip()!r}; the types are {TYPE_NAMES}")
    return found


def _axis_type(name: str) -> tuple[AxisType, str]:
    """The type, and the LoRA a `LoRA weight NAME` type names."""
    folded = _folded(name)
    for prefix in (_folded(LORA_WEIGHT.label), *LORA_WEIGHT.aliases):
        if folded.startswith(prefix + " ") and folded not in _BY_NAME:
            return LORA_WEIGHT, " ".join(name.split())[len(prefix) + 1 :]
    return axis_type(name), ""


# --- what each type changes ---------------------------------------------------------------------------------


def _set_field(axis: Axis, settings: Settings, value: Value) -> None:
    settings[axis.type.key] = value


def _set_sampler(axis: Axis, settings: Settings, value: Value) -> None:
    """A Sampler value carries its schedule: `Euler` is Euler with its automatic schedule, `DPM++ 2M Karras`
    DPM++ 2M with Karras (A1111's names; the base prompt's schedule does not leak into other samplers)."""
    settings["sampler"], settings["schedule"] = normalize_sampler(str(value))


def _set_vae(axis: Axis, settings: Settings, value: Value) -> None:
    """The script's VAE names: `Automatic` is sdbot's `auto`, `None` the checkpoint's own VAE."""
    text = str(value)
    settings["vae"] = "auto" if text.lower() in ("auto", "automatic") else text


def _replace_prompt(axis: Axis, settings: Settings, value: Value) -> None:
    """Prompt S/R: the first value is searched in the prompt and the negative prompt and replaced everywhere."""
    search = str(axis.values[0])
    prompt, negative = settings.get("prompt", ""), settings.get("negative_prompt", "")
    if search not in prompt and search not in negative:
        raise UserError(f"Prompt S/R did not find {search} in prompt or negative prompt.")
    settings["prompt"] = prompt.replace(search, str(value))
    settings["negative_prompt"] = negative.replace(search, str(value))


def _set_lora_weight(axis: Axis, settings: Settings, value: Value) -> None:
    """Every tag of the axis's LoRA (prompt and negative prompt) gets TE and UNET = value, keeping its DYN; with no
    such tag, `<lora:NAME:value>` is added to the end of the prompt."""
    name = axis.lora or _only_lora(settings)
    weight = _weight_text(float(value))
    found = False

    def rewrite(m: re.Match[str]) -> str:
        nonlocal found
        tags = parse_tags(m.group(0))
        if not tags or tags[0].name.lower() != name.lower():
            return m.group(0)
        found = True
        dyn = f":{weight}:{tags[0].dyn}" if tags[0].dyn is not None else ""
        return f"<{m.group(1)}:{tags[0].name}:{weight}{dyn}>"

    for key in ("prompt", "negative_prompt"):
        settings[key] = TAG.sub(rewrite, settings.get(key, ""))
    if not found:
        settings["prompt"] = f"{settings.get('prompt', '').rstrip()} <lora:{name}:{weight}>".lstrip()


def _weight_text(weight: float) -> str:
    """0.30000000000000004 -> "0.3", 1.0 -> "1": the value as its cell label shows it (rounded to 8 places)."""
    text = str(round(weight, 8))
    return text.removesuffix(".0")


def _only_lora(settings: Settings) -> str:
    names = {t.name.lower(): t.name for key in ("prompt", "negative_prompt") for t in parse_tags(settings.get(key, ""))}
    if len(names) != 1:
        found = "no <lora:…> tag" if not names else f"{len(names)} LoRAs ({', '.join(sorted(names.values()))})"
        raise UserError(f"LoRA weight: the prompt has {found}; name the LoRA: `LoRA weight NAME: 0, 0.5, 1`")
    return next(iter(names.values()))


APPLY: dict[AxisType, Callable[[Axis, Settings, Value], None]] = {
    NOTHING: lambda axis, settings, value: None,
    SAMPLER: _set_sampler,
    VAE: _set_vae,
    PROMPT_SR: _replace_prompt,
    LORA_WEIGHT: _set_lora_weight,
}
