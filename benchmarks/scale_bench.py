"""Scale-out figures: the Ray backend with 1 and 2 CPU replicas, and its cost per job.

- throughput_1_replica, throughput_2_replicas: jobs per second through `RayWorker` with one and with two engine
  replicas, each limited to one CPU (Ray `num_cpus = 1`) and one torch thread, on a tiny model with a wide UNet
  (`--unet-width`, default 96) at `--size` so the UNet's compute dominates. `--jobs` jobs with different prompts
  and seeds are queued at once (Serve batches them on each replica, `batch_mode = "exact"`), timed from the
  first submit to the last result; best of `--rounds` after a warm-up. `throughput_local` is the in-process
  worker on the same jobs and thread count, for reference.
- scale_ratio: throughput_2_replicas / throughput_1_replica. Goal >= 1.6 on a 2-core machine.
- parallel_ceiling: what the machine itself gives: two plain processes rendering the same jobs with one thread
  each at the same time, over one alone (2.0 on two idle cores; less when something else runs). Measured
  between the Ray runs; a scale_ratio far under it would be the Ray path's fault, not the machine's.
- ray_overhead_ms_per_job: what the Ray path adds to one job over the local backend: jobs run one at a time
  (submit, await, next) through the local worker and through one replica, on the small tiny model
  (`--overhead-size`, 4 steps) where the overhead is visible; median per job of interleaved rounds, Ray minus
  local. `local_ms_per_job` and `ray_ms_per_job` are the two medians. Part of it is Serve's batch window: a
  lone job waits `batch_window_ms` for company on the replica (the local worker runs without a window here);
  `ray_overhead_ms_per_job_no_batch_wait` is the same with `batch_window_ms = 0`.

Ray runs in this process (`ray.init(num_cpus=2)`), as the tests start it.
Run: .venv/bin/python benchmarks/scale_bench.py [--jobs 16] [--size 256] [--steps 10] [--unet-width 96]
Each figure is printed last as `name: value`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import arguments, print_figures  # noqa: E402
from engine.config import EngineConfig, RayConfig  # noqa: E402
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


def _config(root: Path, model: str, replicas: int) -> EngineConfig:
    ray = RayConfig(replicas=replicas, num_gpus=0, num_cpus=1, max_ongoing_requests=4, start_timeout_s=300)
    return EngineConfig(
        models_dir=root,
        default_model=model,
        threads=1,
        job_timeout_s=0,
        max_queued_per_user=0,
        preview_every=0,
        backend="ray",
        ray=ray,
    )  # renders only: no step previews


def _requests(n: int, size: int, steps: int, offset: int = 0) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            PROMPTS[i % len(PROMPTS)],
            negative_prompt="blurry",
            seed=offset + i,
            steps=steps,
            width=size,
            height=size,
            sampler="Euler",
        )
        for i in range(n)
    ]


async def _all_at_once(worker, requests: list[GenerationRequest]) -> float:
    started = time.perf_counter()
    handles = [worker.submit(r, owner=i % 4) for i, r in enumerate(requests)]
    for handle in handles:
        await handle
    return time.perf_counter() - started


async def _one_by_one(worker, requests: list[GenerationRequest]) -> list[float]:
    times = []
    for r in requests:
        started = time.perf_counter()
        await worker.submit(r, owner=0)
        times.append(time.perf_counter() - started)
    return times


async def throughput(worker, args, rounds: int) -> float:
    await _all_at_once(worker, _requests(4, args.size, args.steps, offset=10_000))  # warm every replica
    best = min(
        [await _all_at_once(worker, _requests(args.jobs, args.size, args.steps, offset=100 * r)) for r in range(rounds)]
    )
    return args.jobs / best


def solo(root: Path, args) -> None:
    """A plain process rendering `--solo-jobs` jobs on one thread once told to (a line on stdin), printing the
    seconds it took: the unit of work of the parallel ceiling."""
    from engine.render.pipeline import Engine

    engine = Engine(dataclasses.replace(_config(root, "wide", 1), backend="local"))
    engine.render(_requests(1, args.size, args.steps)[0])
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    for r in _requests(args.solo_jobs, args.size, args.steps):
        engine.render(r)
    print(time.perf_counter() - started, flush=True)


def parallel_ceiling(root: Path, args) -> float:
    command = [
        sys.executable,
        __file__,
        "--solo",
        str(root),
        "--solo-jobs",
        "3",
        "--size",
        str(args.size),
        "--steps",
        str(args.steps),
    ]

    def run(copies: int) -> float:
        processes = [
            subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(copies)
        ]
        for process in processes:  # all loaded and warm before any starts
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        seconds = [float(process.stdout.readline()) for process in processes]
        for process in processes:
            process.wait()
        return max(seconds)

    return 2 * run(1) / run(2)


async def measure(args) -> dict[str, float]:
    import ray

    from engine.backends.ray_backend import RayWorker
    from engine.backends.worker import Worker
    from engine.tiny.models import write_tiny_model

    root = Path(tempfile.mkdtemp(prefix="sdbot-scale-"))
    write_tiny_model(root / "wide", unet_width=args.unet_width)
    write_tiny_model(root / "small")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    figures: dict[str, float] = {}
    try:
        local_config = dataclasses.replace(_config(root, "wide", 1), backend="local")
        async with Worker(local_config) as local:
            figures["throughput_local"] = await throughput(local, args, args.rounds)
        for replicas in (1, 2):
            worker = RayWorker(_config(root, "wide", replicas))
            await worker.ready()
            try:
                figures[f"throughput_{replicas}_replica{'s' if replicas > 1 else ''}"] = await throughput(
                    worker, args, args.rounds
                )
                assert len(worker.stats.by_replica) == replicas, worker.stats
            finally:
                await worker.close()
        figures["scale_ratio"] = figures["throughput_2_replicas"] / figures["throughput_1_replica"]
        figures["parallel_ceiling"] = await asyncio.to_thread(parallel_ceiling, root, args)

        small = _requests(args.overhead_jobs, args.overhead_size, 4)
        local = Worker(dataclasses.replace(_config(root, "small", 1), backend="local", batch_window_ms=0))
        local.start()
        try:
            await _one_by_one(local, small[:3])
            for suffix, window_ms in (("", EngineConfig.batch_window_ms), ("_no_batch_wait", 0)):
                worker = RayWorker(dataclasses.replace(_config(root, "small", 1), batch_window_ms=window_ms))
                await worker.ready()
                try:
                    await _one_by_one(worker, small[:3])
                    local_t, ray_t = [], []
                    for _ in range(args.rounds):  # interleaved, so drift in machine speed hits both alike
                        local_t += await _one_by_one(local, small)
                        ray_t += await _one_by_one(worker, small)
                finally:
                    await worker.close()
                if not suffix:
                    figures["local_ms_per_job"] = statistics.median(local_t) * 1000
                    figures["ray_ms_per_job"] = statistics.median(ray_t) * 1000
                figures[f"ray_overhead_ms_per_job{suffix}"] = (
                    statistics.median(ray_t) - statistics.median(local_t)
                ) * 1000
        finally:
            await local.close()
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return figures


def main() -> None:
    parser = arguments(
        __doc__, jobs=16, size=256, steps=10, unet_width=96, rounds=2, overhead_jobs=20, overhead_size=64
    )
    parser.add_argument("--solo", metavar="MODELS_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--solo-jobs", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.solo:
        return solo(Path(args.solo), args)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    logging.basicConfig(level=logging.WARNING)
    figures = asyncio.run(measure(args))
    print(
        f"cpus {os.cpu_count()}, jobs {args.jobs}, size {args.size}, steps {args.steps}, "
        f"unet width {args.unet_width}, one torch thread per replica"
    )
    print_figures(figures)


if __name__ == "__main__":
    main()
