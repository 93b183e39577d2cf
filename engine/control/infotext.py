"""The `ControlNet N` entries of an infotext, written and read exactly as sd-webui-controlnet does.

One entry per unit, keyed `ControlNet 0`, `ControlNet 1`, ... in unit order. Its value lists eleven fields in the
extension's order as `Field: value` joined by ", " (the whole value is then quoted by the infotext writer, as it
holds commas and colons):

    Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: Crop and Resize,
    Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0,
    Pixel Perfect: False, Control Mode: Balanced

Numbers print as Python prints them (weights and thresholds as floats, the resolution as an int). A value that
would itself hold "," or ":" cannot be written (the extension then writes nothing for the unit). Reading splits on
",", then on ": ", turns True/False, ints and floats back into values, and resets a resolution or threshold outside
its slider's range to the module's default, as the extension does; anything else wrong is an `EngineError`.
The control image is not part of an infotext.
"""

from __future__ import annotations

import re
from typing import Any

from engine.control.preprocessors import DEFAULT_RESOLUTION, RESOLUTION_RANGE, Slider, preprocessor
from engine.control.units import ControlUnit
from engine.errors import EngineError

KEY_PREFIX = "ControlNet "
FIELDS = (
    "module",
    "model",
    "weight",
    "resize_mode",
    "processor_res",
    "threshold_a",
    "threshold_b",
    "guidance_start",
    "guidance_end",
    "pixel_perfect",
    "control_mode",
)
_TEXT_FIELDS = ("module", "model", "resize_mode", "control_mode")
_KEY = re.compile(r"^ControlNet (\d+)$")


def display_name(field: str) -> str:
    """`resize_mode` -> `Resize Mode` (the extension's `field_to_displaytext`)."""
    return " ".join(word.capitalize() for word in field.split("_"))


def field_name(display: str) -> str:
    """`Resize Mode` -> `resize_mode` (the extension's `displaytext_to_field`)."""
    return "_".join(word.lower() for word in display.split(" "))


def unit_key(index: int) -> str:
    return f"{KEY_PREFIX}{index}"


def format_unit(unit: ControlUnit, model_label: str) -> str | None:
    """The entry's value for `unit`, whose model resolved to `model_label` ("name [hash]"); None when a value
    holds "," or ":" (the extension writes no entry then)."""
    values: dict[str, Any] = {
        "module": unit.label,
        "model": model_label,
        "weight": unit.weight,
        "resize_mode": unit.resize_mode,
        "processor_res": unit.processor_res,
        "threshold_a": unit.threshold_a,
        "threshold_b": unit.threshold_b,
        "guidance_start": unit.guidance_start,
        "guidance_end": unit.guidance_end,
        "pixel_perfect": unit.pixel_perfect,
        "control_mode": unit.control_mode,
    }
    texts = {display_name(name): str(values[name]) for name in FIELDS}
    if any("," in text or ":" in text for text in texts.values()):
        return None
    return ", ".join(f"{name}: {text}" for name, text in texts.items())


def _value(text: str) -> bool | int | float | str:
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _in_range(value: Any, lo: float, hi: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi


def _reset_slider(value: Any, slider: Slider | None) -> Any:
    if slider is None or not _in_range(value, slider.minimum, slider.maximum):
        return None
    return value


def parse_unit(text: str, key: str = "ControlNet 0") -> ControlUnit:
    """A unit from an entry's value (the image left empty); EngineError naming `key` when it cannot be read."""
    fields: dict[str, Any] = {}
    for item in text.split(","):
        parts = item.strip().split(": ")
        if len(parts) != 2:
            raise EngineError(f"{key}: cannot read {item.strip()!r} (expected `Field: value` pairs)")
        name = field_name(parts[0])
        # Names and modes stay as written ("1e5" is a model name, not 100000.0).
        fields[name] = parts[1] if name in _TEXT_FIELDS else _value(parts[1])
    known = {name: fields[name] for name in FIELDS if name in fields}
    try:
        module = preprocessor(str(known.get("module", "none")))
        res = known.get("processor_res")
        known["processor_res"] = res if _in_range(res, *RESOLUTION_RANGE) else DEFAULT_RESOLUTION
        known["threshold_a"] = _reset_slider(known.get("threshold_a"), module.threshold_a)
        known["threshold_b"] = _reset_slider(known.get("threshold_b"), module.threshold_b)
        if "model" not in known:
            raise EngineError("it names no model")
        return ControlUnit(**known)
    except EngineError as err:
        raise EngineError(f"{key}: {err}") from None


def unit_params(units: list[ControlUnit], model_labels: list[str]) -> dict[str, str]:
    """The `ControlNet N` entries for `units`, whose models resolved to `model_labels`, in unit order."""
    params: dict[str, str] = {}
    for index, (unit, label) in enumerate(zip(units, model_labels, strict=True)):
        value = format_unit(unit, label)
        if value is not None:
            params[unit_key(index)] = value
    return params


def units_from_params(params: dict[str, str]) -> list[ControlUnit]:
    """The units of an infotext's parameters (its `ControlNet N` entries, in index order)."""
    found: list[tuple[int, str, str]] = []
    for key, value in params.items():
        match = _KEY.match(key)
        if match:
            found.append((int(match.group(1)), key, value))
    return [parse_unit(value, key) for _, key, value in sorted(found)]
