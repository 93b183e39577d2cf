"""Upscalers by A1111 name: latent interpolation modes, Lanczos / Nearest, and model upscalers (ESRGAN & co.).

Model upscalers are files in `<models_dir>/ESRGAN/`, `RealESRGAN/`, `SwinIR/` or `DAT/`, named by their stem as
A1111 lists them. spandrel detects the architecture from the weights' keys; we read the weights ourselves so
pickles follow the engine's rule (refused unless `allow_pickle`, then `weights_only=True`). Models run in tiles
(A1111's ESRGAN tile of 192 px) with a margin of context around each tile, so memory is bounded by the tile
size, not the image, and tile seams cannot show. A1111's loop is kept: apply the model up to 3 times until the
target is reached, then resize to the exact size with Lanczos.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from engine.errors import EngineError
from engine.models.state_dict import PICKLE_SUFFIXES, load_pickle, loadable
from engine.request import IMAGE_UPSCALERS, LATENT_MODES

if TYPE_CHECKING:
    from PIL import Image

MODEL_DIRS = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT")
MODEL_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
TILE = 192
TILE_MARGIN = 16


def canonical_name(name: str, models: Sequence[str] = ()) -> str:
    """The upscaler's name as listed (case-insensitive match), or EngineError listing the valid ones."""
    known = [*LATENT_MODES, *IMAGE_UPSCALERS, *models]
    wanted = name.strip().lower()
    for candidate in known:
        if candidate.lower() == wanted:
            return candidate
    raise EngineError(f"unknown upscaler {name!r}; valid: {', '.join(known)}")


def is_latent(name: str) -> bool:
    return name in LATENT_MODES


