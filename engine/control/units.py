"""`ControlUnit`: one ControlNet unit of a job, with the extension's fields, defaults and meanings.

A unit is a control image, a module (preprocessor), a ControlNet model and how strongly and when it steers:
weight 0..2, guidance start/end as fractions of the pass's steps, the control mode, how the map is fitted to the
image (resize mode), and the preprocessor's resolution and thresholds. Values are validated on construction; a
threshold or resolution left as None takes the module's default, as the extension resets -1. A model left empty is
picked at render by the module, as the extension's UI picks one (a canny ControlNet for canny, of the checkpoint's
family). The image is a
path on the bot's host (`image`), carried as bytes to another machine (`image_data`); infotexts never hold it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from engine.control.preprocessors import DEFAULT_RESOLUTION, HIDDEN_VALUE, RESOLUTION_RANGE, Slider, preprocessor
from engine.control.sizing import CROP_AND_RESIZE, RESIZE_MODES
from engine.errors import EngineError

BALANCED = "Balanced"
PROMPT_MORE_IMPORTANT = "My prompt is more important"
CONTROL_MORE_IMPORTANT = "ControlNet is more important"
CONTROL_MODES = (BALANCED, PROMPT_MORE_IMPORTANT, CONTROL_MORE_IMPORTANT)

MAX_WEIGHT = 2.0

# Short names (the CLI's and Discord's), the extension's own values and its older aliases, and its ints; lower case.
_CONTROL_MODE_NAMES = {
    **{mode.lower(): mode for mode in CONTROL_MODES},
    "balanced": BALANCED,
    "prompt": PROMPT_MORE_IMPORTANT,
    "control": CONTROL_MORE_IMPORTANT,
}
_RESIZE_MODE_NAMES = {
    **{mode.lower(): mode for mode in RESIZE_MODES},
    "just": RESIZE_MODES[0],
    "crop": RESIZE_MODES[1],
    "fill": RESIZE_MODES[2],
    "inner fit (scale to fit)": RESIZE_MODES[1],
    "scale to fit (inner fit)": RESIZE_MODES[1],
    "outer fit (shrink to fit)": RESIZE_MODES[2],
    "envelope (outer fit)": RESIZE_MODES[2],
    "0": RESIZE_MODES[0],
    "1": RESIZE_MODES[1],
    "2": RESIZE_MODES[2],
    "3": RESIZE_MODES[0],  # A1111's "Just Resize (Latent upscale)"
}


def _named(what: str, text: str, names: dict[str, str], valid: str) -> str:
    found = names.get(str(text).strip().lower())
    if found is None:
        raise EngineError(f"unknown ControlNet {what} {text!r}; valid: {valid}")
    return found


def control_mode(text: str) -> str:
    """A control mode from its short name (balanced, prompt, control) or the extension's value."""
    valid = f"balanced, prompt ({PROMPT_MORE_IMPORTANT}), control ({CONTROL_MORE_IMPORTANT})"
    return _named("control mode", text, _CONTROL_MODE_NAMES, valid)


def resize_mode(text: str) -> str:
    """A resize mode from its short name (just, crop, fill), the extension's value, an old alias or 0/1/2."""
    valid = "just (Just Resize), crop (Crop and Resize), fill (Resize and Fill)"
    return _named("resize mode", text, _RESIZE_MODE_NAMES, valid)


