"""img2img and Hires. fix costs, measured side by side in one run on the same tiny model.

- img2img_cost_ratio: an img2img job at strength d over a txt2img job of the same size and steps; goal within 5 %
  of `(int(d*N)+1)/N` (`img2img_expected_ratio`), i.e. only the steps A1111 runs are paid for.
  `img2img_denoise_ratio` is the same over the UNet's time alone. `img2img_attainable_ratio` is what an img2img
  job would cost with nothing of its own but the VAE encode of its start image (measured txt2img job, less the
  skipped steps' UNet time, plus the measured encode): the cost ratio over it is the engine's own overhead.
- The model's proportions matter: an img2img job also pays the VAE encode, and both jobs pay the decode, so the
  ratio depends on what the VAE costs in UNet steps. The tiny model's widths (`--unet-width 96 --vae-width 32` at
  128x128) are chosen so its VAE decode costs about what SD 1.5's does at 512x512 (about 1.6 steps with CFG;
  `sd15_vae_*_in_steps`, counted in FLOPs on the real architectures, built without weights on the meta device),
  and a step is long enough that the per-job Python and text-encoder costs weigh what they weigh on a GPU.
  `sd15_img2img_ratio_by_flops` is SD 1.5's best possible ratio by FLOPs: the steps run + encode + decode over
  all steps + decode.
- hires_overhead_ratio: Hires 2x (N first-pass steps at the base size + N second-pass steps at the final size) over
  a plain render at the final size with the same total steps (2N).
- hires_peak_rss_mb / plain_peak_rss_mb: peak resident memory of a process rendering one 2x Hires job at the
  largest allowed size (max_pixels for the final image), and of one plain render of that final size.

Run: .venv/bin/python benchmarks/img2img_bench.py [--rounds N] [--size 128] [--steps 20] [--strength 0.5]
     [--unet-width 96] [--vae-width 32] [--threads 1] [--skip-memory]
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
import torch  # noqa: E402

from benchmarks._common import arguments, print_figures  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from engine.render.pipeline import Engine  # noqa: E402
from engine.request import GenerationRequest  # noqa: E402
from engine.tiny.models import write_tiny_model  # noqa: E402


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


class Stopwatch:
    """Time spent inside a module method (UNet forward, VAE encode/decode), summed since the last reset."""

    def __init__(self, owner, method: str) -> None:
        self.owner, self.method, self.seconds, self.calls = owner, method, 0.0, 0
        original = getattr(owner, method)

        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        setattr(owner, method, timed_call)

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def remove(self) -> None:
        delattr(self.owner, self.method)


def measure_costs(root: Path, rounds: int, size: int, steps: int, strength: float) -> dict[str, float]:
    engine = Engine(EngineConfig(models_dir=root, threads=torch.get_num_threads()))
    init = start_image(root / "start.png", size)
    base = dict(prompt="a photo of a cat, best quality", negative_prompt="blurry", sampler="Euler", seed=1, steps=steps)
    txt = GenerationRequest(**base, width=size, height=size)
    i2i = GenerationRequest(**base, width=size, height=size, init_image=str(init), strength=strength)
    half = size // 2 // 8 * 8
    hires = GenerationRequest(**base, width=half, height=half, hires=2.0, hires_steps=steps, hires_upscaler="Latent")
    plain_final = GenerationRequest(
        **{**base, "steps": 2 * steps}, width=hires.final_size[0], height=hires.final_size[1]
    )
    for request in (txt, i2i, hires, plain_final):  # warm up every path
        engine.render(request)
    ckpt = engine.models.checkpoint("")
    vae = engine.models.vae("auto", ckpt)[0]
    watches = {
        name: Stopwatch(owner, method)
        for name, owner, method in (
            ("unet", ckpt.pipe.unet, "forward"),
            ("encode", vae, "encode"),
            ("decode", vae, "decode"),
        )
    }

    def render(request: GenerationRequest, parts: list | None = None) -> float:
        for watch in watches.values():
            watch.reset()
        seconds = timed(lambda: engine.render(request))
        if parts is not None:
            parts.append(
                {name: watch.seconds for name, watch in watches.items()} | {"unet_calls": watches["unet"].calls}
            )
        return seconds

    txt_t, i2i_t, hires_t, plain_t, txt_p, i2i_p = [], [], [], [], [], []
    for _ in range(rounds):  # interleaved, so drift in machine speed hits every side alike
        txt_t.append(render(txt, txt_p))
        i2i_t.append(render(i2i, i2i_p))
        hires_t.append(render(hires))
        plain_t.append(render(plain_final))
    for watch in watches.values():
        watch.remove()

    def part(parts: list[dict], name: str) -> float:
        return statistics.median(p[name] for p in parts)

    txt_s, i2i_s = statistics.median(txt_t), statistics.median(i2i_t)
    step_s = part(txt_p, "unet") / steps  # one denoising step (the UNet on the cond and uncond rows)
    run = int(min(strength, 0.999) * steps) + 1
    skipped = steps - run
    assert part(i2i_p, "unet_calls") == run, "img2img must run exactly A1111's steps"
    return {
        "unet_step_ms": step_s * 1000,
        "vae_decode_in_steps": part(txt_p, "decode") / step_s,
        "vae_encode_in_steps": part(i2i_p, "encode") / step_s,
        "txt2img_ms": txt_s * 1000,
        "img2img_ms": i2i_s * 1000,
        "img2img_denoise_ratio": part(i2i_p, "unet") / part(txt_p, "unet"),
        # What an img2img job costs with nothing of its own but the encode: the txt2img job less the skipped steps
        "img2img_attainable_ratio": (txt_s - skipped * step_s + part(i2i_p, "encode")) / txt_s,
        "img2img_expected_ratio": run / steps,
        "img2img_cost_ratio": i2i_s / txt_s,
        "hires_overhead_ratio": statistics.median(hires_t) / statistics.median(plain_t),
    }


def sd15_proportions(side: int = 512) -> dict[str, float]:
    """SD 1.5's VAE decode and encode at `side`, in denoising steps (UNet with CFG), by counting FLOPs.

    The real architectures (diffusers' configs of SD 1.5's UNet and VAE) are built on the meta device: no
    weights, no memory, nothing downloaded; torch's FlopCounterMode counts the convolutions, matmuls and
    attention of one call of each.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=side // 8,
            cross_attention_dim=768,
            attention_head_dim=8,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=side,
        )

    def flops(fn) -> float:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
        return counter.get_total_flops()

    latent = side // 8
    step = flops(
        lambda: unet(
            torch.empty(2, 4, latent, latent, device="meta"),
            torch.tensor([500, 500], device="meta"),
            torch.empty(2, 77, 768, device="meta"),
        )
    )
    decode = flops(lambda: vae.decode(torch.empty(1, 4, latent, latent, device="meta")))
    encode = flops(lambda: vae.encode(torch.empty(1, 3, side, side, device="meta")))
    return {"sd15_vae_decode_in_steps": decode / step, "sd15_vae_encode_in_steps": encode / step}


