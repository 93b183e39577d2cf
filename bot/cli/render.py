"""Engine sub-commands: `render`, `tiny-model`, `infotext`, `models`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.cli.control import add_control_arguments, print_controlnets
from bot.config import load_config
from bot.errors import UserError
from bot.options import from_slash

if TYPE_CHECKING:
    from engine.config import EngineConfig
    from engine.render.pipeline import RenderedImage
    from engine.request import GenerationRequest


def add_parsers(sub) -> None:
    p = sub.add_parser("render", help="render a prompt to PNG, without Discord")
    p.add_argument("prompt", help="A1111 prompt syntax; {a|b} and __wildcard__ draw each image's prompt from its seed")
    add_request_options(p)
    p.add_argument("--out", default="out/sdbot.png", metavar="FILE.png")
    p.add_argument("--config", metavar="F")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("tiny-model", help="write a tiny random model (tests, offline demo)")
    p.add_argument("dir")
    p.add_argument("--family", choices=("sd15", "sdxl"), default="sd15")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inpainting", action="store_true", help="a 9-channel inpainting UNet")
    p.set_defaults(func=cmd_tiny_model)

    p = sub.add_parser("infotext", help="print a PNG's (or a text file's) A1111 infotext as JSON")
    p.add_argument("file")
    p.set_defaults(func=cmd_infotext)

    p = sub.add_parser("models", help="list checkpoints, VAEs, LoRAs, ControlNets and samplers")
    p.add_argument("--config", metavar="F")
    p.set_defaults(func=cmd_models)


def add_request_options(p: argparse.ArgumentParser, *, batch: bool = True) -> None:
    """The render options (`sdbot render`, `sdbot xyz`): the slash commands' parameters as flags."""
    p.add_argument("--negative", metavar="T")
    p.add_argument("--steps", type=int, metavar="N")
    p.add_argument("--cfg", type=float, metavar="F")
    p.add_argument("--sampler", metavar="NAME")
    p.add_argument("--seed", type=int, metavar="N")
    p.add_argument(
        "--size",
        default=None,
        metavar="WxH",
        help="default 512x512; with --init-image, the image's aspect within max_pixels",
    )
    p.add_argument("--clip-skip", type=int, metavar="N")
    p.add_argument("--vae", metavar="auto|none|NAME|PATH")
    p.add_argument("--model", metavar="NAME|PATH")
    if batch:
        p.add_argument("--batch", type=int, metavar="N")
    p.add_argument("--init-image", default="", metavar="FILE", help="img2img: start from this PNG, JPEG or WebP")
    p.add_argument(
        "--strength",
        type=float,
        metavar="D",
        help="denoising strength (default 0.75 with --init-image, 0.7 for the Hires pass)",
    )
    p.add_argument("--resize-mode", choices=("just", "crop", "fill"))
    p.add_argument(
        "--mask", default="", metavar="M", help="inpaint: change the white part of --init-image (PNG, JPEG, WebP)"
    )
    p.add_argument("--mask-blur", type=int, metavar="N", help="inpaint: blur the mask's edge (default 4)")
    p.add_argument("--mask-mode", choices=("masked", "unmasked"), help="unmasked: change the black part instead")
    p.add_argument(
        "--masked-content",
        choices=("fill", "original", "noise", "nothing"),
        help="what the masked part starts from (default original; fill for --outpaint)",
    )
    p.add_argument(
        "--inpaint-area", choices=("whole", "masked"), help="masked: render only the masked part, at full size"
    )
    p.add_argument("--padding", type=int, metavar="N", help="pixels around the mask with --inpaint-area masked (32)")
    p.add_argument(
        "--outpaint",
        metavar="L,T,R,B",
        help="grow --init-image by these pixels (left, top, right, bottom) and paint them",
    )
    p.add_argument("--hires", type=float, metavar="SCALE", help="Hires. fix: upscale by SCALE")
    p.add_argument("--hires-steps", type=int, metavar="N", help="second-pass steps (0 = --steps)")
    p.add_argument(
        "--hires-upscaler",
        metavar="NAME",
        help="Latent, Latent (bicubic) ... Lanczos, Nearest or a model in models/ESRGAN",
    )
    p.add_argument(
        "--combinatorial",
        action="store_true",
        default=None,
        help="dynamic prompts: image i gets the i-th combination of the {a|b} choices (up to --batch)",
    )
    add_control_arguments(p)


_OPTION_FLAGS = (
    "negative",
    "steps",
    "cfg",
    "sampler",
    "seed",
    "clip_skip",
    "vae",
    "model",
    "batch",
    "strength",
    "resize_mode",
    "hires",
    "hires_steps",
    "hires_upscaler",
    "mask_blur",
    "mask_mode",
    "masked_content",
    "inpaint_area",
    "padding",
    "outpaint",
    "combinatorial",
)


