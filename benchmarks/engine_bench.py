"""Engine benchmarks, measured side by side in one run on the same tiny model.

- overhead_ratio: the engine's time per image (A1111 prompt encoding, fresh scheduler, CPU noise, own decode,
  infotext) over a bare diffusers call doing the same work. Goal <= 1.03.
- vae_switch_ratio: alternating two VAEs every image over a fixed VAE (both cached). Goal <= 1.03.
- lora_same_set_ratio: every job with the same LoRA (merged once) over no LoRA. Goal <= 1.02: merged weights
  cost nothing per step.
- lora_switch_ms: the extra work of a job whose LoRA set differs from the previous job's (restore the weights,
  merge the new set), timed on its own, with a rank-8 LoCon on every Linear/Conv2d layer of the UNet and text
  encoder; lora_switch_fraction is that over one render (20 steps by default); lora_switch_render_ms is the same
  extra seen as the difference of whole renders (noisier: it carries the render's own variation).
- classifier_ms_per_image: the image classifier (the tiny test ViT) scoring a batch of 4 rendered
  images, per image; classifier_render_fraction: that over engine_ms_per_image (the cost it adds to a render).
- The worker's figures come from benchmarks/worker_measures.py when present.
- process_boundary_ms_per_job: what running the engine in a child process (`isolation = "process"`)
  adds per job over the in-process worker, jobs one at a time (submit to result), 128x128, 10 steps, interleaved;
  process_boundary_ratio is the same as a ratio. Goals: under 20 ms, or under 2 % of the render.

Run: .venv/bin/python benchmarks/engine_bench.py [--rounds N] [--size 128] [--steps 20] [--lora-only]
Each figure is printed last as `name: value`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from benchmarks._common import arguments, print_figures  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from engine.render.classifier import ScoringStage  # noqa: E402
from engine.render.pipeline import Engine  # noqa: E402
from engine.request import GenerationRequest  # noqa: E402
from engine.tiny.classifier import write_tiny_classifier  # noqa: E402
from engine.tiny.models import perturbed_vae, write_ldm_vae, write_tiny_model  # noqa: E402
from engine.tiny.networks import write_network  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(rounds: int, size: int, steps: int, unet_width: int, lora_only: bool = False) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="sdbot-bench-"))
    write_tiny_model(root / "bench", unet_width=unet_width)
    engine = Engine(EngineConfig(models_dir=root))
    ckpt = engine.models.checkpoint("bench")
    if lora_only:
        return measure_loras(
            engine,
            root,
            lambda: GenerationRequest(
                prompt="a photo of a cat, best quality",
                negative_prompt="blurry",
                steps=steps,
                sampler="Euler",
                seed=1,
                width=size,
                height=size,
                vae="none",
            ),
            rounds,
        )
    (root / "VAE").mkdir()
    write_ldm_vae(perturbed_vae(ckpt.own_vae, 1), root / "VAE" / "a.safetensors")
    write_ldm_vae(perturbed_vae(ckpt.own_vae, 2), root / "VAE" / "b.safetensors")
    pipe = ckpt.pipe
    prompt, negative = "a photo of a cat, best quality", "blurry"

    def request(vae: str = "none", seed: int = 1) -> GenerationRequest:
        return GenerationRequest(
            prompt=prompt,
            negative_prompt=negative,
            steps=steps,
            sampler="Euler",
            seed=seed,
            width=size,
            height=size,
            vae=vae,
        )

    from diffusers import EulerDiscreteScheduler

    base_scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)

    def bare() -> None:
        pipe.scheduler = base_scheduler
        pipe(
            prompt,
            negative_prompt=negative,
            num_inference_steps=steps,
            guidance_scale=7.0,
            height=size,
            width=size,
            generator=torch.Generator("cpu").manual_seed(1),
        )

    scorer = ScoringStage(write_tiny_classifier(root / "classifier"), engine.models.device)
    scored = [img.image for seed in range(4) for img in engine.render(request(seed=seed)).images]

    for _ in range(2):  # warm up both paths and both VAEs
        bare()
        engine.render(request())
        engine.render(request("a"))
        engine.render(request("b"))
        scorer(scored)
    bare_t, ours_t, fixed_t, switch_t, score_t = [], [], [], [], []
    for _ in range(rounds):  # interleaved, so drift in machine speed hits both sides alike
        bare_t.append(timed(bare))
        ours_t.append(timed(lambda: engine.render(request())))
        fixed_t.append(timed(lambda: (engine.render(request("a")), engine.render(request("a")))))
        switch_t.append(timed(lambda: (engine.render(request("a")), engine.render(request("b")))))
        score_t.append(timed(lambda: scorer(scored)) / len(scored))
    figures = {
        "bare_ms_per_image": statistics.median(bare_t) * 1000,
        "engine_ms_per_image": statistics.median(ours_t) * 1000,
        "overhead_ratio": statistics.median(ours_t) / statistics.median(bare_t),
        "vae_switch_ratio": statistics.median(switch_t) / statistics.median(fixed_t),
        "classifier_ms_per_image": statistics.median(score_t) * 1000,
        "classifier_render_fraction": statistics.median(score_t) / statistics.median(ours_t),
    }
    figures.update(measure_loras(engine, root, request, rounds))
    return figures


def measure_loras(engine: Engine, root: Path, request, rounds: int) -> dict[str, float]:
    """LoRA jobs: same set every job vs none; a different set than the previous job vs the same set."""
    from engine.networks.tags import tags_of

    pipe = engine.models.checkpoint("bench").pipe
    for name, seed in (("a", 1), ("b", 2)):
        write_network(pipe, root / "Lora" / f"{name}.safetensors", rank=8, seed=seed, std=0.05)
    base = request()

    def with_lora(name: str) -> GenerationRequest:
        return base.replace(prompt=f"{base.prompt} <lora:{name}:0.8>")

    for _ in range(2):
        engine.render(with_lora("a"))
        engine.render(with_lora("b"))
    none_t, same_t, switch_t, merge_t = [], [], [], []  # merge_t: activate() with a different set
    for _ in range(rounds):
        engine.render(base)  # untimed: the weights are the checkpoint's
        none_t.append(timed(lambda: engine.render(base)))
        engine.render(with_lora("a"))  # untimed: merges a
        same_t.append(timed(lambda: engine.render(with_lora("a"))))
        switch_t.append(timed(lambda: engine.render(with_lora("b"))))  # a -> b
        same_t.append(timed(lambda: engine.render(with_lora("b"))))
        switch_t.append(timed(lambda: engine.render(with_lora("a"))))  # b -> a
        for name in ("b", "a"):
            tags = tags_of(with_lora(name).prompt)
            merge_t.append(timed(lambda tags=tags: engine.loras.activate(pipe, "sd", tags)))
    render_s = statistics.median(same_t)
    switch_ms = statistics.median(merge_t) * 1000
    return {
        "lora_render_ms": render_s * 1000,
        "lora_same_set_ratio": render_s / statistics.median(none_t),
        "lora_switch_render_ms": (statistics.median(switch_t) - render_s) * 1000,
        "lora_switch_ms": switch_ms,
        "lora_switch_fraction": switch_ms / (render_s * 1000),
    }


async def measure_process_boundary(rounds: int, unet_width: int, size: int = 128, steps: int = 10) -> dict[str, float]:
    """The same jobs, one at a time, on the in-process worker and on the engine child, interleaved."""
    import dataclasses

    from engine.backends.process import ProcessWorker
    from engine.backends.worker import Worker

    root = Path(tempfile.mkdtemp(prefix="sdbot-bench-process-"))
    write_tiny_model(root / "bench", unet_width=unet_width)
    # Renders only: no step previews, and no gather window (each job here is alone: both sides would wait it).
    config = EngineConfig(
        models_dir=root,
        default_model="bench",
        threads=1,
        job_timeout_s=0,
        max_queued_per_user=0,
        preview_every=0,
        batch_window_ms=0,
    )
    thread_t, process_t = [], []
    async with (
        Worker(dataclasses.replace(config, isolation="thread")) as local,
        ProcessWorker(dataclasses.replace(config, isolation="process")) as child,
    ):
        await child.ready()

        async def job(worker, seed: int) -> float:
            start = time.perf_counter()
            result = await worker.submit(
                GenerationRequest(
                    prompt="a photo of a cat", steps=steps, width=size, height=size, sampler="Euler", seed=seed
                ),
                owner=1,
            )
            assert result.images
            return time.perf_counter() - start

        for seed in range(3):  # warm up both
            await job(local, seed)
            await job(child, seed)
        for i in range(rounds):
            thread_t.append(await job(local, i))
            process_t.append(await job(child, i))
    thread_ms, process_ms = statistics.median(thread_t) * 1000, statistics.median(process_t) * 1000
    return {
        "thread_ms_per_job": thread_ms,
        "process_ms_per_job": process_ms,
        "process_boundary_ms_per_job": process_ms - thread_ms,
        "process_boundary_ratio": process_ms / thread_ms,
    }


def main() -> None:
    parser = arguments(__doc__, rounds=15, size=128, steps=20, unet_width=32)
    parser.add_argument("--skip-worker", action="store_true", help="only the engine figures")
    parser.add_argument("--lora-only", action="store_true", help="only the lora_* figures")
    parser.add_argument("--skip-process", action="store_true", help="not the process boundary's cost")
    args = parser.parse_args()
    figures = measure(args.rounds, args.size, args.steps, args.unet_width, args.lora_only)
    if not args.skip_process and not args.lora_only:
        import asyncio

        figures.update(asyncio.run(measure_process_boundary(args.rounds, args.unet_width)))
    if not args.skip_worker and not args.lora_only:
        try:
            from benchmarks import worker_measures
        except ImportError:
            worker_measures = None
        if worker_measures is not None:
            figures.update(worker_measures.measure_all())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, size {args.size}, steps {args.steps}")
    print_figures(figures)


if __name__ == "__main__":
    main()
