"""The worker's figures, measured on a tiny model; `benchmarks/engine_bench.py` prints them too.

- batch_ratio: 8 compatible jobs (different prompts and seeds) queued together and rendered as batches, over
  the same 8 jobs one by one; images per second, median of interleaved rounds. Goal >= 1.0. Measured with the
  configured `batch_mode` ("exact", the default: pixel-identical to solo); `batch_ratio_fast` is the same with
  `batch_mode = "fast"` (true tensor batching) for comparison.
- loop_lag_ms_p99: how late an `asyncio.sleep(0.005)` wakes up (99th percentile) while the worker renders a
  stream of jobs and the loop keeps submitting and cancelling jobs. Goal < 20 ms. `submit_ms_max`: the
  longest of those submit + cancel pairs (a slash command's acknowledgement and its cancel button) meanwhile.
- peak_rss_mb: the process's peak resident memory while jobs run with three external VAEs cached, in a fresh
  process. The bound (`rss_bound_mb`) is the process before any model (`rss_baseline_mb`: Python, torch,
  diffusers imported) plus the checkpoint and three VAEs (`weights_mb`, their tensors' bytes) plus 15 % of
  those weights. Weights are memory-mapped and only count once a render touched them, so the figure is the
  peak while rendering. A tiny model's few MB of weights cannot cover, with 15 %, the fixed cost of rendering
  at all (activations, allocator arenas, oneDNN kernel caches, lazily imported code), so the same is measured
  on a wider model too (`wide_*`), giving peak - baseline = `rss_fixed_overhead_mb` + `rss_weight_factor` x
  weights: the factor must stay under 1.15, and `rss_bound_holds_from_weights_mb` says from which size of
  checkpoint + VAEs the bound holds (a real SD 1.5 checkpoint is about 2,000 MB).
- rss_after_20_mb, rss_after_200_mb: resident memory after 20 and after 200 jobs cycling the three VAEs
  (no leak: flat; `rss_growth_mb` is the difference).

Run: .venv/bin/python benchmarks/worker_measures.py [--size 128] [--steps 10] [--threads 1]
Each figure is printed last as `name: value`. One intra-op thread by default: on a small shared CPU two
OpenMP threads stall whenever another process takes a core, which makes the timings noise.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import arguments, print_figures  # noqa: E402
from engine.config import EngineConfig, Limits  # noqa: E402
from engine.request import GenerationRequest  # noqa: E402

PROMPTS = [
    "a photo of a cat",
    "a dog in the city",
    "portrait of a woman, best quality",
    "red sky at night",
    "landscape painting, sea",
    "a man with a smile",
    "forest, watercolor",
    "city at night, oil painting",
]


def write_models(root: Path, unet_width: int = 32) -> Path:
    """The tiny checkpoint `bench` and three VAEs (va, vb, vc) under root/VAE."""
    from engine.tiny.models import build_tiny_pipeline, perturbed_vae, write_ldm_vae

    pipe = build_tiny_pipeline("sd15", unet_width=unet_width)
    pipe.save_pretrained(root / "bench", safe_serialization=True)
    (root / "VAE").mkdir(exist_ok=True)
    for i, name in enumerate(("va", "vb", "vc"), start=1):
        write_ldm_vae(perturbed_vae(pipe.vae, i), root / "VAE" / f"{name}.safetensors")
    return root


def _config(root: Path, threads: int, **changes) -> EngineConfig:
    """No gather window: batches form behind a gate here, and a job rendered alone would wait it."""
    return EngineConfig(
        models_dir=root,
        batch_window_ms=0,
        default_model="bench",
        threads=threads,
        job_timeout_s=0,
        max_queued_per_user=0,
        limits=Limits(max_batch=8),
        preview_every=0,
        **changes,
    )


def _request(i: int, size: int, steps: int, vae: str = "none") -> GenerationRequest:
    return GenerationRequest(
        PROMPTS[i % len(PROMPTS)],
        negative_prompt="blurry",
        seed=1000 + i,
        steps=steps,
        width=size,
        height=size,
        sampler="Euler",
        vae=vae,
        limits=Limits(max_batch=8),
    )


async def _gated(worker, requests) -> float:
    """Seconds to render `requests` queued together (the worker held until all are in, so they batch)."""
    gate = threading.Event()
    held = worker.call(lambda engine: gate.wait(60))
    handles = [worker.submit(r, owner=i) for i, r in enumerate(requests)]
    started = time.perf_counter()
    gate.set()
    await held
    for h in handles:
        await h
    return time.perf_counter() - started


async def _one_by_one(worker, requests) -> float:
    started = time.perf_counter()
    for i, r in enumerate(requests):
        await worker.submit(r, owner=i)
    return time.perf_counter() - started


def batch_ratio(
    root: Path, *, size: int = 128, steps: int = 10, threads: int = 1, rounds: int = 3, batch_mode: str = "exact"
) -> float:
    """Images/s of 8 compatible jobs batched over the same jobs one by one (median of interleaved rounds)."""
    from engine.backends.worker import Worker

    async def run() -> float:
        async with Worker(_config(root, threads, batch_mode=batch_mode), max_batch=8) as worker:
            requests = [_request(i, size, steps) for i in range(8)]
            await _gated(worker, requests)  # warm up both paths
            await _one_by_one(worker, requests)
            solo, batched = [], []
            for _ in range(rounds):
                solo.append(await _one_by_one(worker, requests))
                batched.append(await _gated(worker, requests))
                assert worker.stats.batched_renders > 0
            return statistics.median(solo) / statistics.median(batched)

    return asyncio.run(run())


def loop_lag_ms(root: Path, *, size: int = 128, steps: int = 10, threads: int = 1, jobs: int = 16) -> dict:
    """p50/p99/max lateness of a 5 ms asyncio.sleep while jobs run and the loop submits and cancels jobs."""
    from engine.backends.worker import Worker

    async def run() -> dict:
        async with Worker(_config(root, threads), max_batch=4) as worker:
            await worker.submit(_request(0, size, steps), owner=0)  # load the model first
            handles = [
                worker.submit(_request(i, size, steps if i % 3 else steps + 1), owner=i % 4) for i in range(jobs)
            ]
            lags, acks = [], []
            while not all(h.done() for h in handles):
                before = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - before - 0.005)
                before = time.perf_counter()
                extra = worker.submit(_request(0, size, steps), owner="spammer")  # a slash command...
                worker.cancel(extra.job_id)  # ...and its cancel button
                acks.append(time.perf_counter() - before)
            for h in handles:
                await h
            lags.sort()
            return {
                "loop_lag_ms_p50": lags[len(lags) // 2] * 1000,
                "loop_lag_ms_p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000,
                "loop_lag_ms_max": lags[-1] * 1000,
                "loop_lag_samples": len(lags),
                "submit_ms_max": max(acks) * 1000,
            }

    return asyncio.run(run())


def memory(root: Path, *, size: int = 64, steps: int = 2, threads: int = 1, jobs: int = 200) -> dict:
    """Peak RSS with three VAEs cached and RSS after 20 vs 200 jobs, measured in a fresh process."""
    args = json.dumps(dict(root=str(root), size=size, steps=steps, threads=threads, jobs=jobs))
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--memory-child", args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _memory_child(options: dict) -> dict:
    import psutil
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline  # noqa: F401  (libraries, not models)
    from transformers import CLIPTextModel  # noqa: F401

    from engine.backends.worker import Worker
    from engine.render.pipeline import Engine  # noqa: F401

    process = psutil.Process()
    mb = 1024 * 1024
    root, size, steps = Path(options["root"]), options["size"], options["steps"]
    baseline = process.memory_info().rss
    peak = [baseline]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.002):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def weights(engine) -> int:
        def size_of(module) -> int:
            return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))

        ckpt = engine.models.checkpoint("bench")
        pipe = ckpt.pipe
        total = sum(size_of(m) for m in (pipe.unet, pipe.vae, pipe.text_encoder))
        vaes = [engine.models.vae(name, ckpt)[0] for name in ("va", "vb", "vc")]
        return total + sum(size_of(v) for v in vaes)

    async def run() -> dict:
        vaes = ["va", "vb", "vc"]
        async with Worker(_config(root, options["threads"]), max_batch=4) as worker:
            figures: dict = {"weights_mb": await worker.call(weights) / mb}  # loads the checkpoint + 3 VAEs
            loads = worker.engine.models.disk_loads
            for i in range(options["jobs"]):
                await worker.submit(_request(i, size, steps, vae=vaes[i % 3]), owner=i % 5)
                if i + 1 == 20:
                    figures["rss_after_20_mb"] = process.memory_info().rss / mb
            figures["rss_after_200_mb"] = process.memory_info().rss / mb
            assert worker.engine.models.disk_loads == loads, "a cached model was read from disk again"
            return figures

    figures = asyncio.run(run())
    sampling.set()
    sampler.join()
    figures["rss_baseline_mb"] = baseline / mb
    figures["peak_rss_mb"] = peak[0] / mb
    figures["rss_bound_mb"] = figures["rss_baseline_mb"] + 1.15 * figures["weights_mb"]
    figures["rss_growth_mb"] = figures["rss_after_200_mb"] - figures["rss_after_20_mb"]
    figures["torch_threads"] = torch.get_num_threads()
    return figures


def rss_scaling(small: dict, wide: dict) -> dict:
    """Peak RSS over the baseline = fixed + factor x weights, from two models of different size."""
    grown = [m["peak_rss_mb"] - m["rss_baseline_mb"] for m in (small, wide)]
    factor = (grown[1] - grown[0]) / (wide["weights_mb"] - small["weights_mb"])
    return {"rss_weight_factor": factor, "rss_fixed_overhead_mb": grown[0] - factor * small["weights_mb"]}


def measure_all(
    *,
    size: int = 128,
    steps: int = 10,
    threads: int = 1,
    unet_width: int = 32,
    rounds: int = 5,
    jobs: int = 200,
    wide_unet_width: int = 256,
) -> dict:
    """Every worker figure, on tiny models written to a temporary dir."""
    import torch

    saved = torch.get_num_threads()
    tmp = Path(tempfile.mkdtemp(prefix="sdbot-worker-bench-"))
    root = write_models(tmp / "small", unet_width)
    try:
        figures: dict = {"batch_ratio": batch_ratio(root, size=size, steps=steps, threads=threads, rounds=rounds)}
        figures["batch_ratio_fast"] = batch_ratio(
            root, size=size, steps=steps, threads=threads, rounds=rounds, batch_mode="fast"
        )
        figures.update(loop_lag_ms(root, size=size, steps=steps, threads=threads))
        small = memory(root, threads=threads, jobs=jobs)
        figures.update(small)
        figures["peak_rss_within_bound"] = small["peak_rss_mb"] <= small["rss_bound_mb"]
        figures["rss_flat"] = abs(small["rss_growth_mb"]) <= 0.05 * small["rss_after_20_mb"]
        wide = memory(write_models(tmp / "wide", wide_unet_width), threads=threads, jobs=20)
        figures.update(
            {
                "wide_weights_mb": wide["weights_mb"],
                "wide_peak_rss_mb": wide["peak_rss_mb"],
                "wide_rss_bound_mb": wide["rss_bound_mb"],
            }
        )
        figures.update(rss_scaling(small, wide))
        # the smallest checkpoint + 3 VAEs for which baseline + fixed + factor x weights <= the bound holds
        slack = 1.15 - figures["rss_weight_factor"]
        figures["rss_bound_holds_from_weights_mb"] = (
            figures["rss_fixed_overhead_mb"] / slack if slack > 0 else float("inf")
        )
        return figures
    finally:
        torch.set_num_threads(saved)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        print(json.dumps(_memory_child(json.loads(sys.argv[2]))))
        return
    args = arguments(__doc__, size=128, steps=10, threads=1, unet_width=32, rounds=5, jobs=200).parse_args()
    started = time.perf_counter()
    figures = measure_all(
        size=args.size,
        steps=args.steps,
        threads=args.threads,
        unet_width=args.unet_width,
        rounds=args.rounds,
        jobs=args.jobs,
    )
    print(
        f"cpu count {os.cpu_count()}, size {args.size}, steps {args.steps}, unet width {args.unet_width}, "
        f"{time.perf_counter() - started:.0f} s"
    )
    print_figures(figures)


if __name__ == "__main__":
    main()
