"""End to end: the whole bot through the Discord stand-in against a bare diffusers loop, in one run.

The bot is `sdbot run`'s code path (`bot.app.serve`) in this process, talking to the loopback stand-in with
Discord-like rate limits on (per-route buckets from `tests.discord_standin.DISCORD_LIKE` and the global 50
requests/s, so nothing wins by ignoring them). Members are simulated users sending `/imagine` at the same moment.
The engine runs as `sdbot run` runs it by default (`[engine] isolation = "process"`: in its child process), not
as the test harness runs it (in a thread of the bot's process, for a quick start): in a thread, the engine would
share one interpreter lock with the bot and with the stand-in, whose work is Discord's, not the bot's.

- `e2e_throughput_ratio_10`, `e2e_throughput_ratio_40`: 8 members x 1 job in one channel (128x128, Euler, 10
  and 40 steps, seeds 1..8), images per second from the first command to the last final message, over a bare
  diffusers loop rendering the same 8 images one after another with the same model, size, steps, CFG and
  torch threads. Rounds alternate bare / bot (after a warm-up of each); the figure is the median of the
  per-round ratios, so drift in the machine's load hits both sides alike. Goals: >= 0.97 (one torch thread per
  side, a quiet machine).
- `e2e_vs_batched_ratio_10`, `e2e_vs_batched_ratio_40`: the same bot rounds over bare diffusers rendering the 8
  images in batches of `limits.max_batch` (one pipeline call per batch, a generator per image), timed in the same
  rounds. The bot batches the burst too (the gather window); goal >= 0.85. With `batch_mode = "exact"` (the
  default, `--batch-mode`) the engine gives the UNet one image at a time so a batched image equals its solo
  render, and only the per-call work is shared; `--batch-mode fast` batches the tensors as diffusers does.
- `fast_engine_jobs_per_s`: the same path with the engine's render replaced (in the child, by the hook
  `stub_engine`) by a stub that returns a ready image after 20 ms per job: jobs delivered per second in one
  channel (`--fast-jobs` members, one job each, sent at once; from the first command to the last final).
  Goal >= 10.
- `burst_50_delivered`, `burst_50_seconds`: 50 members x 1 job at the same moment in one server, with the
  default config (only the stand-in's address, the files and the model folder are set), 2 steps at 128x128.
  Goal: 50 delivered, none refused (`burst_50_refused` counts refusals).

Run: .venv/bin/python benchmarks/e2e_bench.py [--rounds 3] [--members 8] [--unet-width 32] [--threads 1]
     [--batch-mode exact|fast]
Each figure is printed last as a `name: value` line. Request bodies are not validated against the OpenAPI spec
here (the tests do that): the stand-in shares this process's CPU, and Discord does not share the bot's.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks._common import arguments, print_figures  # noqa: E402
from engine.backends.process import HOOK_ENV  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from engine.tiny.models import write_tiny_model  # noqa: E402
from tests.bot.harness import RunningBot, write_config  # noqa: E402
from tests.discord_standin import DISCORD_LIKE, DiscordStandIn, Routes, StandInGuild, StandInUser  # noqa: E402

SIZE = 128
CFG = 7.0
STUB_SECONDS = 0.02
STUB_COLOUR = (90, 160)  # green and blue of every stub image


def prompt(seed: int, steps: int, size: int = SIZE) -> str:
    return (
        f"a photo of a cat, best quality --size {size}x{size} --steps {steps} --sampler Euler --cfg {CFG:g} "
        f"--seed {seed}"
    )


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="sdbot-e2e-bench-"))
        write_tiny_model(self.root / "models" / "tiny-sd15", unet_width=args.unet_width)
        torch.set_num_threads(args.threads)

    # --- the bare diffusers loop ---------------------------------------------------------------------------
    def bare_pipe(self):
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(
            self.root / "models" / "tiny-sd15", safety_checker=None, requires_safety_checker=False
        )
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def bare(self, pipe, steps: int, batch: int = 1) -> float:
        """Seconds for `members` images, `batch` per pipeline call."""
        seeds = list(range(1, self.args.members + 1))
        started = time.perf_counter()
        for first in range(0, len(seeds), batch):
            chunk = seeds[first : first + batch]
            pipe(
                ["a photo of a cat, best quality"] * len(chunk),
                num_inference_steps=steps,
                guidance_scale=CFG,
                height=SIZE,
                width=SIZE,
                generator=[torch.Generator("cpu").manual_seed(seed) for seed in chunk],
            )
        return time.perf_counter() - started

    # --- the bot -------------------------------------------------------------------------------------------
    async def start(self, name: str, members: list[StandInUser], *, defaults: bool = False, **sections):
        folder = self.root / name
        folder.mkdir()
        standin = DiscordStandIn([StandInGuild(members=list(members))], validate=False, rate_limits=DISCORD_LIKE)
        await standin.start()
        engine = {
            "threads": self.args.threads,
            "isolation": EngineConfig().isolation,
            "batch_mode": self.args.batch_mode,
            **sections.pop("engine", {}),
        }
        config = write_config(folder, self.root / "models", standin, defaults=defaults, engine=engine, **sections)
        return standin, await RunningBot(standin, config).start()

    @staticmethod
    async def burst(standin: DiscordStandIn, members: list[StandInUser], text) -> tuple[float, int, int]:
        """Every member sends one /imagine at once: (seconds to the last final, delivered, refused)."""
        mark = standin.mark()
        started = time.perf_counter()
        handles = await asyncio.gather(
            *(
                standin.send_interaction(standin.slash("imagine", {"prompt": text(i)}, user=m))
                for i, m in enumerate(members, start=1)
            )
        )

        async def outcome(h) -> str:
            done = asyncio.create_task(h.wait_original_message(lambda m: m.get("attachments"), timeout=3600))
            refused = asyncio.create_task(h.wait_for(Routes.FOLLOWUP, timeout=3600))
            finished, pending = await asyncio.wait([done, refused], return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            return "delivered" if done in finished else "refused"

        outcomes = await asyncio.gather(*(outcome(h) for h in handles))
        finals = [
            r.finished for r in standin.requests[mark:] if r.key == Routes.EDIT_ORIGINAL and r.files and r.status == 200
        ]
        last = max(finals) if finals else time.perf_counter()
        return last - started, outcomes.count("delivered"), outcomes.count("refused")

    async def throughput_ratio(self, steps: int) -> tuple[float, float]:
        """The medians of the per-round ratios: over the bare loop one by one, and over it in batches."""
        members = [StandInUser(f"member{i}") for i in range(self.args.members)]
        pipe = self.bare_pipe()
        # Default pacing and limits, but rates that let every round through.
        standin, running = await self.start(
            f"ratio-{steps}", members, defaults=True, moderation={"user_rate": 10000, "guild_rate": 100000}
        )
        batch = EngineConfig().limits.max_batch
        try:
            self.bare(pipe, steps)  # warm-up, every side
            self.bare(pipe, steps, batch)
            await self.burst(standin, members, lambda i: prompt(i, steps))
            ratios, batched = [], []
            for _ in range(self.args.rounds):
                bare_s = self.bare(pipe, steps)
                batched_s = self.bare(pipe, steps, batch)
                bot_s, delivered, _ = await self.burst(standin, members, lambda i: prompt(i, steps))
                assert delivered == len(members), delivered
                ratios.append(bare_s / bot_s)
                batched.append(batched_s / bot_s)
                log(
                    f"steps {steps}: bare {len(members) / bare_s:.3f} img/s, bare in batches of {batch} "
                    f"{len(members) / batched_s:.3f} img/s, bot {len(members) / bot_s:.3f} img/s, "
                    f"ratios {bare_s / bot_s:.3f} / {batched_s / bot_s:.3f}"
                )
        finally:
            await running.stop()
            await standin.stop()
        return statistics.median(ratios), statistics.median(batched)

    async def fast_engine(self) -> float:
        os.environ[HOOK_ENV] = f"{__spec__.name if __spec__ else 'benchmarks.e2e_bench'}:stub_engine"
        try:
            members = [StandInUser(f"member{i}") for i in range(self.args.fast_jobs)]
            standin, running = await self.start("fast", members, defaults=True)
            try:
                await self.burst(standin, members[:4], lambda i: prompt(i, 2))  # warm-up
                seconds, delivered, refused = await self.burst(standin, members, lambda i: prompt(i, 2))
                assert delivered == len(members) and not refused, (delivered, refused)
                final = next(r for r in reversed(standin.requests) if r.key == Routes.EDIT_ORIGINAL and r.files)
                pixel = Image.open(io.BytesIO(final.files[0].data)).getpixel((0, 0))
                assert tuple(pixel[1:3]) == STUB_COLOUR, "not the stub's image: the hook did not reach the engine"
                log(
                    f"fast engine: {delivered} jobs in {seconds:.2f} s, {len(standin.rate_limited_requests)} "
                    f"answered 429 by the stand-in's buckets"
                )
            finally:
                await running.stop()
                await standin.stop()
        finally:
            del os.environ[HOOK_ENV]
        return delivered / seconds

    async def burst_50(self) -> tuple[int, float, int]:
        members = [StandInUser(f"member{i}") for i in range(self.args.burst)]
        standin, running = await self.start("burst", members, defaults=True)
        try:
            seconds, delivered, refused = await self.burst(standin, members, lambda i: prompt(i, 2))
        finally:
            await running.stop()
            await standin.stop()
        return delivered, seconds, refused


def stub_engine(worker) -> None:
    """The engine child's hook (`engine.backends.process.HOOK_ENV`): its renders become `_stub_render`."""
    worker.engine.render_batch = types.MethodType(_stub_render, worker.engine)


