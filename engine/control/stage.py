"""The engine's ControlNet stage: a job's units resolved, checked, loaded and preprocessed into a `ControlHook`.

Every unit's model is looked up (for its family check and its infotext label `name [hash]`), whatever its weight.
Only units that can steer (weight above 0, a non-empty step range) load their ControlNet and run their
preprocessor: the others cost nothing and change nothing. ControlNets stay warm in a cache per checkpoint, so
changing units between jobs reloads only the ControlNets that changed, never the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.config import EngineConfig
from engine.control.annotators import Annotators
from engine.control.hook import ActiveUnit, ControlHook
from engine.control.infotext import unit_params
from engine.control.library import ControlNetFile, ControlNetLibrary
from engine.control.loader import ControlNetCache, check_family, unet_family
from engine.control.maps import detected_map
from engine.control.preprocessors import preprocessor
from engine.control.units import ControlUnit


@dataclass(frozen=True)
class PreparedControl:
    """A job's units made ready: the hook to install (None when no unit can steer) and the infotext entries."""

    hook: ControlHook | None
    params: dict[str, str]


class ControlStage:
    """Owns the ControlNet library, the warm ControlNets and the annotators (one per engine)."""

    def __init__(
        self,
        config: EngineConfig,
        device: torch.device,
        dtype: torch.dtype,
        cache_size: int,
        annotators: Path | None = None,
    ) -> None:
        self.library = ControlNetLibrary(config)
        self.cache = ControlNetCache(cache_size, device, dtype, config.allow_pickle)
        self.annotators = Annotators(annotators, device)

    def files(self, units: tuple[ControlUnit, ...] | list[ControlUnit], unet_config: dict[str, Any], checkpoint: str):
        """Each unit's model file (picked by its module when it names none), checked against the checkpoint's
        family (one line for the first that fails)."""
        files: list[ControlNetFile] = []
        for unit in units:
            if unit.model:
                file = self.library.find(unit.model)
            else:
                file = self.library.default_for(preprocessor(unit.module), unet_family(unet_config))
            check_family(file, unet_config, checkpoint)
            files.append(file)
        return files

    def prepare(
        self,
        units: tuple[ControlUnit, ...] | list[ControlUnit],
        images: list[np.ndarray],
        *,
        unet_config: dict[str, Any],
        checkpoint_key: str,
        checkpoint_name: str,
        width: int,
        height: int,
        classifier_free_guidance: bool,
    ) -> PreparedControl:
        """`units` with their decoded control images (RGB uint8) for a first pass of width x height."""
        files = self.files(units, unet_config, checkpoint_name)
        params = unit_params(list(units), [f.label for f in files])
        active = [
            ActiveUnit(
                unit,
                self.cache.get(file, unet_config, checkpoint_key, checkpoint_name),
                detected_map(unit, image, width, height, self.annotators),
            )
            for unit, image, file in zip(units, images, files)
            if unit.active
        ]
        hook = ControlHook(active, classifier_free_guidance) if active else None
        return PreparedControl(hook, params)
