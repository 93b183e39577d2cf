"""A1111 infotext: the text A1111 stores in a PNG's `parameters` chunk, written and read exactly as A1111 does.

Why exactness matters: users paste infotexts between sdbot, the A1111 WebUI and sites such as Civitai. Writing
A1111's format lets every A1111-compatible tool read our images, and parsing with A1111's own rules (spec §3,
`modules/infotext_utils.py`) means a text reads back here the way it reads back there, quirks included (each
prompt line is stripped, the last line only counts as parameters when at least 3 `Key: value` pairs are found).
The parser is `engine.infotext_parser`; its names are exported from here too.

Nothing here imports Discord or SQL: the bot's `/infotext` command, the CLI (`sdbot infotext`) and the worker
all share it. Every user-facing failure is an `EngineError`.
"""

from __future__ import annotations

import io
import json
import numbers
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from engine.control.infotext import KEY_PREFIX as CONTROLNET_PREFIX
from engine.control.infotext import units_from_params
from engine.errors import EngineError
from engine.infotext_parser import NEGATIVE_PREFIX, Infotext, parse_infotext, to_dict
from engine.render.masking import INFOTEXT_OPTIONS, options_from_infotext
from engine.request import parse_size
from engine.samplers import normalize_sampler

if TYPE_CHECKING:  # Pillow is only needed by the PNG helpers; keep plain text work import-light.
    from PIL import Image

    from engine.request import GenerationRequest

__all__ = [
    "Infotext",
    "format_infotext",
    "infotext_for_request",
    "parse_infotext",
    "to_dict",
    "request_options",
    "png_bytes",
    "read_png_infotext",
]

# --- writing -------------------------------------------------------------------------------------------------

# Spec §3: the order A1111 writes the parameter line in. Keys not listed here go after the known extras (in the
# order the caller gave them) and before "Version", which A1111 always puts last.
# Note: A1111 >= 1.9's create_infotext actually places "Schedule type" right after "Sampler"; the binding spec
# lists it among the extras, so it is kept there. Readers do not care about the order either way.
_CORE_ORDER: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "CFG scale",
    "Seed",
    "Size",
    "Model hash",
    "Model",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "RNG",
)
# The inpaint keys come before Emphasis and the networks' hashes: A1111's img2img `init` adds them first.
_EXTRA_ORDER: tuple[str, ...] = (
    "Schedule type",
    *INFOTEXT_OPTIONS,
    "Emphasis",
    "Lora hashes",
    "TI hashes",
)
_LAST: str = "Version"
_KNOWN = frozenset(_CORE_ORDER) | frozenset(_EXTRA_ORDER) | {_LAST}


def _drop_point_zero(text: str) -> str:
    """'7.0' -> '7': A1111's CFG slider hands over whole numbers, so its infotexts say `CFG scale: 7`."""
    return text[:-2] if text.endswith(".0") else text


def _value_text(value: object) -> str:
    """A parameter value as A1111 prints it: str(), with a float's trailing '.0' dropped (bools stay True/False)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return _drop_point_zero(str(value))
    return str(value)


def _quote(text: str) -> str:
    """A1111's `quote`: JSON-quote a value only when `,` `:` or a newline would break the parameter line."""
    if "," in text or ":" in text or "\n" in text:
        return json.dumps(text, ensure_ascii=False)
    return text


def _ordered_keys(params: Mapping[str, object]) -> list[str]:
    """Spec order: core keys, known extras, unknown keys as given, then Version."""
    keys = [k for k in _CORE_ORDER if k in params]
    keys += [k for k in _EXTRA_ORDER if k in params]
    keys += [k for k in params if k not in _KNOWN]
    if _LAST in params:
        keys.append(_LAST)
    return keys


def format_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """A1111's infotext for one image: prompt, optional "Negative prompt:" line, parameter line; stripped.

    `params` values of None are left out (A1111 uses None for "not applicable"); other values are printed with
    `_value_text` and JSON-quoted when they contain `,` `:` or a newline, so `parse_infotext` reads them back.
    Keys are written as given: they should match `\\w[\\w \\-/]+` or A1111-style readers will not see them.
    """
    line = ", ".join(
        f"{key}: {_quote(_value_text(params[key]))}" for key in _ordered_keys(params) if params[key] is not None
    )
    negative_text = f"\n{NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative_text}\n{line}".strip()


