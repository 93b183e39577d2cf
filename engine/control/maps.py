"""A unit's control map: the preprocessor run on its image, then the map fitted to the size being rendered.

The preprocessor runs once per unit and job, at the unit's processor resolution ("Pixel Perfect" computes it from
the image and the first pass's size); the same detected map is then fitted to each pass's size (the first pass,
and the Hires fix pass, which the extension controls too by default).
"""

from __future__ import annotations

import numpy as np

from engine.control.annotators import Annotators
from engine.control.preprocessors import detect_map, preprocessor
from engine.control.sizing import fit_map, latent_aligned, map_to_tensor, pixel_perfect_resolution
from engine.control.units import ControlUnit
from engine.errors import EngineError


def processor_resolution(unit: ControlUnit, image: np.ndarray, width: int, height: int) -> int:
    """The resolution the preprocessor works at: the unit's, or with Pixel Perfect the one that fits the job."""
    if not unit.pixel_perfect:
        return int(unit.processor_res or 0)
    h, w = image.shape[:2]
    return pixel_perfect_resolution(h, w, latent_aligned(height), latent_aligned(width), unit.resize_mode)


def detected_map(
    unit: ControlUnit, image: np.ndarray, width: int, height: int, annotators: Annotators | None = None
) -> np.ndarray:
    """The unit's detected map (uint8, H x W x 3) of `image` (RGB uint8) for a first pass of width x height."""
    module = preprocessor(unit.module)
    resolution = processor_resolution(unit, image, width, height)
    if module.compute is not None:
        return detect_map(module, image, resolution, float(unit.threshold_a or 0), float(unit.threshold_b or 0))
    annotators = annotators or Annotators(None)
    if module not in annotators.offered():
        raise EngineError(annotators.unavailable(module))
    return annotators.detect_map(module, image, resolution)


def fitted(unit: ControlUnit, detected: np.ndarray, width: int, height: int):
    """The map as the ControlNet's input for a pass of width x height: a [1, 3, h, w] tensor in [0, 1]."""
    return map_to_tensor(fit_map(detected, unit.resize_mode, latent_aligned(height), latent_aligned(width)))
