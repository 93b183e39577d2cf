"""Inpainting masks, made and used the way A1111 makes and uses them (pure: Pillow, numpy and OpenCV; no torch).

The order is A1111's `StableDiffusionProcessingImg2Img.init` (modules/processing.py): the user's mask becomes binary
(its alpha where it has transparency, else its luminance; > 128 is white = change), is inverted for "Inpaint not
masked", blurred with OpenCV's Gaussian (x then y, kernel 2·int(2.5·σ + 0.5) + 1), and then either

- "Whole picture": resized to the job's size with the job's resize mode; the overlay mask is the blurred mask × 2,
  clipped; or
- "Only masked": the blurred mask's bounding box ± padding, widened to the job's aspect, is cut out of the image and
  the mask, rendered at the job's full size, and pasted back into the original (the overlay mask is the blurred mask).

Masked content other than "original" first fills the masked pixels from their surroundings (A1111's
`masking.fill`). After decoding, the original is composited over the result through the inverted overlay mask
(`apply_overlay`), so every pixel outside the blurred mask is the original's, exactly. The latent-space half (the
latent mask kept at every step, the 9-channel conditioning) belongs to the pipeline; `latent_mask` here is its
pixel-to-latent rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from engine.errors import EngineError
from engine.render.input_image import resize_image

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive), as Pillow's crop and getbbox
Placement = tuple[int, int, int, int]  # x, y, width, height: where an "Only masked" result goes back
Upscale = Callable[[Image.Image, int, int], Image.Image]

MASK_MODES = ("masked", "unmasked")
MASKED_CONTENTS = ("fill", "original", "noise", "nothing")
INPAINT_AREAS = ("whole", "masked")
DEFAULT_BLUR = 4  # A1111's "Mask blur" slider: 0–64, default 4
MAX_BLUR = 64
DEFAULT_PADDING = 32  # A1111's "Only masked padding, pixels": 0–256, default 32
MAX_PADDING = 256

# A1111's labels (its radio buttons and infotext values) for each of sdbot's words.
_A1111_WORDS = {
    "mask mode": {"masked": "Inpaint masked", "unmasked": "Inpaint not masked"},
    "masked content": {"fill": "fill", "original": "original", "noise": "latent noise", "nothing": "latent nothing"},
    "inpaint area": {"whole": "Whole picture", "masked": "Only masked"},
}
_CHOICES = {"mask mode": MASK_MODES, "masked content": MASKED_CONTENTS, "inpaint area": INPAINT_AREAS}
# Infotext keys read back, with the option each one restores; in the order A1111's img2img `init` writes them.
INFOTEXT_OPTIONS = {
    "Mask mode": "mask_mode",
    "Mask blur": "mask_blur",
    "Inpaint area": "inpaint_area",
    "Masked area padding": "padding",
    "Masked content": "masked_content",
}
# Binary: > 128 is white (change), as A1111 rounds an alpha mask.
_THRESHOLD = [0] * 129 + [255] * 127
# A1111's fill: (Gaussian radius, times composited), from the widest blur to the image itself.
_FILL_LAYERS = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))


def choose(name: str, value: object) -> str:
    """`value` as one of sdbot's words for the control `name` ("mask mode", "masked content", "inpaint area");
    A1111's own labels ("Inpaint not masked", "latent noise", "Only masked") are read too, in any case."""
    choices = _CHOICES[name]
    if isinstance(value, str):
        word = " ".join(value.split()).lower()
        if word in choices:
            return word
        for ours, label in _A1111_WORDS[name].items():
            if word == label.lower():
                return ours
    raise EngineError(f"{name} must be {', '.join(choices[:-1])} or {choices[-1]} (got {value!r})")


@dataclass(frozen=True)
class MaskSettings:
    """How a job uses its mask: A1111's inpaint controls in sdbot's words (`GenerationRequest.mask_settings`, whose
    checks they have passed)."""

    blur: int = DEFAULT_BLUR
    mode: str = "masked"
    content: str = "original"
    area: str = "whole"
    padding: int = DEFAULT_PADDING

    def infotext_params(self) -> dict[str, object]:
        """A1111's infotext keys for these settings, in the order it adds them; defaults are not written (A1111
        writes no "Masked content: original", no "Inpaint area: Whole picture", and "Mask blur" only when > 0)."""
        params: dict[str, object] = {}
        if self.mode == "unmasked":
            params["Mask mode"] = _A1111_WORDS["mask mode"]["unmasked"]
        if self.blur > 0:
            params["Mask blur"] = self.blur
        if self.area == "masked":
            params["Inpaint area"] = _A1111_WORDS["inpaint area"]["masked"]
            params["Masked area padding"] = self.padding
        if self.content != "original":
            params["Masked content"] = _A1111_WORDS["masked content"][self.content]
        return params


