"""`GenerationRequest`: one job's settings, validated on construction and immutable afterwards.

Field meanings are A1111's: `clip_skip` 1 = last layer, `seed` -1 = random, `sampler` an A1111 sampler name
(an old combined name such as "DPM++ 2M Karras" is split into sampler and schedule), `vae` is `auto`, `none`, a
VAE name from the models dir or a path. Checks that need the models dir (does the VAE exist? does CLIP skip fit
the encoder?) happen when the job is rendered, with the same error type.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

from engine.config import Limits
from engine.control.units import ControlUnit, checked_units
from engine.errors import EngineError
from engine.networks.tags import network_set
from engine.render.masking import DEFAULT_BLUR, DEFAULT_PADDING, MAX_BLUR, MAX_PADDING, MaskSettings, choose
from engine.render.outpaint import parse_margins
from engine.samplers import normalize_sampler

IMG2IMG_DEFAULT_STRENGTH = 0.75  # A1111's "Denoising strength" default for img2img
HIRES_DEFAULT_STRENGTH = 0.7  # and for the Hires. fix second pass


def strength_in_effect(strength: float | None, *, img2img: bool, hires: float) -> float | None:
    """The typed strength, else A1111's default for the mode; None for plain txt2img. One rule for the engine and
    for the result's embed, which only has the stored options."""
    if strength is not None:
        return strength
    if img2img:
        return IMG2IMG_DEFAULT_STRENGTH
    return HIRES_DEFAULT_STRENGTH if hires > 1.0 else None