def infotext_for_request(
    request: GenerationRequest,
    *,
    seed: int,
    model_name: str,
    model_hash: str | None,
    vae_name: str | None,
    vae_hash: str | None,
    version: str,
    extra: dict[str, object] | None = None,
) -> str:
    """The infotext A1111 would write for `request` rendered with `seed` (one image of a batch).

    The sampler is written in the new form ("Sampler: DPM++ 2M, Schedule type: Karras"), as A1111 >= 1.9 does.
    "Clip skip" appears only when > 1 and "VAE"/"VAE hash" only for an external VAE, as A1111 does (a missing
    Clip skip reads back as 1). "RNG: CPU" is always written: A1111 omits RNG only for its GPU source, and sdbot
    draws noise on the CPU (spec §6), so a reader must know the noise came from the CPU generator.
    """
    params: dict[str, object] = {
        "Steps": request.steps,
        "Sampler": request.sampler,
        "CFG scale": request.cfg_scale,
        "Seed": seed,
        "Size": f"{request.width}x{request.height}",
        "Model hash": model_hash or None,
        "Model": model_name or None,
        "VAE hash": vae_hash or None,
        "VAE": vae_name or None,
        "Denoising strength": request.denoising_strength,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        "RNG": "CPU",
        "Schedule type": request.schedule if request.schedule != "Automatic" else None,
    }
    if request.is_inpaint:
        params.update(request.mask_settings.infotext_params())
    if request.hires_enabled:  # A1111's Hires keys; "Size" above stays the first pass's size, as A1111 writes it
        params["Hires upscale"] = request.hires
        params["Hires steps"] = request.hires_steps or None
        params["Hires upscaler"] = request.hires_upscaler
    params.update(extra or {})  # "Lora hashes", "TI hashes": after Hires, before Version, as A1111 writes them
    params["Version"] = version or None
    return format_infotext(request.prompt, request.negative_prompt, params)


def network_hashes(loras, embeddings: list[tuple[str, str]]) -> dict[str, object]:
    """`Lora hashes` and `TI hashes` as A1111 writes them: "name: hash, name: hash" (names without , or :)."""

    def joined(pairs) -> str | None:
        text = ", ".join(f"{name.replace(':', '').replace(',', '')}: {short}" for name, short in pairs)
        return text or None

    return {"Lora hashes": joined((u.name, u.hash) for u in loras), "TI hashes": joined(embeddings)}


# --- infotext -> request options -----------------------------------------------------------------------------

# Keys that describe the render but are not settings: checked elsewhere (hashes; LoRAs and embeddings travel in
# the prompt text, and engine.networks.hash_import links their hashes to local files) or fixed by sdbot (RNG: sdbot
# always draws CPU noise), so they are neither used nor worth a warning.
_INFORMATIONAL = frozenset(
    {"Model hash", "VAE hash", "Version", "RNG", "Lora hashes", "TI hashes", "Conditional mask weight"}
)

_RE_INT = re.compile(r"[+-]?[0-9]+")


def _bad_value(key: str, value: str, expected: str) -> EngineError:
    return EngineError(f"the infotext's {key} is {value!r}, which is not {expected}")


def _parse_int(key: str, value: str) -> int:
    text = value.strip()
    if not _RE_INT.fullmatch(text):
        raise _bad_value(key, value, "a whole number")
    return int(text)


