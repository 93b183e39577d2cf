"""A job's ControlNet units made ready for the loaded checkpoint: their images decoded and checked here, with the
input-image rules of engine.render.input_image, then handed to the engine's ControlNet stage (engine.control)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.control.stage import ControlStage, PreparedControl
from engine.models.loader import LoadedCheckpoint
from engine.render.input_image import carried_image
from engine.request import GenerationRequest


def prepared_control(
    stage: ControlStage, request: GenerationRequest, ckpt: LoadedCheckpoint, loaded: list[Path]
) -> PreparedControl:
    """The request's units for `ckpt`; ControlNets of checkpoints no longer `loaded` leave the cache first."""
    stage.cache.retain({str(path) for path in loaded})
    if not request.controls:
        return PreparedControl(None, {})
    images = [
        np.asarray(carried_image(unit.image, unit.image_data, request.limits, f"ControlNet unit {i}'s image"))
        for i, unit in enumerate(request.controls, start=1)
    ]
    return stage.prepare(
        request.controls,
        images,
        unet_config=dict(ckpt.pipe.unet.config),
        checkpoint_key=str(ckpt.file.path.resolve()),
        checkpoint_name=ckpt.file.name,
        width=request.width,
        height=request.height,
        classifier_free_guidance=request.cfg_scale > 1,
    )
