"""Live previews of a job in progress: latents -> a small RGB image, cheaply, from the worker thread.

Two methods, chosen per model family:

- "Approx cheap" (A1111's `sd_vae_approx.cheap_approximation`): each latent pixel's 4 channels times a 4x3
  matrix give its RGB, so the preview has the latent's size (W/8 x H/8; 64x64 for a 512x512 job) and costs
  next to nothing. The matrices below are A1111's, verbatim. A1111 adds no bias for either family (SD.Next
  and ComfyUI fit their own SDXL matrices with a bias, which belongs to their matrix, not to this one); the
  `bias` field is there for such a table and is zero here.
- TAESD, a tiny autoencoder (diffusers `AutoencoderTiny`), when the operator provides its weights: a
  full-size preview (8x the latent) that looks like the final image. Where the weights go (first match wins):

      <models_dir>/VAE-taesd/taesd/                       SD 1.x/2.x, diffusers folder (madebyollin/taesd:
                                                          config.json + diffusion_pytorch_model.safetensors)
      <models_dir>/VAE-taesd/taesd_decoder.safetensors    SD 1.x/2.x, the original TAESD decoder file
      <models_dir>/VAE-taesd/taesdxl/                     SDXL, diffusers folder (madebyollin/taesdxl)
      <models_dir>/VAE-taesd/taesdxl_decoder.safetensors  SDXL, the original TAESD decoder file

  `VAE-taesd` is A1111's folder name; the `taesd_decoder.pth` files A1111 downloads there are pickles and are
  read (weights only) when `allow_pickle` is on, like every other pickle. A file that cannot be loaded is logged
  once and the family falls back to "Approx cheap": a preview never fails a job.

Both methods take the latents the sampler works on (already multiplied by the VAE's scaling factor), as A1111's
previews do, and return a PIL image of the first image in the batch given.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from engine.errors import EngineError

log = logging.getLogger(__name__)

TAESD_DIR = "VAE-taesd"
TAESD_FACTOR = 8  # TAESD decodes the latents of a VAE that scales by 8 (SD's and SDXL's), to 8x their size
# family -> (diffusers folder name, original decoder file stem)
TAESD_NAMES = {"sd": ("taesd", "taesd_decoder"), "sdxl": ("taesdxl", "taesdxl_decoder")}


@dataclass(frozen=True)
class LatentRGB:
    """A linear latent -> RGB map: rgb[c] = sum_l latent[l] * matrix[l][c] + bias[c], in [-1, 1]."""

    matrix: tuple[tuple[float, float, float], ...]
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)


# A1111 modules/sd_vae_approx.py, cheap_approximation: one row per latent channel, one column per RGB channel.
APPROX_CHEAP: dict[str, LatentRGB] = {
    "sd": LatentRGB(
        (
            (0.298, 0.207, 0.208),
            (0.187, 0.286, 0.173),
            (-0.158, 0.189, 0.264),
            (-0.184, -0.271, -0.473),
        )
    ),
    "sdxl": LatentRGB(
        (
            (0.3448, 0.4168, 0.4395),
            (-0.1953, -0.0290, 0.0250),
            (0.1074, 0.0886, -0.0163),
            (-0.3730, -0.2499, -0.2088),
        )
    ),
}


def approx_cheap(latents: torch.Tensor, family: str = "sd") -> torch.Tensor:
    """(..., 4, h, w) latents -> (..., 3, h, w) RGB in about [-1, 1] (A1111's einsum "...lxy,lr -> ...rxy")."""
    table = APPROX_CHEAP.get(family, APPROX_CHEAP["sd"])
    latents = latents.detach().float().cpu()
    matrix = torch.tensor(table.matrix, dtype=torch.float32)
    if latents.shape[-3] != matrix.shape[0]:
        raise EngineError(f"no cheap preview for {latents.shape[-3]}-channel latents")
    rgb = torch.einsum("...lxy,lr -> ...rxy", latents, matrix)
    return rgb + torch.tensor(table.bias, dtype=torch.float32).view(3, 1, 1)


def to_image(rgb: torch.Tensor) -> Image.Image:
    """One (3, h, w) image in [-1, 1] -> PIL, as A1111 shows previews: clamp((x + 1) / 2, 0, 1) * 255."""
    x = torch.clamp((rgb.detach().float().cpu() + 1.0) / 2.0, 0.0, 1.0)
    array = (255.0 * x).permute(1, 2, 0).numpy().astype("uint8")
    return Image.fromarray(array)


def cheap_preview(latents: torch.Tensor, family: str = "sd") -> Image.Image:
    """The first image of `latents` (B, 4, h, w) as an "Approx cheap" preview of the latent's size."""
    if latents.dim() == 3:
        latents = latents.unsqueeze(0)
    return to_image(approx_cheap(latents[0], family))


def find_taesd(models_dir: str | Path, family: str, allow_pickle: bool = False) -> Path | None:
    """Where the TAESD decoder for `family` is (see the module docstring), or None."""
    names = TAESD_NAMES.get(family)
    if names is None:
        return None
    folder_name, stem = names
    root = Path(models_dir) / TAESD_DIR
    folder = root / folder_name
    if (folder / "config.json").is_file():
        return folder
    suffixes = (".safetensors",) + ((".pth", ".pt", ".bin") if allow_pickle else ())
    for suffix in suffixes:
        if (root / (stem + suffix)).is_file():
            return root / (stem + suffix)
    return None


def _default_decoder():
    """The decoder of a default `AutoencoderTiny` (TAESD's layout: 64 channels, blocks (3, 3, 3, 1), 8x up)."""
    from diffusers.models.autoencoders.vae import DecoderTiny

    return DecoderTiny(
        in_channels=4,
        out_channels=3,
        num_blocks=(3, 3, 3, 1),
        block_out_channels=(64, 64, 64, 64),
        upsampling_scaling_factor=2,
        act_fn="relu",
        upsample_fn="nearest",
    )


def original_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original TAESD decoder keys ("3.conv.0.weight", an nn.Sequential starting with Clamp) -> `DecoderTiny`'s
    ("layers.2.conv.0.weight": the clamp is not a layer there, so every index moves down by one)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("decoder.")
        index, _, rest = key.partition(".")
        if not index.isdigit() or int(index) < 1:
            raise EngineError(f"not a TAESD decoder weight: {key!r}")
        out[f"layers.{int(index) - 1}.{rest}"] = value
    return out


def load_taesd_decoder(path: Path, allow_pickle: bool = False) -> torch.nn.Module:
    """A TAESD decoder module (latents -> images in [-1, 1]) from a diffusers folder or an original file."""
    if path.is_dir():
        from diffusers import AutoencoderTiny

        try:
            model = AutoencoderTiny.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EngineError(f"TAESD folder {path.name} could not be loaded ({exc})") from None
        return model.decoder.eval()
    from engine.models.state_dict import read_state_dict

    state = read_state_dict(path, allow_pickle)
    decoder = _default_decoder()
    try:
        decoder.load_state_dict(original_to_diffusers(state), strict=True)
    except RuntimeError as exc:
        raise EngineError(f"{path.name} is not a TAESD decoder ({str(exc).splitlines()[0][:200]})") from None
    return decoder.eval()


class Previewer:
    """Makes step previews for the worker: TAESD where its weights are installed, "Approx cheap" otherwise.

    Called from the worker thread only; decoders are loaded on first use and kept (they are ~5 MB).
    """

    def __init__(
        self,
        models_dir: str | Path,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        allow_pickle: bool = False,
    ) -> None:
        self.models_dir = Path(models_dir)
        self.device = torch.device(device)
        self.dtype = dtype
        self.allow_pickle = allow_pickle
        self._decoders: dict[str, Any] = {}  # family -> decoder module, or None for "use approx cheap"
        self._lock = threading.Lock()

    def method(self, family: str) -> str:
        """ "taesd" or "approx-cheap": what `preview` will use for this family."""
        return "taesd" if self._decoder(family) is not None else "approx-cheap"

    def _decoder(self, family: str):
        with self._lock:
            if family not in self._decoders:
                self._decoders[family] = None
                path = find_taesd(self.models_dir, family, self.allow_pickle)
                if path is not None:
                    try:
                        decoder = load_taesd_decoder(path, self.allow_pickle)
                        self._decoders[family] = decoder.to(self.device, self.dtype)
                        log.info("live previews for %s models: TAESD from %s", family, path)
                    except EngineError as exc:
                        log.warning("TAESD %s not usable, previews fall back to Approx cheap: %s", path, exc)
            return self._decoders[family]

    @torch.inference_mode()
    def preview(self, latents: torch.Tensor, family: str = "sd", vae_scale_factor: int = TAESD_FACTOR) -> Image.Image:
        """The first image of `latents` ((B, 4, h, w) or (4, h, w)) as a preview image. TAESD only knows the latents
        of VAEs that scale by 8: a model with another latent grid (`vae_scale_factor`) gets Approx cheap."""
        if latents.dim() == 3:
            latents = latents.unsqueeze(0)
        decoder = self._decoder(family) if vae_scale_factor == TAESD_FACTOR else None
        if decoder is not None:
            try:
                sample = latents[:1].to(self.device, self.dtype)
                return to_image(decoder(sample)[0])
            except RuntimeError as exc:  # a decoder that does not fit these latents: say so once, go cheap
                log.warning("TAESD preview failed (%s); using Approx cheap for %s", exc, family)
                with self._lock:
                    self._decoders[family] = None
        return cheap_preview(latents, family)
