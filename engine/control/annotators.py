"""Preprocessors that run a network (depth), offered only when the admin names a local folder with their weights.

The folder holds one subfolder per module, named as the module's annotator (`depth_anything/`,
`depth_anything_v2/`), each a transformers depth-estimation model saved with `save_pretrained` (e.g.
LiheYoung/depth-anything-large-hf, depth-anything/Depth-Anything-V2-Large-hf), downloaded once by the admin and
loaded offline; sdbot never downloads. A module whose subfolder is missing is not offered.

The depth map is computed as sd-webui-controlnet computes it (annotator/depth_anything.py): the image, padded to the
processor resolution, has its channels swapped (the extension converts "BGR to RGB" an image that is already RGB),
is scaled so its short side is at least 518 pixels in multiples of 14 (cubic), normalised with ImageNet's mean and
deviation; the predicted depth is resized back (bilinear), stretched to 0..255 and truncated to uint8.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from engine.control.preprocessors import PREPROCESSORS, Preprocessor, hwc3, resize_with_pad
from engine.errors import EngineError

log = logging.getLogger(__name__)

DEPTH_ANYTHING_SIDE = 518
DEPTH_ANYTHING_MULTIPLE = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _multiple_at_least(x: float, multiple: int, minimum: int) -> int:
    """Depth Anything's `constrain_to_multiple_of` with a lower bound: the nearest multiple, else the next one up."""
    y = int(np.round(x / multiple) * multiple)
    if y < minimum:
        y = int(np.ceil(x / multiple) * multiple)
    return y


def depth_anything_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of Depth Anything's input: aspect kept, both sides at least 518, multiples of 14."""
    scale = max(DEPTH_ANYTHING_SIDE / height, DEPTH_ANYTHING_SIDE / width)
    return (
        _multiple_at_least(scale * height, DEPTH_ANYTHING_MULTIPLE, DEPTH_ANYTHING_SIDE),
        _multiple_at_least(scale * width, DEPTH_ANYTHING_MULTIPLE, DEPTH_ANYTHING_SIDE),
    )


def depth_anything_map(model: Any, padded: np.ndarray) -> np.ndarray:
    """The extension's depth map (uint8, H x W) of a padded RGB image, with a transformers Depth Anything model."""
    import cv2
    import torch

    height, width = padded.shape[:2]
    swapped = padded[:, :, ::-1].astype(np.float64) / 255.0
    new_h, new_w = depth_anything_size(height, width)
    resized = cv2.resize(swapped, (new_w, new_h), interpolation=cv2.INTER_CUBIC)
    image = (resized - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    param = next(model.parameters())
    pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32))[None]
    with torch.no_grad():
        depth = model(pixel_values=pixels.to(param.device, param.dtype)).predicted_depth.float()
    depth = torch.nn.functional.interpolate(depth[None], (height, width), mode="bilinear", align_corners=False)[0, 0]
    depth = (depth - depth.min()) / (depth.max() - depth.min()) * 255.0
    return depth.cpu().numpy().astype(np.uint8)


class Annotators:
    """The weighted preprocessors of one annotator folder (None: none offered), loaded on first use and kept."""

    def __init__(self, folder: Path | None, device: Any = "cpu") -> None:
        self.folder = Path(folder) if folder else None
        self.device = device
        self._models: dict[str, Any] = {}

    def offered(self) -> list[Preprocessor]:
        """The weighted modules whose weights are in the folder."""
        if self.folder is None:
            return []
        return [p for p in PREPROCESSORS if p.annotator and (self.folder / p.annotator / "config.json").exists()]

    def _model(self, module: Preprocessor) -> Any:
        name = module.annotator
        if name is None or self.folder is None or not (self.folder / name / "config.json").exists():
            raise EngineError(self.unavailable(module))
        if name not in self._models:
            from transformers import AutoModelForDepthEstimation

            path = self.folder / name
            try:
                model = AutoModelForDepthEstimation.from_pretrained(str(path), local_files_only=True)
            except (OSError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise EngineError(
                    f"the {module.label} preprocessor's weights in {path} cannot be loaded ({first})"
                ) from None
            self._models[name] = model.to(self.device).eval()
            log.info("loaded the %s preprocessor from %s", module.label, path)
        return self._models[name]

    def unavailable(self, module: Preprocessor) -> str:
        """Why `module` is not offered here, in one line."""
        if module.annotator is None:
            return (
                f"the {module.label} preprocessor is not available in sdbot; give an image already preprocessed "
                f"with module none"
            )
        where = f"{self.folder / module.annotator}" if self.folder else "a folder named in [engine] control_annotators"
        return (
            f"the {module.label} preprocessor needs its weights in {where} (a transformers depth-estimation model, "
            f"downloaded by the bot's admin); use canny, none or another OpenCV preprocessor"
        )

    def detect_map(self, module: Preprocessor, image: np.ndarray, resolution: int) -> np.ndarray:
        """The detected map (uint8, 3 channels) of a weighted module."""
        padded, remove_pad = resize_with_pad(image, resolution)
        return hwc3(remove_pad(depth_anything_map(self._model(module), padded)))
