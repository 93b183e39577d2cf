"""The vocabulary of generation options, defined once: each option's stored key, type, inline names, slash-command
parameter, label and range.

Everything that names an option reads this table: inline `--flag` parsing (`bot.options`), stored options'
validation (`bot.store.options`), `/imagine` and `/preset save` (their parameter types, descriptions and the
mapping to stored keys), the edit modal's prefill and preset listings (`inline_text`), and the parameters embed's
labels. Each option's A1111 infotext name is here too; `engine.infotext` (which knows no bot) reads and writes
them, and tests/bot/test_option_spec.py holds the two to the same names.

Why the table holds kinds rather than Python types: a kind also says how text becomes the value (`size` gives
`width` and `height`; `ratio` is applied to the size; `lora` goes into the prompt; `preset` names a preset).

A leaf: it imports nothing of `bot` (the store reads it too) and may import `engine`. The Discord areas import no
`engine` themselves: what they show of it (sampler and schedule names, LoRA tags, the strength in effect, the
request and its limits, start-image and mask checks, Vary (Region)'s regions and masks, Zoom Out's and Pan's
margins, a PNG's infotext, the engine's error type) they take from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.config import Limits as Limits
from engine.errors import EngineError as EngineError
from engine.infotext import read_png_infotext as read_png_infotext
from engine.networks.tags import lora_tag as lora_tag
from engine.networks.tags import tags_of as tags_of
from engine.render.input_image import default_size as default_size
from engine.render.input_image import load_input_image as load_input_image
from engine.render.input_image import open_input_image as open_input_image
from engine.render.masking import binary_mask as binary_mask
from engine.render.outpaint import grown_size as grown_size
from engine.render.outpaint import pan_margins as pan_margins
from engine.render.outpaint import zoom_out_margins as zoom_out_margins
from engine.render.regions import parse_region as parse_region
from engine.render.regions import region_mask as region_mask
from engine.request import GenerationRequest as GenerationRequest
from engine.request import strength_in_effect as strength_in_effect
from engine.samplers import SCHEDULES as SCHEDULES
from engine.samplers import sampler_labels as sampler_labels
from engine.samplers import sampler_names as sampler_names

INT, FLOAT, TEXT, BOOL = "int", "float", "text", "bool"
SIZE, RATIO, LORA, PRESET = "size", "ratio", "lora", "preset"
CONTROLS = "controls"  # ControlNet units: a list of each unit's settings (engine/control/units.py)
CN = "cn"  # `--cn MODULE[:WEIGHT]`: a ControlNet unit's module and weight, its image the attached one
SCALARS = (INT, FLOAT, TEXT, BOOL)


@dataclass(frozen=True)
class Option:
    """One option. `key` is the stored key (a `GenerationRequest` field or a prompt part); a `size`, `ratio`,
    `lora` or `preset` option is not stored as itself. `flags` are the inline names, the canonical one first;
    `param` the slash-command parameter (default: the first flag with `_`); `label` the parameters embed's name;
    `range` the slash command's bounds; `describe` the slash command's help; `infotext` the A1111 infotext key."""

    key: str
    kind: str
    flags: tuple[str, ...] = ()
    label: str = ""
    range: tuple[float, float] | None = None
    describe: str = ""
    param: str = ""
    infotext: str = ""  # A1111's name in an infotext's parameter line (engine.infotext reads and writes it)

    @property
    def slash_name(self) -> str:
        return self.param or (self.flags[0].replace("-", "_") if self.flags else self.key)


# In the order options are shown (preset listings, the edit modal).
VOCABULARY: tuple[Option, ...] = (
    Option("prompt", TEXT),  # the text before the first --option
    Option("prompt_prefix", TEXT, describe="Text put before every prompt", param="prefix"),
    Option("prompt_suffix", TEXT, describe="Text put after every prompt", param="suffix"),
    Option(
        "negative_prompt",
        TEXT,
        ("no", "negative"),
        "Negative prompt",
        describe="What to avoid (negative prompt)",
        param="negative",
    ),
    Option(
        "sampler",
        TEXT,
        ("sampler",),
        "Sampler",
        describe="A1111 sampler name, e.g. DPM++ 2M Karras",
        infotext="Sampler",
    ),
    Option("schedule", TEXT, ("schedule",), infotext="Schedule type"),
    Option("width", INT),
    Option("height", INT),
    Option("size", SIZE, ("size",), "Size", describe="WIDTHxHEIGHT, e.g. 512x768", infotext="Size"),
    Option("aspect_ratio", RATIO, ("ar", "aspect")),
    Option("steps", INT, ("steps",), "Steps", (1, 1000), "Denoising steps", infotext="Steps"),
    Option(
        "cfg_scale",
        FLOAT,
        ("cfg", "cfg-scale"),
        "CFG scale",
        (1.0, 30.0),
        "CFG scale: how closely to follow the prompt",
        infotext="CFG scale",
    ),
    Option("seed", INT, ("seed",), "Seed", (-1, 4294967295), "Seed (-1 = random)", infotext="Seed"),
    Option(
        "clip_skip",
        INT,
        ("clip-skip", "clipskip"),
        "CLIP skip",
        (1, 12),
        "CLIP skip (1 = last layer, 2 = usual for anime models)",
        infotext="Clip skip",
    ),
    Option("vae", TEXT, ("vae",), "VAE", describe="auto, none, or a VAE name", infotext="VAE"),
    Option("model", TEXT, ("model",), "Model", describe="Checkpoint name", infotext="Model"),
    Option("batch_size", INT, ("batch",), "Batch", (1, 16), "Images to make"),
    Option("init_image", TEXT),  # a start image comes only from an attachment or a button (bot.store.options)
    Option(
        "strength",
        FLOAT,
        ("strength", "denoise"),
        "Strength",
        (0.0, 1.0),
        "Denoising strength: how much to change the image (0-1; A1111: 0.75, Hires 0.7)",
        infotext="Denoising strength",
    ),
    Option("resize_mode", TEXT, ("resize-mode",), describe="How the image fits the size (img2img)"),
    Option("controls", CONTROLS),  # ControlNet units come with their control images (attachments, the CLI)
    Option(
        "hires",
        FLOAT,
        ("hires",),
        "Hires",
        (1.0, 4.0),
        "Hires. fix: render small, then upscale by this factor (e.g. 2) and refine",
        infotext="Hires upscale",
    ),
    Option(
        "hires_steps",
        INT,
        ("hires-steps",),
        range=(0, 1000),
        describe="Steps of the Hires second pass (0 = same as steps)",
        infotext="Hires steps",
    ),
    Option(
        "hires_upscaler",
        TEXT,
        ("hires-upscaler",),
        describe="Latent, Latent (nearest-exact), Lanczos, Nearest or an ESRGAN model",
        infotext="Hires upscaler",
    ),
    # Inpainting (with a start image): the mask comes only from an attachment or a button, like the start image;
    # outpaint only from the command line and the Zoom Out / Pan buttons. The controls may sit in presets.
    Option("mask", TEXT),
    Option(
        "mask_blur",
        INT,
        ("mask-blur",),
        "Mask blur",
        (0, 64),
        "Inpainting: how far the mask's edge blends, in pixels (A1111: 4)",
        infotext="Mask blur",
    ),
    Option(
        "mask_mode",
        TEXT,
        ("mask-mode",),
        describe="Inpainting: masked (change the white part) or unmasked (change the black part)",
        infotext="Mask mode",
    ),
    Option(
        "masked_content",
        TEXT,
        ("masked-content",),
        describe="Inpainting: what the masked part starts from: original, fill, noise or nothing",
        infotext="Masked content",
    ),
    Option(
        "inpaint_area",
        TEXT,
        ("inpaint-area",),
        describe="Inpainting: whole (the whole picture) or masked (only the masked part, at full size)",
        infotext="Inpaint area",
    ),
    Option(
        "padding",
        INT,
        ("padding",),
        range=(0, 256),
        describe="Inpainting, inpaint area masked: pixels around the mask that are redrawn too (A1111: 32)",
        infotext="Masked area padding",
    ),
    Option("outpaint", TEXT, describe="Outpainting: L,T,R,B pixels to add on the left, top, right and bottom"),
    Option(
        "combinatorial",
        BOOL,
        ("combinatorial",),
        "Combinatorial",
        describe="Dynamic prompts: image i gets the i-th combination of the {a|b} choices, not a draw by its seed",
    ),
    Option("preset", PRESET, ("preset",), describe="One of your presets"),
    Option(
        "control_net",
        CN,
        ("cn",),
        describe="ControlNet with the attached image: --cn MODULE[:WEIGHT], e.g. --cn canny:0.8",
    ),
    Option(
        "lora",
        LORA,
        ("lora",),
        describe="A LoRA to add as <lora:NAME:1> (more: --lora NAME:0.8 or <lora:…> tags in the prompt)",
    ),
)

# A start image and a mask are files on the bot's host: they come only from an attachment or a button (never from a
# preset, guild default or imported file, which could name any path), so they are request fields but not options;
# outpaint margins belong to one start image the same way. A job's request saved as a preset leaves them out.
COMMAND_ONLY: tuple[str, ...] = ("init_image", "mask", "outpaint")

BY_KEY: dict[str, Option] = {o.key: o for o in VOCABULARY}
BY_FLAG: dict[str, Option] = {flag: o for o in VOCABULARY for flag in o.flags}
BY_PARAM: dict[str, Option] = {o.slash_name: o for o in VOCABULARY if o.flags or o.describe}
# The canonical inline names, for "options are --ar, --batch, …".
FLAG_NAMES: list[str] = sorted(o.flags[0] for o in VOCABULARY if o.flags)
# Stored keys by type: what `bot.store.options` checks values against.
STORED_KINDS: dict[str, str] = {o.key: o.kind for o in VOCABULARY if o.kind in (*SCALARS, CONTROLS)}


def describe(*params: str, **others: str) -> dict[str, str]:
    """`app_commands.describe` keywords: the vocabulary's text for `params`, plus `others` (a command's own)."""
    return {p: BY_PARAM[p].describe for p in params} | others


def inline_text(options: Mapping[str, Any]) -> str:
    """Options as the inline syntax users type (`--steps 30 --cfg 7 --sampler Euler a …`), parsed back by
    `bot.options.parse_inline`; in vocabulary order, leaving out unset (None) values and the prompt, which has
    no flag. A caller that shows the negative prompt apart sets it to None."""
    parts: list[str] = []
    for option in VOCABULARY:
        if option.kind == SIZE:
            if "width" in options or "height" in options:
                parts.append(f"--size {options.get('width', '?')}x{options.get('height', '?')}")
            continue
        if not option.flags or options.get(option.key) is None:
            continue
        if option.key == "schedule" and options.get("sampler") is not None:
            continue  # said with the sampler: `--sampler DPM++ 2M Karras`
        value = options[option.key]
        if option.kind == BOOL:
            parts.append(f"--{option.flags[0]}" if value else f"--{option.flags[0]} off")
            continue
        if option.kind == RATIO:
            value = f"{value[0]}:{value[1]}"
        if option.key == "sampler" and options.get("schedule", "Automatic") != "Automatic":
            value = f"{value} {options['schedule']}"
        parts.append(f"--{option.flags[0]} {_number(value) if isinstance(value, float) else value}")
    return " ".join(parts)


def _number(value: float) -> str:
    """7.0 -> "7", 0.35 -> "0.35": short, but exact where `:g` would round (the text is parsed back)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)