def options_from_infotext(params: Mapping[str, str]) -> dict[str, object]:
    """The request options an infotext's inpaint keys restore (never the mask itself); a key that is absent
    leaves its option alone, as pasting into A1111 does. A value that does not read is an EngineError."""
    options: dict[str, object] = {}
    for key, option in INFOTEXT_OPTIONS.items():
        if key not in params:
            continue
        value = params[key].strip()
        if option in ("mask_blur", "padding"):
            if not value.isdigit():
                raise EngineError(f"the infotext's {key} is {value!r}, which is not a whole number")
            options[option] = int(value)
        else:
            try:
                options[option] = choose(key.lower(), value)
            except EngineError as err:
                raise EngineError(f"the infotext's {key} is {value!r}, which cannot be used: {err}") from None
    return options


# --- the mask --------------------------------------------------------------------------------------------------


def binary_mask(image: Image.Image, size: tuple[int, int] | None = None) -> Image.Image:
    """The user's mask as `L` with only 0 (keep) and 255 (change), stretched to `size` first when given.

    Its alpha channel when it has real transparency (opaque = change, as A1111 reads a painted mask), else its
    luminance (white = change); 16-bit images are read on their full scale.
    """
    channel = _alpha(image)
    if channel is None:
        channel = _luminance(image)
    if size is not None and channel.size != size:
        channel = channel.resize(size, Image.Resampling.LANCZOS)
    return channel.point(_THRESHOLD)


def _alpha(image: Image.Image) -> Image.Image | None:
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in image.info:
        return None
    alpha = image.convert("RGBA").getchannel("A")
    return None if alpha.getextrema() == (255, 255) else alpha


def _luminance(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I"):  # 16-bit grey: Pillow's convert("L") would clip everything above 255 to white
        return Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8), "L")
    return image.convert("L")


def invert(mask: Image.Image) -> Image.Image:
    return ImageOps.invert(mask.convert("L"))


def blur_kernel_size(sigma: int) -> int:
    """A1111's kernel for a mask blur of `sigma`: 2·int(2.5·σ + 0.5) + 1 (4 → 21)."""
    return 2 * int(2.5 * sigma + 0.5) + 1


def blur(mask: Image.Image, sigma: int) -> Image.Image:
    """A1111's mask blur: OpenCV's 8-bit Gaussian along x, then along y (the same σ both ways); 0 = none."""
    if sigma <= 0:
        return mask
    import cv2

    size = blur_kernel_size(sigma)
    pixels = cv2.GaussianBlur(np.asarray(mask.convert("L")), (size, 1), sigma)
    pixels = cv2.GaussianBlur(pixels, (1, size), sigma)
    return Image.fromarray(pixels, "L")


def doubled(mask: Image.Image) -> Image.Image:
    """The "Whole picture" overlay mask: the blurred mask × 2, clipped to 255 (full change from half-way up)."""
    pixels = np.clip(np.asarray(mask, dtype=np.float32) * 2, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "L")


def crop_region(mask: Image.Image, padding: int) -> Box | None:
    """The bounding box of the mask's non-zero pixels grown by `padding` on every side, inside the image; None
    when the mask is empty (A1111's `get_crop_region_v2`)."""
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height)


def expand_to_aspect(box: Box, width: int, height: int, image_width: int, image_height: int) -> Box:
    """`box` widened (or heightened) about its centre to the aspect of `width`×`height`, shifted back inside the
    image and clipped to it when it cannot fit (A1111's `expand_crop_region`, integer rules and all)."""
    x1, y1, x2, y2 = box
    target = width / height
    if (x2 - x1) / (y2 - y1) > target:
        y1, y2 = _grow(y1, y2, int((x2 - x1) / target - (y2 - y1)), image_height)
    else:
        x1, x2 = _grow(x1, x2, int((y2 - y1) * target - (x2 - x1)), image_width)
    return x1, y1, x2, y2


def _grow(lo: int, hi: int, extra: int, limit: int) -> tuple[int, int]:
    lo, hi = lo - extra // 2, hi + extra - extra // 2
    if hi >= limit:
        lo, hi = lo - (hi - limit), limit
    if lo < 0:
        lo, hi = 0, hi - lo
    return lo, min(hi, limit)


