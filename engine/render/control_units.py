"""A job's ControlNet units made ready for the loaded checkpoint: their images decoded and checked here, with the
input-image rules of engine.render.input_image, then handed to the engine's ControlNet stage (engine.control).

Inpainting "Only masked" renders a crop of the image: each control image is cropped the same way first, as
sd-webui-controlnet does (`try_crop_image_with_a1111_mask`): resized to the image's size with the unit's resize
mode, cropped to the rendered region, resized to the job's size (A1111's "Resize and fill")."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.control.stage import ControlStage, PreparedControl
from engine.control.units import ControlUnit
from engine.models.loader import LoadedCheckpoint
from engine.render.inpaint import InpaintStart
from engine.render.input_image import carried_image, resize_image
from engine.request import GenerationRequest

# The unit's resize mode in A1111's `images.resize_image` terms (the extension maps them by their index).
_A1111_MODES = {"Just Resize": "just", "Crop and Resize": "crop", "Resize and Fill": "fill"}


def prepared_control(
    stage: ControlStage,
    request: GenerationRequest,
    ckpt: LoadedCheckpoint,
    loaded: list[Path],
    masked: InpaintStart | None = None,
) -> PreparedControl:
    """The request's units for `ckpt`; ControlNets of checkpoints no longer `loaded` leave the cache first."""
    stage.cache.retain({str(path) for path in loaded})
    if not request.controls:
        return PreparedControl(None, {})
    images = [control_image(unit, request, i, masked) for i, unit in enumerate(request.controls, start=1)]
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


def control_image(unit: ControlUnit, request: GenerationRequest, index: int, masked: InpaintStart | None) -> np.ndarray:
    """Unit `index`'s image (RGB), cropped like the job's image when only the masked region is rendered."""
    image = carried_image(unit.image, unit.image_data, request.limits, f"ControlNet unit {index}'s image")
    prepared = masked.prepared if masked is not None else None
    region = prepared.paste_to if prepared is not None else None
    if prepared is not None and region is not None:
        full_w, full_h = prepared.layer.size
        x, y, w, h = region
        whole = resize_image(image, full_w, full_h, _A1111_MODES[unit.resize_mode])
        image = resize_image(whole.crop((x, y, x + w, y + h)), request.width, request.height, "fill")
    return np.asarray(image)