def sd15_ratios(steps: int, strength: float, reference: dict[str, float]) -> dict[str, float]:
    """The img2img / txt2img ratio SD 1.5 has at best by FLOPs: the steps run, its encode, the decode both pay."""
    run = int(min(strength, 0.999) * steps) + 1
    decode, encode = reference["sd15_vae_decode_in_steps"], reference["sd15_vae_encode_in_steps"]
    return {"sd15_img2img_ratio_by_flops": (run + encode + decode) / (steps + decode)}


_CHILD = """
import json, resource, sys
sys.path.insert(0, {root!r})
from engine.config import EngineConfig
from engine.render.pipeline import Engine
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
    return {
        "hires_final_side": side,
        "hires_peak_rss_mb": peak_rss_mb(root, hires),
        "plain_peak_rss_mb": peak_rss_mb(root, plain),
    }


def main() -> None:
    parser = arguments(
        __doc__,
        rounds=5,
        size=128,
        steps=20,
        strength=0.5,
        unet_width=(96, "tiny UNet's width (see docs/benchmarks.md)"),
        vae_width=(32, "tiny VAE's width (multiple of 8)"),
        memory_steps=(2, "steps per pass of the peak-memory runs"),
        threads=(0, "torch threads (0: torch's default)"),
    )
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="sdbot-i2i-bench-"))
    # Widths chosen so the VAE's decode and encode cost what SD 1.5's do in UNet steps (printed side by side).
    write_tiny_model(root / "bench", unet_width=args.unet_width, vae_width=args.vae_width)
    figures = sd15_proportions()
    figures.update(sd15_ratios(args.steps, args.strength, figures))
    figures.update(measure_costs(root, args.rounds, args.size, args.steps, args.strength))
    if not args.skip_memory:
        figures.update(measure_memory(root, args.memory_steps))
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, size {args.size}, steps {args.steps}, "
        f"strength {args.strength}, unet width {args.unet_width}, vae width {args.vae_width}"
    )
    print_figures(figures)


if __name__ == "__main__":
    main()