# --- pixels ----------------------------------------------------------------------------------------------------


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's `masking.fill`: the masked pixels painted with ever less blurred copies of the unmasked ones."""
    source = Image.new("RGBa", image.size)
    source.paste(image.convert("RGBA").convert("RGBa"), mask=invert(mask))
    filled = Image.new("RGBA", image.size)
    for radius, times in _FILL_LAYERS:
        layer = source.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(times):
            filled.alpha_composite(layer)
    return filled.convert("RGB")


def overlay(image: Image.Image, overlay_mask: Image.Image) -> Image.Image:
    """The original as A1111 lays it over the result: RGBA with alpha = 255 − overlay mask (premultiplied on the
    way, as A1111's RGBa paste does)."""
    layer = Image.new("RGBa", image.size)
    layer.paste(image.convert("RGBA").convert("RGBa"), mask=invert(overlay_mask))
    return layer.convert("RGBA")


def composite(
    result: Image.Image, layer: Image.Image, paste_to: Placement | None, upscale: Upscale | None = None
) -> Image.Image:
    """A1111's `apply_overlay`: an "Only masked" result is first resized into `paste_to` (x, y, w, h) on a clear
    canvas of the original's size; then the original (`overlay`'s layer) goes over it."""
    if paste_to is not None:
        x, y, w, h = paste_to
        canvas = Image.new("RGBA", layer.size)
        canvas.paste(resize_image(result, w, h, "crop", upscale), (x, y))
        result = canvas
    out = result.convert("RGBA")
    out.alpha_composite(layer)
    return out.convert("RGB")


def latent_mask(mask: Image.Image, width: int, height: int) -> np.ndarray:
    """The latent mask, `height`×`width` of 0.0 (keep) and 1.0 (change): the processing mask shrunk bicubically
    (Pillow's default for RGB, as A1111 resizes it) and rounded half to even."""
    small = mask.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    return np.around(np.asarray(small, dtype=np.float32)[..., 0] / 255)


# --- one job's images -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """An inpaint job's pixels before encoding, and what puts the original back after decoding."""

    image: Image.Image  # width×height RGB to encode: the image (or its crop), filled unless content is original
    mask: Image.Image  # width×height `L`: the blurred processing mask (latent mask, 9-channel conditioning)
    layer: Image.Image  # the original as the overlay (RGBA), at the delivered size
    paste_to: Placement | None  # "Only masked": (x, y, w, h) of the rendered crop in the original

    def finish(self, result: Image.Image, upscale: Upscale | None = None) -> Image.Image:
        """The delivered image: the original composited over the decoded `result`."""
        return composite(result, self.layer, self.paste_to, upscale)


def empty_mask_message(mode: str) -> str:
    painted = "all white, and --mask-mode unmasked changes the black part" if mode == "unmasked" else "all black"
    return f"the mask marks nothing to change (it is {painted}; white = change)"


def prepare(
    image: Image.Image,
    mask: Image.Image,
    settings: MaskSettings,
    width: int,
    height: int,
    resize_mode: str = "just",
    upscale: Upscale | None = None,
) -> Prepared:
    """A1111's img2img `init` for one image and its binary mask (the image's size), up to the pixels it encodes.

    "Whole picture" resizes image and mask to `width`×`height` with `resize_mode`; "Only masked" renders the crop
    at `width`×`height` and delivers the original's size. `upscale` enlarges the image where it must grow (A1111's
    "Upscaler for img2img"); masks always use Lanczos, as A1111's `resize_image` does for `L` images.
    """
    if settings.mode == "unmasked":
        mask = invert(mask)
    if mask.getbbox() is None:
        raise EngineError(empty_mask_message(settings.mode))
    mask = blur(mask, settings.blur)
    if settings.area == "masked":
        box = crop_region(mask, settings.padding)
        assert box is not None  # blurring a non-empty mask leaves it non-empty
        x1, y1, x2, y2 = expand_to_aspect(box, width, height, *mask.size)
        layer = overlay(image, mask)
        work = resize_image(image.crop((x1, y1, x2, y2)), width, height, "fill", upscale)
        mask = resize_image(mask.crop((x1, y1, x2, y2)), width, height, "fill").convert("L")
        paste_to: Placement | None = (x1, y1, x2 - x1, y2 - y1)
    else:
        work = resize_image(image, width, height, resize_mode, upscale)
        mask = resize_image(mask, width, height, resize_mode).convert("L")
        layer = overlay(work, doubled(mask))
        paste_to = None
    if settings.content != "original":
        work = fill(work, mask)
    return Prepared(work, mask, layer, paste_to)