# Fields that are not a job's options: the limits it was checked against, the start image's and the mask's bytes in
# transit, and whether anyone will see its live previews.
NOT_OPTIONS = ("limits", "init_image_data", "mask_data", "previews")
MAX_SEED = 2**32 - 1
MAX_CLIP_SKIP = 12
MIN_SIDE = 64
MAX_HIRES_SCALE = 4.0
RESIZE_MODES = ("just", "crop", "fill")
# A1111's latent upscale modes: name -> (torch interpolate mode, antialias); with the image upscalers, the
# built-in names a request's `hires_upscaler` may take (model upscalers are looked up at render).
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS = ("Lanczos", "Nearest")


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    steps: int = 20
    cfg_scale: float = 7.0
    sampler: str = "DPM++ 2M Karras"
    schedule: str = "Automatic"
    seed: int = -1
    width: int = 512
    height: int = 512
    batch_size: int = 1
    clip_skip: int = 1
    vae: str = "auto"
    model: str = ""
    # img2img: a path to the start image (checked by `engine.render.input_image`), A1111's "Denoising
    # strength" (None: 0.75 for img2img, 0.7 for the Hires second pass) and resize mode (just | crop | fill).
    init_image: str = ""
    strength: float | None = None
    resize_mode: str = "just"
    # Hires. fix (txt2img only): scale 0 = off; hires_steps 0 = the same as steps; an upscaler name.
    hires: float = 0.0
    hires_steps: int = 0
    hires_upscaler: str = "Latent"
    # Inpainting (with a start image): a path to the mask (white = change; checked like the start image) and
    # A1111's inpaint controls; or `outpaint`, "L,T,R,B" pixels added around the start image, whose new border is
    # the mask. `masked_content` None: "original" with a mask, "fill" for outpainting (`mask_settings`).
    mask: str = ""
    mask_blur: int = DEFAULT_BLUR
    mask_mode: str = "masked"
    masked_content: str | None = None
    inpaint_area: str = "whole"
    padding: int = DEFAULT_PADDING
    outpaint: str = ""
    # ControlNet units (engine/control/units.py): each with its control image (a path on the bot's host,
    # its bytes carried by `portable()`), module, model, weight, steps and mode; at most `max_controlnet_units`.
    controls: tuple[ControlUnit, ...] = ()
    # Dynamic prompts ({a|b}, __wildcards__; engine/render/dynamic_prompts.py): False draws image i's prompt from
    # its seed; True gives image i the i-th combination (at most one image per combination).
    combinatorial: bool = False
    limits: Limits = field(default=Limits(), compare=False, repr=False)
    # The start image's and the mask's bytes, for a worker on another machine (`portable()`); never stored, never
    # an option.
    init_image_data: bytes = field(default=b"", compare=False, repr=False)
    mask_data: bytes = field(default=b"", compare=False, repr=False)
    # False: nobody will see live previews of this job (the server has them off), so the worker makes none: a TAESD
    # decode every `preview_every` steps is a few per cent of a GPU render, spent for nothing.
    previews: bool = field(default=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        lim = self.limits
        _check_text("prompt", self.prompt, lim.max_prompt_chars)
        _check_text("negative prompt", self.negative_prompt, lim.max_prompt_chars)
        network_set(self.prompt, self.negative_prompt)  # a malformed <lora:…> tag fails here, with its text
        _check_int("steps", self.steps, 1, lim.max_steps)
        _check_float("CFG scale", self.cfg_scale, 1.0, 30.0)
        sampler, schedule = normalize_sampler(self.sampler, self.schedule)
        object.__setattr__(self, "sampler", sampler)
        object.__setattr__(self, "schedule", schedule)
        _check_int("seed", self.seed, -1, MAX_SEED)
        _check_int("batch size", self.batch_size, 1, lim.max_batch)
        _check_int("CLIP skip", self.clip_skip, 1, MAX_CLIP_SKIP)
        if not isinstance(self.combinatorial, bool):
            raise EngineError(f"combinatorial must be true or false (got {self.combinatorial!r})")
        for name, value in (("width", self.width), ("height", self.height)):
            _check_int(name, value, MIN_SIDE, lim.max_side)
            if value % 8:
                raise EngineError(f"{name} must be a multiple of 8 (got {value}); try {value // 8 * 8 or 8}")
        if self.width * self.height > lim.max_pixels:
            raise EngineError(
                f"size {self.width}x{self.height} is {self.width * self.height} pixels; "
                f"the limit is {lim.max_pixels} pixels (e.g. {_square(lim.max_pixels)})"
            )
        if not isinstance(self.vae, str) or not self.vae.strip():
            raise EngineError("VAE must be 'auto', 'none', a VAE name or a path")
        if not isinstance(self.model, str):
            raise EngineError("model must be a checkpoint name or a path")
        object.__setattr__(self, "vae", self.vae.strip())
        object.__setattr__(self, "model", self.model.strip())
        _check_img2img_fields(self)
        _check_inpaint_fields(self)
        _check_hires_fields(self)
        object.__setattr__(self, "controls", checked_units(self.controls, lim.max_controlnet_units))

    @property
    def sampler_label(self) -> str:
        """The sampler as users type it: "DPM++ 2M Karras", "Euler a"."""
        return self.sampler if self.schedule == "Automatic" else f"{self.sampler} {self.schedule}"

    def check_latent_grid(self, factor: int) -> None:
        """EngineError unless the sizes fit the model's latent grid: a VAE that scales by `factor` needs sides that
        are multiples of it (A1111's multiples of 8 fit SD and SDXL, whose factor is 8)."""
        sizes = [("size", (self.width, self.height))]
        if self.hires_enabled:
            sizes.append((f"Hires ×{self.hires:g} size", self.final_size))
        for what, (width, height) in sizes:
            if width % factor or height % factor:
                fit = f"{max(factor, width // factor * factor)}x{max(factor, height // factor * factor)}"
                raise EngineError(
                    f"{what} {width}x{height} does not fit this model: its VAE scales by {factor}, so width and "
                    f"height must be multiples of {factor}; try {fit}"
                )

    def with_seed(self) -> GenerationRequest:
        """This request with a concrete seed: -1 becomes a random seed in [0, 2**32 - 2], as A1111 draws it."""
        if self.seed != -1:
            return self
        return self.replace(seed=random.randrange(0, MAX_SEED))

    def seeds(self) -> list[int]:
        """Image i of a batch uses seed + i (A1111)."""
        if self.seed == -1:
            raise EngineError("resolve the random seed first (with_seed)")
        return [self.seed + i for i in range(self.batch_size)]

    def portable(self) -> GenerationRequest:
        """This request with its start image's, mask's and control images' bytes inside, so it renders the same on
        any machine (Ray replicas): `init_image`, `mask` and the units' images are paths on the bot's host (checked
        files). Read once, at submission; checked again at render."""
        from engine.render.input_image import checked_input_limits, read_input_bytes

        limits = checked_input_limits(self.limits)
        changes: dict[str, Any] = {}
        if self.init_image and not self.init_image_data:
            changes["init_image_data"] = read_input_bytes(self.init_image, limits)
        if self.mask and not self.mask_data:
            changes["mask_data"] = read_input_bytes(self.mask, limits, "the mask")
        if any(not unit.image_data for unit in self.controls):
            changes["controls"] = tuple(
                unit if unit.image_data else unit.replace(image_data=read_input_bytes(unit.image, limits))
                for unit in self.controls
            )
        return self.replace(**changes) if changes else self

    def without_image_data(self) -> GenerationRequest:
        """This request without the images' bytes in transit (a result carries back only the paths)."""
        units = tuple(unit.replace(image_data=b"") for unit in self.controls)
        return self.replace(init_image_data=b"", mask_data=b"", controls=units)

    def replace(self, **changes: Any) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    def batch_key(self) -> tuple:
        """Jobs with equal keys can share one diffusers call (the worker's batching): LoRAs are merged into the
        weights, so only jobs with the same LoRA set batch together."""
        return (
            self.model,
            self.vae,
            self.clip_skip,
            self.width,
            self.height,
            self.steps,
            self.sampler,
            self.schedule,
            self.cfg_scale,
            self.init_image,
            self.strength,
            self.resize_mode,
            self.hires,
            self.hires_steps,
            self.hires_upscaler,
            self.mask,
            self.outpaint,
            self.mask_settings if self.is_inpaint else None,
            self.controls,
            network_set(self.prompt, self.negative_prompt),
        )

    @property
    def is_img2img(self) -> bool:
        return bool(self.init_image)

    @property
    def is_inpaint(self) -> bool:
        """img2img with a mask, or outpainting (whose mask is the new border)."""
        return bool(self.mask or self.outpaint)

    @property
    def mask_settings(self) -> MaskSettings:
        """The inpaint controls in effect; masked content defaults to "fill" for outpainting, as A1111's poor man's
        outpainting sets it (the new border starts black), else to A1111's "original"."""
        content = self.masked_content or ("fill" if self.outpaint else "original")
        return MaskSettings(self.mask_blur, self.mask_mode, content, self.inpaint_area, self.padding)

    @property
    def denoising_strength(self) -> float | None:
        """The strength in effect: the typed one, else A1111's default for the mode; None for plain txt2img."""
        return strength_in_effect(self.strength, img2img=self.is_img2img, hires=self.hires)

    @property
    def hires_enabled(self) -> bool:
        return self.hires > 1.0 and not self.is_img2img

    @property
    def final_size(self) -> tuple[int, int]:
        """The size of the delivered image: the Hires target when Hires is on, else width x height."""
        if not self.hires_enabled:
            return self.width, self.height
        return hires_size(self.width, self.height, self.hires)

    def options(self) -> dict[str, Any]:
        """The fields as plain data (for storage and display), without the limits."""
        data = dataclasses.asdict(self)
        for name in NOT_OPTIONS:
            data.pop(name)
        data["controls"] = [unit.options() for unit in self.controls]
        return data


def parse_size(text: str) -> tuple[int, int]:
    """'768x512' -> (768, 512); anything else is a user error saying the form expected."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        width, height = (int(p.strip()) for p in parts)
    except ValueError:
        raise EngineError(f"size must look like WIDTHxHEIGHT, e.g. 512x768 (got {text!r})") from None
    return width, height


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """A1111's target `int(side * scale)`, rounded down to a multiple of 8 (SD's latent grid; a model whose VAE
    scales by more checks its own grid at render, `GenerationRequest.check_latent_grid`)."""
    return int(width * scale) // 8 * 8, int(height * scale) // 8 * 8


def _check_hires_fields(request: GenerationRequest) -> None:
    """The Hires fields' checks, in GenerationRequest's words (called from its `__post_init__`)."""
    _check_float("hires scale", request.hires, 0.0, MAX_HIRES_SCALE)
    object.__setattr__(request, "hires", float(request.hires))
    _check_int("hires steps", request.hires_steps, 0, request.limits.max_steps)
    if not isinstance(request.hires_upscaler, str) or not request.hires_upscaler.strip():
        raise EngineError("hires upscaler must be an upscaler name, e.g. Latent, Lanczos or an ESRGAN model")
    builtin = {name.lower(): name for name in (*LATENT_MODES, *IMAGE_UPSCALERS)}
    name = request.hires_upscaler.strip()
    object.__setattr__(request, "hires_upscaler", builtin.get(name.lower(), name))  # model names: at render
    if 0.0 < request.hires <= 1.0:
        object.__setattr__(request, "hires", 0.0)  # A1111: a scale of 1 upscales nothing; store it as "off"
    if not request.hires:
        return
    if request.is_img2img:
        raise EngineError("Hires. fix is for prompts without a start image; with an image, set the size instead")
    if request.denoising_strength == 0:
        raise EngineError("Hires. fix needs a strength above 0 for its second pass (A1111's default is 0.7)")
    width, height = request.final_size
    lim = request.limits
    if max(width, height) > lim.max_side or width * height > lim.max_pixels:
        raise EngineError(
            f"Hires ×{request.hires:g} makes {width}x{height} = {width * height} pixels; the limit is "
            f"{lim.max_pixels} pixels and {lim.max_side} per side: use a smaller scale or base size"
        )


def _check_img2img_fields(request: GenerationRequest) -> None:
    """The img2img fields' checks, in GenerationRequest's words (called from its `__post_init__`)."""
    if not isinstance(request.init_image, str):
        raise EngineError("init image must be a file path")
    if not isinstance(request.init_image_data, bytes) or (request.init_image_data and not request.init_image):
        raise EngineError("internal: init image bytes come with the init image's path")
    if request.strength is not None:
        _check_float("strength", request.strength, 0.0, 1.0)
        object.__setattr__(request, "strength", float(request.strength))
    mode = request.resize_mode.strip().lower() if isinstance(request.resize_mode, str) else request.resize_mode
    mode = {"just resize": "just", "crop and resize": "crop", "resize and fill": "fill"}.get(mode, mode)
    if mode not in RESIZE_MODES:
        raise EngineError(f"resize mode must be one of {', '.join(RESIZE_MODES)} (got {request.resize_mode!r})")
    object.__setattr__(request, "resize_mode", mode)


def _check_inpaint_fields(request: GenerationRequest) -> None:
    """The inpaint fields' checks, in GenerationRequest's words (called from its `__post_init__`). The controls are
    checked even without a mask: a preset may carry them for the jobs that have one."""
    if not isinstance(request.mask, str) or not isinstance(request.outpaint, str):
        raise EngineError("mask must be a file path and outpaint L,T,R,B pixels")
    if not isinstance(request.mask_data, bytes) or (request.mask_data and not request.mask):
        raise EngineError("internal: mask bytes come with the mask's path")
    _check_int("mask blur", request.mask_blur, 0, MAX_BLUR)
    _check_int("masked area padding", request.padding, 0, MAX_PADDING)
    object.__setattr__(request, "mask_mode", choose("mask mode", request.mask_mode))
    object.__setattr__(request, "inpaint_area", choose("inpaint area", request.inpaint_area))
    if request.masked_content is not None:
        object.__setattr__(request, "masked_content", choose("masked content", request.masked_content))
    if request.outpaint.strip():
        object.__setattr__(request, "outpaint", ",".join(map(str, parse_margins(request.outpaint))))
    else:
        object.__setattr__(request, "outpaint", "")
    if request.mask and request.outpaint:
        raise EngineError("a mask and outpaint cannot be combined: outpainting masks the new border itself")
    if request.is_inpaint and not request.is_img2img:
        what = "a mask" if request.mask else "outpaint"
        raise EngineError(f"{what} needs a start image (the image to change)")


def _square(pixels: int) -> str:
    side = int(pixels**0.5) // 8 * 8
    return f"{side}x{side}"


def _check_text(name: str, value: Any, max_chars: int) -> None:
    if not isinstance(value, str):
        raise EngineError(f"{name} must be text")
    if len(value) > max_chars:
        raise EngineError(f"{name} is {len(value)} characters long; the limit is {max_chars}")


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EngineError(f"{name} must be a whole number from {lo} to {hi} (got {value!r})")
    if not lo <= value <= hi:
        raise EngineError(f"{name} must be from {lo} to {hi} (got {value})")


def _check_float(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise EngineError(f"{name} must be a number from {lo:g} to {hi:g} (got {value!r})")
    if not lo <= value <= hi:
        raise EngineError(f"{name} must be from {lo:g} to {hi:g} (got {value:g})")
