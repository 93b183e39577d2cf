"""The ControlNet preprocessors ("modules") that need no weights, computed as sd-webui-controlnet computes them.

Each one takes the control image (RGB, uint8, H x W x 3), the processor resolution and the two threshold sliders,
and returns the detected map (uint8, H' x W' x 3). Names, labels, slider ranges and defaults are the extension's
(scripts/preprocessor/model_free_preprocessors.py, scripts/preprocessor/legacy/; /work/plan/notes-i23.md has the
lines): a user who knows "canny 100/200" gets the same map. Preprocessors that run a network (depth) are described
here too, so units and infotexts know them, but their maps come from `engine.control.annotators`, and only when the
admin names a local folder with their weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.errors import EngineError

# What a hidden slider holds in the extension (PreprocessorParameter's defaults): its infotext shows 0.5.
HIDDEN_VALUE = 0.5
DEFAULT_RESOLUTION = 512
RESOLUTION_RANGE = (64, 2048)

# ControlNet Union control types, in xinsir's (and the extension's ControlNetUnionControlType) order.
UNION_TYPES = ("OpenPose", "Depth", "Soft Edge", "Hard Edge", "Normal Map", "Segmentation", "Tile", "Inpaint")


@dataclass(frozen=True)
class Slider:
    """One of a preprocessor's threshold sliders: its label in the extension's UI, range and default."""

    label: str
    minimum: float
    maximum: float
    default: float


MapFunction = Callable[[np.ndarray, int, float, float], np.ndarray]


@dataclass(frozen=True)
class Preprocessor:
    """A module as the extension names it (`name`, what its API takes; `label`, what its UI shows and writes)."""

    name: str
    label: str
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    uses_resolution: bool = True
    # The folder (under the admin's annotator folder) holding this module's weights, for the modules whose network
    # transformers runs; None for the OpenCV ones (`compute`) and for those sdbot knows but cannot compute.
    annotator: str | None = None
    # The ControlNet Union control type this module's maps are (an index of UNION_TYPES); None: none fits.
    union_type: int | None = None
    compute: MapFunction | None = None
    # The extension's control types ("tags") this module serves, in its order: a model for it has one in its name.
    tags: tuple[str, ...] = ()

    def default_a(self) -> float:
        return self.threshold_a.default if self.threshold_a else HIDDEN_VALUE

    def default_b(self) -> float:
        return self.threshold_b.default if self.threshold_b else HIDDEN_VALUE


# ------------------------------------------------------------------------------------------------ image helpers


def hwc3(image: np.ndarray) -> np.ndarray:
    """Three uint8 channels: grey repeated, RGBA composited over white (the extension's `HWC3`)."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels == 3:
        return image
    if channels == 1:
        return np.concatenate([image, image, image], axis=2)
    if channels == 4:
        color = image[:, :, :3].astype(np.float32)
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        return (color * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)
    raise ValueError(f"expected 1, 3 or 4 channels, got {channels}")


def _pad64(side: int) -> int:
    return int(np.ceil(side / 64.0) * 64 - side)


def resize_with_pad(image: np.ndarray, resolution: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The extension's `resize_image_with_pad`: the short side scaled to `resolution` (cubic up, area down), then
    edge-padded to multiples of 64; returns the padded image and the function that crops a map back."""
    import cv2

    image = hwc3(image)
    height, width = image.shape[:2]
    k = float(resolution) / float(min(height, width))
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    target_h, target_w = int(np.round(height * k)), int(np.round(width * k))
    image = cv2.resize(image, (target_w, target_h), interpolation=interpolation)
    padded = np.pad(image, [[0, _pad64(target_h)], [0, _pad64(target_w)], [0, 0]], mode="edge")

    def remove_pad(result: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(result[:target_h, :target_w])

    return np.ascontiguousarray(padded), remove_pad


# ---------------------------------------------------------------------------------------------- the functions


def _none(image: np.ndarray, resolution: int, a: float, b: float) -> np.ndarray:
    return hwc3(image)


def _canny(image: np.ndarray, resolution: int, a: float, b: float) -> np.ndarray:
    import cv2

    padded, remove_pad = resize_with_pad(image, resolution)
    return remove_pad(cv2.cvtColor(cv2.Canny(padded, int(a), int(b)), cv2.COLOR_GRAY2RGB))


def _invert(image: np.ndarray, resolution: int, a: float, b: float) -> np.ndarray:
    return 255 - hwc3(image)


def _tile_resample(image: np.ndarray, resolution: int, a: float, b: float) -> np.ndarray:
    import cv2

    image = hwc3(image)
    if a < 1.1:
        return image
    height, width = int(image.shape[0] / a), int(image.shape[1] / a)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _threshold(image: np.ndarray, resolution: int, a: float, b: float) -> np.ndarray:
    padded, remove_pad = resize_with_pad(image, resolution)
    result = np.zeros_like(padded)
    result[np.min(padded, axis=2) > a] = 255
    return remove_pad(result)


def _scribble_xdog(image: np.ndarray, resolution: int, a: float, b: float) -> np.ndarray:
    import cv2

    padded, remove_pad = resize_with_pad(image, resolution)
    fine = cv2.GaussianBlur(padded.astype(np.float32), (0, 0), 0.5)
    coarse = cv2.GaussianBlur(padded.astype(np.float32), (0, 0), 5.0)
    dog = (255 - np.min(coarse - fine, axis=2)).clip(0, 255).astype(np.uint8)
    result = np.zeros_like(padded)
    result[2 * (255 - dog) > a] = 255
    return remove_pad(result)


def _blur_gaussian(image: np.ndarray, resolution: int, a: float, b: float) -> np.ndarray:
    import cv2

    padded, remove_pad = resize_with_pad(image, resolution)
    return cv2.GaussianBlur(remove_pad(padded), (0, 0), float(a))


def _lineart_standard(image: np.ndarray, resolution: int, a: float, b: float) -> np.ndarray:
    import cv2

    padded, remove_pad = resize_with_pad(image, resolution)
    x = padded.astype(np.float32)
    blurred = cv2.GaussianBlur(x, (0, 0), 6.0)
    intensity = np.min(blurred - x, axis=2).clip(0, 255)
    strong = intensity[intensity > 8]
    intensity /= max(16.0, float(np.median(strong)) if strong.size else 0.0)
    intensity *= 127
    return hwc3(remove_pad(intensity.clip(0, 255).astype(np.uint8)))


# ------------------------------------------------------------------------------------------------- the registry

_OPENPOSE, _DEPTH, _SOFT_EDGE, _HARD_EDGE, _NORMAL, _TILE = 0, 1, 2, 3, 4, 6

PREPROCESSORS: tuple[Preprocessor, ...] = (
    Preprocessor("none", "none", compute=_none),
    Preprocessor(
        "canny",
        "canny",
        Slider("Low Threshold", 1, 255, 100),
        Slider("High Threshold", 1, 255, 200),
        union_type=_HARD_EDGE,
        compute=_canny,
    ),
    Preprocessor(
        "invert", "invert (from white bg & black line)", uses_resolution=False, union_type=_HARD_EDGE, compute=_invert
    ),
    Preprocessor(
        "tile_resample",
        "tile_resample",
        Slider("Down Sampling Rate", 1.0, 8.0, 1.0),
        union_type=_TILE,
        compute=_tile_resample,
    ),
    Preprocessor("threshold", "threshold", Slider("Binarization Threshold", 0, 255, 127), compute=_threshold),
    Preprocessor(
        "scribble_xdog",
        "scribble_xdog",
        Slider("XDoG Threshold", 1, 64, 32),
        union_type=_SOFT_EDGE,
        compute=_scribble_xdog,
    ),
    Preprocessor(
        "blur_gaussian", "blur_gaussian", Slider("Sigma", 0.01, 64.0, 9.0), union_type=_TILE, compute=_blur_gaussian
    ),
    Preprocessor(
        "lineart_standard",
        "lineart_standard (from white bg & black line)",
        union_type=_HARD_EDGE,
        compute=_lineart_standard,
    ),
    Preprocessor("depth_anything", "depth_anything", annotator="depth_anything", union_type=_DEPTH),
    Preprocessor("depth_anything_v2", "depth_anything_v2", annotator="depth_anything_v2", union_type=_DEPTH),
    # Known (infotexts name them), but their networks are not in transformers: not offered.
    Preprocessor("depth", "depth_midas", union_type=_DEPTH),
    Preprocessor("depth_zoe", "depth_zoe", union_type=_DEPTH),
    Preprocessor("openpose", "openpose", union_type=_OPENPOSE),
    Preprocessor("openpose_full", "openpose_full", union_type=_OPENPOSE),
    Preprocessor("dw_openpose_full", "dw_openpose_full", union_type=_OPENPOSE),
    Preprocessor("lineart", "lineart_realistic", union_type=_HARD_EDGE),
    Preprocessor("lineart_anime", "lineart_anime", union_type=_HARD_EDGE),
    Preprocessor("hed", "softedge_hed", union_type=_SOFT_EDGE),
    Preprocessor("pidinet", "softedge_pidinet", union_type=_SOFT_EDGE),
    Preprocessor("scribble_hed", "scribble_hed", union_type=_SOFT_EDGE),
    Preprocessor("pidinet_scribble", "scribble_pidinet", union_type=_SOFT_EDGE),
    Preprocessor(
        "mlsd",
        "mlsd",
        Slider("MLSD Value Threshold", 0.01, 2.0, 0.1),
        Slider("MLSD Distance Threshold", 0.01, 20.0, 0.1),
        union_type=_HARD_EDGE,
    ),
    Preprocessor("normal_bae", "normal_bae", union_type=_NORMAL),
)

# The extension's tags per module (scripts/preprocessor/, "tags"); the model names a default is picked by.
_TAGS = {
    "canny": ("canny",),
    "invert": ("canny", "lineart", "scribble", "mlsd"),
    "tile_resample": ("tile",),
    "blur_gaussian": ("tile",),
    "scribble_xdog": ("scribble",),
    "lineart_standard": ("lineart",),
    "depth_anything": ("depth",),
    "depth_anything_v2": ("depth",),
    "depth": ("depth",),
    "depth_zoe": ("depth",),
    "openpose": ("openpose",),
    "openpose_full": ("openpose",),
    "dw_openpose_full": ("openpose",),
    "lineart": ("lineart",),
    "lineart_anime": ("lineart",),
    "hed": ("softedge",),
    "pidinet": ("softedge",),
    "scribble_hed": ("scribble",),
    "pidinet_scribble": ("scribble",),
    "mlsd": ("mlsd",),
    "normal_bae": ("normalmap",),
}
PREPROCESSORS = tuple(dataclasses.replace(p, tags=_TAGS.get(p.name, ())) for p in PREPROCESSORS)

_BY_KEY: dict[str, Preprocessor] = {}
for _p in PREPROCESSORS:
    _BY_KEY.setdefault(_p.label.lower(), _p)
    _BY_KEY.setdefault(_p.name.lower(), _p)


def preprocessor(module: str) -> Preprocessor:
    """A module by its label or its name (as the extension looks them up), case-insensitive; else EngineError."""
    found = _BY_KEY.get(module.strip().lower())
    if found is None:
        names = ", ".join(p.name for p in PREPROCESSORS)
        raise EngineError(f"unknown ControlNet preprocessor {module!r}; valid: {names}")
    return found


def opencv_modules() -> list[str]:
    """The modules every server offers (no weights needed)."""
    return [p.name for p in PREPROCESSORS if p.compute is not None]


def detect_map(module: Preprocessor, image: np.ndarray, resolution: int, a: float, b: float) -> np.ndarray:
    """The detected map of an OpenCV module (uint8, 3 channels); annotators compute the weighted ones."""
    if module.compute is None:
        raise EngineError(f"the {module.label} preprocessor is not computed with OpenCV")
    return hwc3(module.compute(hwc3(image), resolution, a, b))