def upscale_latents(latents: torch.Tensor, width: int, height: int, name: str, factor: int) -> torch.Tensor:
    """A1111's latent upscale: interpolate the latents to (height/factor, width/factor) with the mode's settings;
    `factor` is the model's VAE scale (8 for SD and SDXL)."""
    mode, antialias = LATENT_MODES[name]
    size = (height // factor, width // factor)
    return torch.nn.functional.interpolate(latents, size=size, mode=mode, antialias=antialias)


@dataclass(frozen=True)
class UpscalerFile:
    name: str
    path: Path


class UpscalerLibrary:
    """The upscalers under a models dir; keeps the last few loaded models (they are small next to a UNet)."""

    def __init__(
        self, models_dir: Path, *, allow_pickle: bool = False, device: str | torch.device = "cpu", cache_size: int = 2
    ) -> None:
        self.root = Path(models_dir)
        self.allow_pickle = allow_pickle
        self.device = torch.device(device)
        self.cache_size = cache_size
        self._loaded: OrderedDict[Path, Any] = OrderedDict()

    def model_files(self) -> list[UpscalerFile]:
        found: dict[str, UpscalerFile] = {}
        for folder in MODEL_DIRS:
            directory = self.root / folder
            if not directory.is_dir():
                continue
            for path in sorted(directory.rglob("*")):
                if path.suffix.lower() in MODEL_SUFFIXES and path.is_file():
                    found.setdefault(path.stem, UpscalerFile(path.stem, path))
        return list(found.values())

    def names(self) -> list[str]:
        """Every upscaler a job may use: latent modes, Lanczos and Nearest, then the model files it may load (a
        refused pickle is left out; naming it still says why, `load_model`)."""
        return [*LATENT_MODES, *IMAGE_UPSCALERS, *(f.name for f in loadable(self.model_files(), self.allow_pickle))]

    def resolve(self, name: str) -> str:
        return canonical_name(name, [f.name for f in self.model_files()])

    def upscale(self, image: Image.Image, width: int, height: int, name: str) -> Image.Image:
        """`image` enlarged to exactly width x height with the image upscaler `name`."""
        from PIL import Image as PILImage

        name = self.resolve(name)
        if is_latent(name):
            raise EngineError(f"internal: {name} works on latents, not images")
        if name == "Nearest":
            return image.resize((width, height), PILImage.Resampling.NEAREST)
        if name != "Lanczos":
            descriptor = self._model(name)
            for _ in range(3):
                if image.width >= width and image.height >= height:
                    break
                before = image.size
                image = run_tiled(descriptor, image, self.device)
                if image.size == before:
                    break
        if image.size != (width, height):
            image = image.resize((width, height), PILImage.Resampling.LANCZOS)
        return image

    def _model(self, name: str):
        file = next(f for f in self.model_files() if f.name == name)
        if file.path in self._loaded:
            self._loaded.move_to_end(file.path)
            return self._loaded[file.path]
        descriptor = load_model(file.path, allow_pickle=self.allow_pickle, device=self.device)
        self._loaded[file.path] = descriptor
        while len(self._loaded) > self.cache_size:
            self._loaded.popitem(last=False)
        return descriptor


def load_model(path: Path, *, allow_pickle: bool, device: torch.device):
    """A spandrel image-to-image model from `path`; EngineError when it is not an upscaler spandrel knows."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        state = load_pickle(path, allow_pickle)
    else:
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise EngineError(f"cannot read upscaler {path.name}: {exc}") from None
    if isinstance(state, dict) and "params_ema" in state:
        state = state["params_ema"]
    elif isinstance(state, dict) and "params" in state:
        state = state["params"]
    spandrel = _import_spandrel()
    try:
        descriptor = spandrel.ModelLoader(device=device).load_from_state_dict(state)
    except Exception as exc:  # spandrel raises UnsupportedModelError and shape errors
        raise EngineError(f"{path.name} is not an upscaler architecture spandrel knows ({exc})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.scale < 1:
        raise EngineError(f"{path.name} is not an image upscaler")
    return descriptor.eval()


def run_tiled(
    descriptor, image: Image.Image, device: torch.device, tile: int = TILE, margin: int = TILE_MARGIN
) -> Image.Image:
    """Apply the model tile by tile, each tile with `margin` pixels of context that are cut off afterwards."""
    import numpy as np
    from PIL import Image as PILImage

    scale = descriptor.scale
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    _, _, height, width = pixels.shape
    out = torch.zeros((1, 3, height * scale, width * scale))
    with torch.inference_mode():
        for y0 in range(0, height, tile):
            for x0 in range(0, width, tile):
                y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
                py0, px0 = max(y0 - margin, 0), max(x0 - margin, 0)
                py1, px1 = min(y1 + margin, height), min(x1 + margin, width)
                piece = pixels[:, :, py0:py1, px0:px1].to(device, descriptor.dtype)
                result = descriptor(piece).float().cpu()
                oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
                out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = result[
                    :, :, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale
                ]
    array = (out[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return PILImage.fromarray(array)


def _import_spandrel():
    """spandrel, importable without a working torchvision.

    spandrel's package metadata requires torchvision, but only its LaMa (inpainting) and RestoreFormer (face)
    architectures use it. PyPI's torchvision wheels are CUDA builds that cannot load next to torch's CPU build,
    and a broken torchvision breaks transformers' image processors (and so every diffusers pipeline), so sdbot
    installs spandrel without it (`Makefile`). When torchvision cannot be imported, spandrel is imported against
    a stand-in whose functions say what is missing; the stand-in is removed from `sys.modules` right after, so
    nothing else ever sees it.
    """
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    try:
        import torchvision.transforms.functional  # noqa: F401
    except Exception:  # noqa: BLE001 - missing (ImportError) or a mismatched build (RuntimeError, OSError)
        stubs = _torchvision_stand_in()
        saved = {name: sys.modules.get(name) for name in stubs}
        sys.modules.update(stubs)
        try:
            import spandrel
        finally:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
        return spandrel
    import spandrel

    return spandrel


def _torchvision_stand_in() -> dict[str, Any]:
    import enum
    import types

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise EngineError("this model needs torchvision, which sdbot does not install (upscalers do not need it)")

    class InterpolationMode(enum.Enum):
        NEAREST = "nearest"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"

    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.__dict__.update(InterpolationMode=InterpolationMode, rotate=missing, normalize=missing)
    root.__dict__["transforms"] = transforms
    transforms.__dict__["functional"] = functional
    return {"torchvision": root, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional}
