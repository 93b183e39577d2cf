"""ControlNet's cost, side by side in one run with diffusers' StableDiffusionControlNetPipeline on the same model.

- controlnet_cost_ratio: the engine's render with one ControlNet unit (module none, a map already at the job's
  size, so both sides get the same control image) over diffusers' StableDiffusionControlNetPipeline rendering the
  same prompt, steps, size and ControlNet weights (prompt encoding, denoising, decoding on both sides). Goal <= 1.03.
- controlnet_marginal_ratio: what the unit adds to the engine's render over what the ControlNet adds to
  diffusers' render (each against its own plain render).
- The model is the tiny SD 1.x model grown with --unet-width (compute dominates, in a real model's proportions),
  its ControlNet copied from its UNet with a real ControlNet's conditioning widths (16, 32, 96, 256), loaded by the
  engine from an original-layout single file, and the very same module handed to diffusers.

Run: .venv/bin/python benchmarks/controlnet_bench.py [--rounds N] [--size 128] [--steps 20] [--unet-width 64]
Each figure is printed last as `name: value`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks._common import arguments, print_figures  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from engine.render.pipeline import Engine  # noqa: E402
from engine.request import GenerationRequest  # noqa: E402
from engine.tiny.controlnet import build_tiny_controlnet, write_original_controlnet  # noqa: E402
from engine.tiny.models import write_tiny_model  # noqa: E402

PROMPT, NEGATIVE = "a photo of a cat, best quality", "blurry"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(rounds: int, size: int, steps: int, unet_width: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="sdbot-bench-controlnet-"))
    write_tiny_model(root / "bench", unet_width=unet_width)
    engine = Engine(EngineConfig(models_dir=root))
    ckpt = engine.models.checkpoint("bench")
    pipe = ckpt.pipe
    write_original_controlnet(
        build_tiny_controlnet(pipe.unet, seed=1, conditioning=(16, 32, 96, 256)),
        root / "ControlNet" / "bench_control.safetensors",
    )
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[size // 8 : size // 2, size // 4 : 3 * size // 4] = 255
    control = Image.fromarray(pixels)
    control.save(root / "control.png")
    unit = dict(model="bench_control", module="none", image=str(root / "control.png"), resize_mode="just")

    def request(controls: Any = ()) -> GenerationRequest:
        common: dict[str, Any] = dict(steps=steps, sampler="Euler", seed=1, width=size, height=size, vae="none")
        return GenerationRequest(prompt=PROMPT, negative_prompt=NEGATIVE, controls=controls, **common)

    from diffusers import EulerDiscreteScheduler, StableDiffusionControlNetPipeline

    engine.render(request((unit,)))  # loads the ControlNet into the engine's cache
    file = engine.controls.library.find("bench_control")
    model = engine.controls.cache.get(file, dict(pipe.unet.config), str(ckpt.file.path.resolve()), "bench")
    reference: Any = StableDiffusionControlNetPipeline(**pipe.components, controlnet=model)
    reference.set_progress_bar_config(disable=True)
    scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)

    def diffusers_render(with_controlnet: bool) -> None:
        runner = reference if with_controlnet else pipe
        runner.scheduler = scheduler
        extra = {"image": control} if with_controlnet else {}
        runner(
            PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=steps,
            guidance_scale=7.0,
            height=size,
            width=size,
            generator=torch.Generator("cpu").manual_seed(1),
            **extra,
        )

    for _ in range(2):  # warm up every path
        diffusers_render(True)
        diffusers_render(False)
        engine.render(request((unit,)))
        engine.render(request())
    ours, ours_plain, theirs, theirs_plain = [], [], [], []
    for _ in range(rounds):  # interleaved, so drift in machine speed hits both sides alike
        theirs.append(timed(lambda: diffusers_render(True)))
        ours.append(timed(lambda: engine.render(request((unit,)))))
        theirs_plain.append(timed(lambda: diffusers_render(False)))
        ours_plain.append(timed(lambda: engine.render(request())))
    med = statistics.median
    return {
        "diffusers_plain_ms_per_image": med(theirs_plain) * 1000,
        "engine_plain_ms_per_image": med(ours_plain) * 1000,
        "diffusers_controlnet_ms_per_image": med(theirs) * 1000,
        "engine_controlnet_ms_per_image": med(ours) * 1000,
        "controlnet_cost_ratio": med(ours) / med(theirs),
        "controlnet_marginal_ratio": (med(ours) - med(ours_plain)) / (med(theirs) - med(theirs_plain)),
    }


def main() -> None:
    args = arguments(__doc__, rounds=15, size=128, steps=20, unet_width=64).parse_args()
    figures = measure(args.rounds, args.size, args.steps, args.unet_width)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, size {args.size}, steps {args.steps}")
    print_figures(figures)


if __name__ == "__main__":
    main()
