"""Inpainting's cost: a whole-picture inpaint at strength d against img2img at the same d, side by side.

- inpaint_cost_ratio: an inpaint job ("Whole picture", mask blur 4, masked content original) over an img2img job of
  the same image, size, steps and strength; goal within 5 % (1.05). What the inpaint job adds: reading and
  blurring the mask, the overlay, the latent mask kept after every step (one `add_noise` and a blend) and the final
  composite; it runs the same UNet steps and the same VAE encode and decode.
- inpaint_fill_cost_ratio: the same with masked content "fill" (A1111's `masking.fill`: six Gaussian blurs of the
  image), for information.
- inpaint_only_masked_cost_ratio: "Only masked" (the crop rendered at the job's size, pasted back), for information.
- inpaint_extra_ms: what an inpaint job spends outside the UNet and the VAE, less what img2img spends there (the
  mask work itself); inpaint_cost_ratio_by_parts: img2img's median plus that, over img2img's median. On a busy
  machine the UNet's time swings between jobs far more than the mask work costs; these two are the steadier view.
- The model's proportions matter as in img2img_bench.py: the tiny model's widths (`--unet-width 96 --vae-width 32`
  at 128x128) make its VAE cost what SD 1.5's does in UNet steps, so the fixed per-job costs weigh what they weigh
  on a real model.

Run: .venv/bin/python benchmarks/inpaint_bench.py [--rounds N] [--size 128] [--steps 20] [--strength 0.5]
     [--unet-width 96] [--vae-width 32] [--threads 0]
Each figure is printed last as `name: value`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

from benchmarks._common import arguments, print_figures  # noqa: E402
from benchmarks.img2img_bench import Stopwatch, start_image  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from engine.render.pipeline import Engine  # noqa: E402
from engine.request import GenerationRequest  # noqa: E402
from engine.tiny.models import write_tiny_model  # noqa: E402


def inputs(root: Path, size: int) -> tuple[Path, Path]:
    """img2img_bench's start image and a mask over its middle third."""
    from PIL import Image

    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 3, size // 3, 2 * size // 3, 2 * size // 3))
    mask.save(root / "mask.png")
    return start_image(root / "start.png", size), root / "mask.png"


def measure(root: Path, rounds: int, size: int, steps: int, strength: float) -> dict[str, float]:
    engine = Engine(EngineConfig(models_dir=root, threads=torch.get_num_threads()))
    start, mask = inputs(root, size)
    base: dict[str, Any] = dict(
        prompt="a photo of a cat, best quality",
        negative_prompt="blurry",
        sampler="Euler",
        seed=1,
        steps=steps,
        width=size,
        height=size,
        init_image=str(start),
        strength=strength,
    )
    jobs = {
        "img2img": GenerationRequest(**base),
        "inpaint": GenerationRequest(**base, mask=str(mask)),
        "fill": GenerationRequest(**base, mask=str(mask), masked_content="fill"),
        "only_masked": GenerationRequest(**base, mask=str(mask), inpaint_area="masked"),
    }
    for job in jobs.values():  # warm up every path
        engine.render(job)
    ckpt = engine.models.checkpoint("")
    vae = engine.models.vae("auto", ckpt)[0]
    watches = [Stopwatch(ckpt.pipe.unet, "forward"), Stopwatch(vae, "encode"), Stopwatch(vae, "decode")]
    times: dict[str, list[float]] = {name: [] for name in jobs}
    rest: dict[str, list[float]] = {name: [] for name in jobs}  # outside the UNet and the VAE
    for _ in range(rounds):  # interleaved, so drift in machine speed hits every side alike
        for name, job in jobs.items():
            for watch in watches:
                watch.reset()
            began = time.perf_counter()
            engine.render(job)
            seconds = time.perf_counter() - began
            times[name].append(seconds)
            rest[name].append(seconds - sum(watch.seconds for watch in watches))
    for watch in watches:
        watch.remove()
    median = {name: statistics.median(values) for name, values in times.items()}
    extra = statistics.median(rest["inpaint"]) - statistics.median(rest["img2img"])
    return {
        "img2img_ms": median["img2img"] * 1000,
        "inpaint_ms": median["inpaint"] * 1000,
        "inpaint_fill_cost_ratio": median["fill"] / median["img2img"],
        "inpaint_only_masked_cost_ratio": median["only_masked"] / median["img2img"],
        "inpaint_extra_ms": extra * 1000,
        "inpaint_cost_ratio_by_parts": (median["img2img"] + extra) / median["img2img"],
        "inpaint_cost_ratio": median["inpaint"] / median["img2img"],
    }


def main() -> None:
    parser = arguments(
        __doc__,
        rounds=7,
        size=128,
        steps=20,
        strength=0.5,
        unet_width=(96, "tiny UNet's width (see img2img_bench.py)"),
        vae_width=(32, "tiny VAE's width (multiple of 8)"),
        threads=(0, "torch threads (0: torch's default)"),
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="sdbot-inpaint-bench-"))
    write_tiny_model(root / "bench", unet_width=args.unet_width, vae_width=args.vae_width)
    figures = measure(root, args.rounds, args.size, args.steps, args.strength)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, size {args.size}, steps {args.steps}, "
        f"strength {args.strength}, unet width {args.unet_width}, vae width {args.vae_width}"
    )
    print_figures(figures)


if __name__ == "__main__":
    main()