def _stub_render(self, requests, on_step=None, should_stop=None):
    """The engine's render replaced: a ready image per job after 20 ms (the bot's work is what is measured)."""
    from engine.render.pipeline import RenderedImage, RenderResult

    results = []
    for request in requests:
        time.sleep(STUB_SECONDS)
        request = request.with_seed()
        image = Image.new("RGB", (request.width, request.height), (request.seed % 256, *STUB_COLOUR))
        results.append(
            RenderResult(
                request=request,
                images=[RenderedImage(image, request.seed, "stub")],
                model="tiny-sd15",
                vae=None,
                seconds=STUB_SECONDS,
            )
        )
    return results


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> dict[str, float]:
    bench = Bench(args)
    figures: dict[str, float] = {}
    for steps in (10, 40):
        one_by_one, batched = await bench.throughput_ratio(steps)
        figures[f"e2e_throughput_ratio_{steps}"] = one_by_one
        figures[f"e2e_vs_batched_ratio_{steps}"] = batched
    figures["fast_engine_jobs_per_s"] = await bench.fast_engine()
    delivered, seconds, refused = await bench.burst_50()
    figures["burst_50_refused"] = refused
    figures["burst_50_delivered"] = delivered
    figures["burst_50_seconds"] = seconds
    return figures


def main() -> None:
    args = arguments(
        __doc__,
        rounds=3,
        members=8,
        unet_width=32,
        threads=(1, "torch threads, for both sides"),
        fast_jobs=50,
        burst=(50, "members in the burst (the figures keep their names)"),
        batch_mode=(EngineConfig().batch_mode, "[engine] batch_mode of the bot: exact | fast"),
    ).parse_args()
    logging.basicConfig(level=logging.WARNING)
    figures = asyncio.run(run(args))
    print_figures(figures)


if __name__ == "__main__":
    main()