def request_from_args(args: argparse.Namespace, engine_config: EngineConfig) -> GenerationRequest:
    """The request the render options describe; unset ones keep the request's defaults."""
    from engine.render.input_image import read_input_image
    from engine.request import GenerationRequest, parse_size

    # The start image is what this user sends: it is checked against the limits here, as an attachment is.
    start = read_input_image(args.init_image, engine_config.limits) if args.init_image else None
    if args.mask and start is not None:  # the mask too (without a start image the request says what is missing)
        from engine.render.inpaint import open_mask

        open_mask(args.mask, engine_config.limits)
    if args.size is not None:
        width, height = parse_size(args.size)
    elif start is not None:
        from engine.models.loader import ModelLibrary, checkpoint_family
        from engine.render.input_image import default_size, size_multiple
        from engine.render.outpaint import grown_size, parse_margins

        multiple = size_multiple(checkpoint_family(ModelLibrary(engine_config).checkpoint(args.model)))
        width, height = start.size
        if args.outpaint:  # the grown canvas
            width, height = grown_size(width, height, parse_margins(args.outpaint))
        width, height = default_size(width, height, engine_config.limits, multiple)
    else:
        width, height = 512, 512
    # The flags are the slash commands' parameters (bot/option_spec.py).
    options = from_slash(**{name: getattr(args, name, None) for name in _OPTION_FLAGS})
    return GenerationRequest(
        prompt=args.prompt,
        width=width,
        height=height,
        init_image=args.init_image,
        controls=tuple(args.controls),
        mask=args.mask,
        **options,
        limits=engine_config.limits,
    )


def png_target(out: str) -> Path:
    if Path(out).suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file (got {out!r})")
    return Path(out)


def save_images(images: Sequence[RenderedImage], target: Path) -> list[Path]:
    """The PNGs: FILE.png for one image, FILE-1.png, FILE-2.png ... for a batch."""
    target.parent.mkdir(parents=True, exist_ok=True)
    paths = [
        target if len(images) == 1 else target.with_name(f"{target.stem}-{i}.png") for i in range(1, len(images) + 1)
    ]
    for path, image in zip(paths, images):
        path.write_bytes(image.png())
    return paths


def cmd_render(args: argparse.Namespace) -> int:
    from engine.render.pipeline import Engine
    from engine.tiny.models import ensure_demo_model

    config = load_config(args.config)
    engine_config = config.engine_config()
    ensure_demo_model(engine_config)
    request = request_from_args(args, engine_config)
    target = png_target(args.out)
    result = Engine(engine_config).render(request)
    for path, image in zip(save_images(result.images, target), result.images):
        print(f"{path}  seed {image.seed}")
    for note in result.notes:  # what the render left out or changed, e.g. a refused embedding
        print(f"sdbot: warning: {note}", file=sys.stderr)
    return 0


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from engine.tiny.models import write_tiny_model

    target = Path(args.dir)
    if target.exists() and any(target.iterdir()):
        raise UserError(f"{target} exists and is not empty; choose a new directory")
    write_tiny_model(target, family=args.family, seed=args.seed, inpainting=args.inpainting)
    print(f"wrote tiny {args.family} model to {target}")
    return 0


def cmd_infotext(args: argparse.Namespace) -> int:
    from engine.infotext import parse_infotext, read_png_infotext, to_dict

    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data.startswith(b"\x89PNG"):
        text = read_png_infotext(data)
        if text is None:
            raise UserError(f"{path} carries no A1111 infotext (no 'parameters' text chunk)")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{path} is neither a PNG image nor UTF-8 text") from None
    json.dump(to_dict(parse_infotext(text)), sys.stdout, ensure_ascii=False, indent=2)
    print()
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from engine.models.loader import ModelLibrary
    from engine.models.state_dict import loadable
    from engine.render.refusals import refused_files
    from engine.render.upscalers import UpscalerLibrary
    from engine.samplers import SCHEDULES, sampler_names

    engine_config = load_config(args.config).engine_config()
    library, allow = ModelLibrary(engine_config), engine_config.allow_pickle
    print(f"models dir: {library.root}")
    checkpoints = loadable(library.checkpoints(), allow)
    print("checkpoints:")
    for c in checkpoints:
        print(f"  {c.name}  ({c.path})")
    if not checkpoints:
        print("  (none: the tiny demo model is written on first use)")
    print("VAEs: auto, none" + "".join(f"\n  {v.name}  ({v.path})" for v in loadable(library.vaes(), allow)))
    print_networks(engine_config)
    print_controlnets(engine_config)
    print("samplers: " + ", ".join(sampler_names()))
    print("upscalers: " + ", ".join(UpscalerLibrary(library.root, allow_pickle=allow).names()))
    print("schedule types: " + ", ".join(SCHEDULES))
    for refused in refused_files(engine_config):
        print(refused.line)
    return 0


def print_networks(engine_config) -> None:
    """LoRAs (with family and trigger words from their metadata), embeddings and wildcards; nothing is downloaded."""
    from engine.models.state_dict import loadable
    from engine.networks.library import EMBEDDING_DIR, LORA_DIRS, NetworkLibrary, embedding_family

    library, allow = NetworkLibrary(engine_config), engine_config.allow_pickle
    print(f"LoRAs ({' and '.join(LORA_DIRS)}; use <lora:NAME:WEIGHT>):")
    loras = loadable(library.loras(), allow)
    for file in loras:
        info = library.lora_info(file)
        triggers = f"  triggers: {', '.join(info.triggers)}" if info.triggers else ""
        print(f"  {file.name}  [{info.family}]{triggers}  ({file.path})")
    if not loras:
        print("  (none)")
    print(f"embeddings ({EMBEDDING_DIR}; write the name in a prompt):")
    embeddings = loadable(library.embeddings(), allow)
    for file in embeddings:
        print(f"  {file.name}  [{embedding_family(file)}]  ({file.path})")
    if not embeddings:
        print("  (none)")
    from engine.render.dynamic_prompts import WILDCARDS_DIR, DynamicPrompts

    wildcards = DynamicPrompts(engine_config.models_dir / WILDCARDS_DIR).wildcard_names()
    print(f"wildcards ({WILDCARDS_DIR}/NAME.txt; use __NAME__ in a prompt): " + (", ".join(wildcards) or "(none)"))
