"""A timeline of one burst: where each job of 8 compatible /imagine commands waits between command and result.

The whole bot (`bot.app.serve`, the engine in its child process as `sdbot run` runs it) against the Discord
stand-in with Discord-like rate limits, as benchmarks/e2e_bench.py runs it. After a warm-up burst, `--members`
members send one /imagine each at the same moment (same settings, seeds 1..N), and each job's moments are taken
from both ends: the command reaching the bot's socket and its acknowledgement (the stand-in), the job's events
as its handle records them in the bot (queued, started with its batch size, finished), and the final message
with the images (the stand-in). A line per job, in ms from that job's command:

    seed  ack  queued  started (batch)  finished  posted   | waiting: queue, render, post

then the batches as the engine ran them, and these figures, each last on its line:
- `timeline_batches`: the batch sizes in start order, e.g. "4+4" (the gather window at work).
- `timeline_ack_ms_max`: the slowest acknowledgement.
- `timeline_queue_ms_max`: the longest wait from queued to started.
- `timeline_post_ms_median`: the median from the engine's result to the final message (PNG bytes to the bot,
  written to disk, uploaded).

Run: .venv/bin/python benchmarks/burst_timeline.py [--members 8] [--steps 10] [--threads 1] [--window-ms 50]
     [--batch-mode exact|fast]
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import arguments, print_figures  # noqa: E402
from benchmarks.e2e_bench import Bench, log, prompt  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from engine.jobs import JobHandle  # noqa: E402
from tests.discord_standin import Routes, StandInUser  # noqa: E402


class Recorder:
    """Every event recorded on a job handle in the bot, with its time: (seed, kind, perf_counter, batch)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str, float, int]] = []
        self._record = JobHandle.record

    def __enter__(self) -> Recorder:
        record, events = self._record, self.events

        def recorded(handle: JobHandle, event) -> None:
            events.append((handle.request.seed, event.kind, time.perf_counter(), getattr(event, "batch", 0)))
            record(handle, event)

        JobHandle.record = recorded  # a probe for this run, undone on exit
        return self

    def __exit__(self, *exc_info: object) -> None:
        JobHandle.record = self._record


async def timeline(args) -> dict[str, object]:
    bench = Bench(args)
    members = [StandInUser(f"member{i}") for i in range(args.members)]
    standin, running = await bench.start(
        "timeline",
        members,
        defaults=True,
        engine={"batch_window_ms": args.window_ms},
        moderation={"user_rate": 10000, "guild_rate": 100000},
    )
    try:
        await bench.burst(standin, members, lambda i: prompt(i, args.steps))  # warm-up: models, caches
        with Recorder() as recorder:
            mark = standin.mark()
            handles = await asyncio.gather(
                *(
                    standin.send_interaction(standin.slash("imagine", {"prompt": prompt(i, args.steps)}, user=m))
                    for i, m in enumerate(members, start=1)
                )
            )
            for h in handles:
                await h.wait_original_message(lambda m: m.get("attachments"), timeout=3600)
        finals = {
            r.params.get("webhook_token"): r.finished
            for r in standin.requests[mark:]
            if r.key == Routes.EDIT_ORIGINAL and r.files and r.status == 200
        }
    finally:
        await running.stop()
        await standin.stop()
    by_seed: dict[int, dict[str, tuple[float, int]]] = {}
    for seed, kind, at, batch in recorder.events:
        by_seed.setdefault(seed, {}).setdefault(kind, (at, batch))  # the first of each kind
    acks, queue_waits, posts, starts = [], [], [], []
    print("seed    ack  queued  started (batch)  finished  posted  | queue  render  post  (ms from the command)")
    for seed, h in enumerate(handles, start=1):
        sent = h.dispatched_at or 0.0
        moments = by_seed.get(seed, {})
        ms = {kind: (at - sent) * 1000 for kind, (at, _) in moments.items()}
        batch = moments.get("started", (0.0, 0))[1]
        posted = (finals.get(h.token, sent) - sent) * 1000
        ack = ((h.acked_at or sent) - sent) * 1000
        queued, started, finished = ms.get("queued", 0.0), ms.get("started", 0.0), ms.get("finished", 0.0)
        acks.append(ack)
        queue_waits.append(started - queued)
        posts.append(posted - finished)
        starts.append((started, batch))
        print(
            f"{seed:4d} {ack:6.0f} {queued:7.0f} {started:8.0f} ({batch}) {finished:12.0f} {posted:7.0f}  | "
            f"{started - queued:5.0f} {finished - started:7.0f} {posted - finished:5.0f}"
        )
    batches: list[int] = []
    last_start = None
    for started, batch in sorted(starts):
        if last_start is None or abs(started - last_start) > 1.0:  # jobs of one batch start together
            batches.append(batch)
        last_start = started
    log(f"load average while it ran: {Path('/proc/loadavg').read_text().split()[:3]}")
    return {
        "timeline_batches": "+".join(map(str, batches)),
        "timeline_ack_ms_max": max(acks),
        "timeline_queue_ms_max": max(queue_waits),
        "timeline_post_ms_median": statistics.median(posts),
    }


def main() -> None:
    args = arguments(
        __doc__,
        members=8,
        steps=10,
        unet_width=32,
        threads=(1, "torch threads"),
        window_ms=(EngineConfig().batch_window_ms, "[engine] batch_window_ms"),
        batch_mode=(EngineConfig().batch_mode, "[engine] batch_mode: exact | fast"),
    ).parse_args()
    logging.basicConfig(level=logging.WARNING)
    print_figures(asyncio.run(timeline(args)), digits=1)


if __name__ == "__main__":
    main()