def _number(what: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise EngineError(f"ControlNet {what} must be a number from {lo:g} to {hi:g} (got {value!r})")
    if not lo <= value <= hi:
        raise EngineError(f"ControlNet {what} must be from {lo:g} to {hi:g} (got {value:g})")
    return float(value)


def _slider(what: str, slider: Slider | None, value: float | None) -> float:
    """A threshold: the module's default when not given; a hidden slider always holds its hidden value."""
    if slider is None:
        return HIDDEN_VALUE
    if value is None:
        return float(slider.default)
    return _number(f"{what} ({slider.label})", value, slider.minimum, slider.maximum)


@dataclass(frozen=True)
class ControlUnit:
    model: str = ""
    module: str = "none"
    image: str = ""
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: str = BALANCED
    resize_mode: str = CROP_AND_RESIZE
    pixel_perfect: bool = False
    processor_res: int | None = None
    threshold_a: float | None = None
    threshold_b: float | None = None
    # The control image's bytes, for a worker on another machine; never stored, never in an infotext.
    image_data: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or self.model.strip().lower() == "none":
            raise EngineError("a ControlNet unit needs a model (a name from models/ControlNet; `sdbot models`)")
        object.__setattr__(self, "model", self.model.strip())
        module = preprocessor(self.module)
        object.__setattr__(self, "module", module.name)
        if not isinstance(self.image, str):
            raise EngineError("a ControlNet unit's image must be a file path")
        object.__setattr__(self, "weight", _number("weight", self.weight, 0.0, MAX_WEIGHT))
        start = _number("guidance start", self.guidance_start, 0.0, 1.0)
        end = _number("guidance end", self.guidance_end, 0.0, 1.0)
        if start > end:
            raise EngineError(f"ControlNet guidance start ({start:g}) must not be after its end ({end:g})")
        object.__setattr__(self, "guidance_start", start)
        object.__setattr__(self, "guidance_end", end)
        object.__setattr__(self, "control_mode", control_mode(self.control_mode))
        object.__setattr__(self, "resize_mode", resize_mode(self.resize_mode))
        if not isinstance(self.pixel_perfect, bool):
            raise EngineError(f"ControlNet pixel perfect must be true or false (got {self.pixel_perfect!r})")
        res: Any = (
            DEFAULT_RESOLUTION if self.processor_res is None or not module.uses_resolution else self.processor_res
        )
        if isinstance(res, float) and res.is_integer():
            res = int(res)
        if isinstance(res, bool) or not isinstance(res, int) or not RESOLUTION_RANGE[0] <= res <= RESOLUTION_RANGE[1]:
            lo, hi = RESOLUTION_RANGE
            raise EngineError(f"ControlNet processor resolution must be a whole number from {lo} to {hi} (got {res!r})")
        object.__setattr__(self, "processor_res", res)
        object.__setattr__(self, "threshold_a", _slider("threshold A", module.threshold_a, self.threshold_a))
        object.__setattr__(self, "threshold_b", _slider("threshold B", module.threshold_b, self.threshold_b))

    @property
    def label(self) -> str:
        """The module as the extension's UI shows it (and writes it in infotexts)."""
        return preprocessor(self.module).label

    @property
    def active(self) -> bool:
        """Whether the unit changes anything: weight 0 or an empty step range leaves the image as without it."""
        return self.weight > 0 and self.guidance_end > 0 and self.guidance_start < self.guidance_end

    def replace(self, **changes: Any) -> ControlUnit:
        return dataclasses.replace(self, **changes)

    def options(self) -> dict[str, Any]:
        """The unit as plain data (for storage and display), without the image bytes."""
        data = dataclasses.asdict(self)
        data.pop("image_data")
        return data


def checked_units(units: Any, allowed: int) -> tuple[ControlUnit, ...]:
    """A job's units (or their settings as mappings: stored options, the CLI), each with its image, at most
    `allowed` of them; EngineError naming the unit otherwise (GenerationRequest's check)."""
    if not isinstance(units, (tuple, list)):
        raise EngineError("ControlNet units must be a list")
    made = []
    for index, given in enumerate(units, start=1):
        unit = given
        if isinstance(given, dict):
            try:
                unit = ControlUnit(**given)
            except TypeError:
                known = [f.name for f in dataclasses.fields(ControlUnit) if f.name != "image_data"]
                unknown = next(k for k in given if k not in known and k != "image_data")
                raise EngineError(
                    f"ControlNet unit {index}: unknown setting {unknown!r}; known: {', '.join(known)}"
                ) from None
        if not isinstance(unit, ControlUnit):
            raise EngineError(f"ControlNet unit {index} must be a unit's settings")
        if not unit.image:
            raise EngineError(
                f"ControlNet unit {index} ({unit.label}, {unit.model or 'model by module'}) has no control image: "
                f"give one (an infotext does not carry it)"
            )
        made.append(unit)
    if len(made) > allowed:
        if not allowed:
            raise EngineError("ControlNet is turned off on this server (max_controlnet_units = 0)")
        raise EngineError(f"at most {allowed} ControlNet units per job (got {len(made)})")
    return tuple(made)
