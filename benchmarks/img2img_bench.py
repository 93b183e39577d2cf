"""img2img and Hires. fix costs (issue 14), measured side by side in one run on the same tiny model.

- img2img_cost_ratio: an img2img job at strength d over a txt2img job of the same size and steps; goal within 5 %
  of `(int(d*N)+1)/N` (`img2img_expected_ratio`), i.e. only the steps A1111 runs are paid for.
  `img2img_denoise_ratio` is the same over the UNet's time alone (the fixed VAE encode/decode costs left out).
- hires_overhead_ratio: Hires 2x (N first-pass steps at the base size + N second-pass steps at the final size) over
  a plain render at the final size with the same total steps (2N).
- hires_peak_rss_mb / plain_peak_rss_mb: peak resident memory of a process rendering one 2x Hires job at the
  largest allowed size (max_pixels for the final image), and of one plain render of that final size.

Run: .venv/bin/python benchmarks/img2img_bench.py [--rounds N] [--size 128] [--steps 20] [--strength 0.5]
Each figure is printed last as `name: value`.
"""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import arguments, print_figures  # noqa: E402

import torch  # noqa: E402

from engine.config import EngineConfig  # noqa: E402
from engine.pipeline import Engine  # noqa: E402
from engine.request import GenerationRequest  # noqa: E402
from engine.tiny import write_tiny_model  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def start_image(path: Path, size: int) -> Path:
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([x * 255 // size, y * 255 // size, (x * y) % 256], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def measure_costs(root: Path, rounds: int, size: int, steps: int, strength: float) -> dict[str, float]:
    engine = Engine(EngineConfig(models_dir=root, threads=torch.get_num_threads()))
    init = start_image(root / "start.png", size)
    base = dict(prompt="a photo of a cat, best quality", negative_prompt="blurry", sampler="Euler", seed=1,
                steps=steps)
    txt = GenerationRequest(**base, width=size, height=size)
    i2i = GenerationRequest(**base, width=size, height=size, init_image=str(init), strength=strength)
    half = size // 2 // 8 * 8
    hires = GenerationRequest(**base, width=half, height=half, hires=2.0, hires_steps=steps,
                              hires_upscaler="Latent")
    plain_final = GenerationRequest(**{**base, "steps": 2 * steps}, width=hires.final_size[0],
                                    height=hires.final_size[1])
    for request in (txt, i2i, hires, plain_final):  # warm up every path
        engine.render(request)
    unet = engine.models.checkpoint("").pipe.unet
    in_unet = [0.0]
    forward = unet.forward

    def timed_forward(*args, **kwargs):  # the denoising time alone, without the VAE and PNG fixed costs
        start = time.perf_counter()
        try:
            return forward(*args, **kwargs)
        finally:
            in_unet[0] += time.perf_counter() - start

    def unet_seconds(request: GenerationRequest) -> float:
        in_unet[0] = 0.0
        engine.render(request)
        return in_unet[0]

    unet.forward = timed_forward
    txt_t, i2i_t, hires_t, plain_t, txt_u, i2i_u = [], [], [], [], [], []
    for _ in range(rounds):  # interleaved, so drift in machine speed hits every side alike
        txt_t.append(timed(lambda: txt_u.append(unet_seconds(txt))))
        i2i_t.append(timed(lambda: i2i_u.append(unet_seconds(i2i))))
        hires_t.append(timed(lambda: engine.render(hires)))
        plain_t.append(timed(lambda: engine.render(plain_final)))
    del unet.forward
    return {
        "img2img_denoise_ratio": statistics.median(i2i_u) / statistics.median(txt_u),
        "txt2img_ms": statistics.median(txt_t) * 1000,
        "img2img_ms": statistics.median(i2i_t) * 1000,
        "img2img_expected_ratio": (int(min(strength, 0.999) * steps) + 1) / steps,
        "img2img_cost_ratio": statistics.median(i2i_t) / statistics.median(txt_t),
        "hires_overhead_ratio": statistics.median(hires_t) / statistics.median(plain_t),
    }


_CHILD = """
import json, resource, sys
sys.path.insert(0, {root!r})
from engine.config import EngineConfig
from engine.pipeline import Engine
from engine.request import GenerationRequest
engine = Engine(EngineConfig(models_dir={models!r}))
request = GenerationRequest(**json.loads({request!r}))
engine.render(request)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss_mb(models: Path, request: dict) -> float:
    code = _CHILD.format(root=str(ROOT), models=str(models), request=json.dumps(request))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def measure_memory(root: Path, steps: int) -> dict[str, float]:
    from engine.config import Limits

    side = int(Limits().max_pixels ** 0.5) // 8 * 8  # the largest square final image allowed
    base = dict(prompt="a photo of a cat", sampler="Euler", seed=1, steps=steps)
    hires = {**base, "width": side // 2, "height": side // 2, "hires": 2.0, "hires_steps": steps}
    plain = {**base, "width": side, "height": side}
    return {"hires_final_side": side, "hires_peak_rss_mb": peak_rss_mb(root, hires),
            "plain_peak_rss_mb": peak_rss_mb(root, plain)}


def main() -> None:
    parser = arguments(__doc__, rounds=5, size=128, steps=20, strength=0.5, unet_width=32,
                       memory_steps=(2, "steps per pass of the peak-memory runs"),
                       threads=(0, "torch threads (0: torch's default)"))
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="sdbot-i2i-bench-"))
    write_tiny_model(root / "bench", unet_width=args.unet_width)  # a wider UNet: denoising dominates, as in SD
    figures = measure_costs(root, args.rounds, args.size, args.steps, args.strength)
    if not args.skip_memory:
        figures.update(measure_memory(root, args.memory_steps))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, size {args.size}, steps {args.steps}, "
          f"strength {args.strength}")
    print_figures(figures)


if __name__ == "__main__":
    main()