def _parse_float(key: str, value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise _bad_value(key, value, "a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise _bad_value(key, value, "a finite number")
    return number


def request_options(info: Infotext) -> tuple[dict[str, object], list[str]]:
    """GenerationRequest keyword options from an infotext, plus the parameter keys that were not used.

    Unused keys (face restoration, variation seeds, an extension's...) are returned so the caller can tell the user
    what will not be reproduced instead of silently dropping it; informational keys (hashes, Version, RNG) are
    not reported. Both sampler forms are read: "DPM++ 2M Karras" and "DPM++ 2M" + "Schedule type: Karras".
    Missing Clip skip means 1 (A1111 writes it only when > 1). VAE/Model are set only when the text names them.
    sd-webui-controlnet's `ControlNet N` entries become `controls`: the units' settings, without images.
    A value that does not parse raises EngineError naming the key and the value; ranges are left to
    GenerationRequest, which gives the same messages as for typed options.
    """
    params = info.params
    options: dict[str, object] = {"prompt": info.prompt, "negative_prompt": info.negative_prompt or ""}
    used: set[str] = set(_INFORMATIONAL)

    if "Steps" in params:
        options["steps"] = _parse_int("Steps", params["Steps"])
        used.add("Steps")
    if "Sampler" in params:
        sampler = params["Sampler"]
        schedule = params.get("Schedule type", "Automatic")
        try:
            options["sampler"], options["schedule"] = normalize_sampler(sampler, schedule)
        except EngineError as err:
            shown = f"Sampler {sampler!r}" + (f" with Schedule type {schedule!r}" if "Schedule type" in params else "")
            raise EngineError(f"the infotext's {shown} cannot be used: {err}") from None
        used.update(("Sampler", "Schedule type"))
    if "CFG scale" in params:
        options["cfg_scale"] = _parse_float("CFG scale", params["CFG scale"])
        used.add("CFG scale")
    if "Seed" in params:
        options["seed"] = _parse_int("Seed", params["Seed"])
        used.add("Seed")
    if "Size" in params:
        try:
            options["width"], options["height"] = parse_size(params["Size"])
        except EngineError:
            raise _bad_value("Size", params["Size"], "WIDTHxHEIGHT, e.g. 512x768") from None
        used.add("Size")
    if "Model" in params:
        if params["Model"].strip():
            options["model"] = params["Model"].strip()
        used.add("Model")
    if "VAE" in params:
        if params["VAE"].strip():
            options["vae"] = params["VAE"].strip()
        used.add("VAE")
    options["clip_skip"] = _parse_int("Clip skip", params["Clip skip"]) if "Clip skip" in params else 1
    used.add("Clip skip")
    if "Denoising strength" in params:
        options["strength"] = _parse_float("Denoising strength", params["Denoising strength"])
        used.add("Denoising strength")
    _hires_options(params, options, used)
    options.update(options_from_infotext(params))  # the inpaint controls, never the mask itself
    used.update(INFOTEXT_OPTIONS)
    units = units_from_params(params)  # "ControlNet N": the units' settings; an infotext carries no control image
    if units:
        options["controls"] = [unit.options() for unit in units]
        used.update(key for key in params if key.startswith(CONTROLNET_PREFIX))

    unused = [key for key in params if key not in used]
    return options, unused


def _hires_options(params: dict[str, str], options: dict[str, object], used: set[str]) -> None:
    """A1111's Hires keys: "Hires upscale" (a scale) or "Hires resize" (WxH, read as the scale from Size)."""
    if "Hires upscale" in params:
        options["hires"] = _parse_float("Hires upscale", params["Hires upscale"])
        used.add("Hires upscale")
    elif "Hires resize" in params and "width" in options:
        try:
            target_w, _ = parse_size(params["Hires resize"])
        except EngineError:
            raise _bad_value("Hires resize", params["Hires resize"], "WIDTHxHEIGHT, e.g. 1024x1536") from None
        options["hires"] = target_w / cast(int, options["width"])  # set from "Size" above, an int
        used.add("Hires resize")
    if "Hires steps" in params:
        options["hires_steps"] = _parse_int("Hires steps", params["Hires steps"])
        used.add("Hires steps")
    if "Hires upscaler" in params:
        if params["Hires upscaler"].strip():
            options["hires_upscaler"] = params["Hires upscaler"].strip()
        used.add("Hires upscaler")


# --- PNG -----------------------------------------------------------------------------------------------------

# Modes Pillow's PNG writer accepts; anything else (CMYK, YCbCr...) is converted to RGB first.
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})


def png_bytes(image: Image.Image, infotext: str) -> bytes:
    """The image as PNG bytes carrying `infotext` in a `parameters` text chunk, as A1111 saves it.

    `PngInfo.add_text` writes tEXt when the text is Latin-1 and iTXt (UTF-8) otherwise, so CJK and emoji prompts
    survive; A1111's reader (Pillow's `info`) finds either.
    """
    from PIL.PngImagePlugin import PngInfo

    if not isinstance(infotext, str):
        raise EngineError(f"an infotext must be text, not {type(infotext).__name__}")
    info = PngInfo()
    try:
        info.add_text("parameters", infotext)
    except UnicodeError:
        raise EngineError("the infotext cannot be stored in a PNG: it is not valid Unicode text") from None
    if image.mode not in _PNG_MODES:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_png_infotext(data: bytes | bytearray | memoryview | str | os.PathLike[str]) -> str | None:
    """The `parameters` text of a PNG (bytes or a file path), or None when it has none.

    Chunks before the image data are in Pillow's `info` without decoding pixels (where A1111 and Pillow put
    them); only when it is not there are the pixels loaded to find text chunks written after the image data.
    Anything that is not a readable PNG raises EngineError ("not a PNG image ..."); a file that cannot be opened
    raises EngineError ("cannot read ...").
    """
    from PIL import Image as PILImage

    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    elif isinstance(data, (str, os.PathLike)):
        try:
            with open(data, "rb") as handle:
                raw = handle.read()
        except OSError as err:
            raise EngineError(f"cannot read {os.fspath(data)!r}: {err.strerror or err}") from None
    else:
        raise EngineError(f"expected PNG bytes or a file path, not {type(data).__name__}")

    try:
        with PILImage.open(io.BytesIO(raw)) as image:
            if image.format != "PNG":
                raise EngineError(f"not a PNG image (it is {image.format or 'an unknown format'})")
            value = image.info.get("parameters")
            if value is None:
                value = getattr(image, "text", {}).get("parameters")
    except EngineError:
        raise
    except Exception:  # Pillow raises many types (OSError, SyntaxError, ValueError, struct.error...)
        raise EngineError("not a PNG image, or a damaged one") from None
    return None if value is None else str(value)
