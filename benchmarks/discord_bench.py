"""Interaction acknowledgement latency: 50 users x 4 commands through the Discord stand-in.

The real bot (`sdbot run`'s code path, tiny model, SQLite file) answers /imagine, /preset save, /preset list and
/queue for 50 simulated users at once, each sending its next command when the previous one was acknowledged
(as a person would), while the engine renders the /imagine jobs. Latency is measured by the stand-in from writing
INTERACTION_CREATE to receiving the first callback (what Discord's 3 s limit applies to).

Run: .venv/bin/python benchmarks/discord_bench.py [--users 50]
Prints `ack_ms_p50`, `ack_ms_p99`, `ack_ms_max`, `acked_within_3s`, then the same latencies for a burst (all
200 commands at the same instant, `burst_ack_ms_*`), then what journaling a command costs before its deferral
(`journal_append_us_p50`/`_p99`: one committed append to the WAL journal) last, as `name: value` lines.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import arguments, print_figures  # noqa: E402
from engine.tiny.models import write_tiny_model  # noqa: E402
from tests.bot.harness import RunningBot, write_config  # noqa: E402
from tests.discord_standin import DiscordStandIn, StandInGuild, StandInUser  # noqa: E402

VALIDATE = True


async def measure(users: int, burst: bool = False) -> dict[str, float]:
    """`burst`: every user sends all four commands at the same instant (a stress case, not a person)."""
    root = Path(tempfile.mkdtemp(prefix="sdbot-discord-bench-"))
    write_tiny_model(root / "models" / "tiny-sd15")
    members = [StandInUser(f"user{i}") for i in range(users)]
    async with DiscordStandIn([StandInGuild(members=list(members))], validate=VALIDATE) as standin:
        running = RunningBot(standin, write_config(root, root / "models", standin, discord={"edit_period_s": 1.0}))
        await running.start()
        try:

            def commands(user: StandInUser) -> list[dict]:
                return [
                    standin.slash("imagine", {"prompt": "a cat --size 64x64 --steps 2"}, user=user),
                    standin.slash("preset save", {"name": "fast", "options": "--steps 2 --size 64x64"}, user=user),
                    standin.slash("preset list", {}, user=user),
                    standin.slash("queue", {}, user=user),
                ]

            async def user_session(user: StandInUser) -> list:
                """One user's four commands, each sent once the previous one was acknowledged."""
                handles = []
                for payload in commands(user):
                    handle = await standin.send_interaction(payload)
                    await handle.wait_callback(timeout=30)
                    handles.append(handle)
                return handles

            async def user_burst(user: StandInUser) -> list:
                handles = await asyncio.gather(*(standin.send_interaction(p) for p in commands(user)))
                await asyncio.gather(*(h.wait_callback(timeout=30) for h in handles))
                return list(handles)

            sessions = await asyncio.gather(*((user_burst if burst else user_session)(u) for u in members))
            handles = [h for session in sessions for h in session]
            # let the renders finish before tearing down, so shutdown does not skew anything
            imagine = [session[0] for session in sessions]
            await asyncio.gather(
                *(h.wait_original_message(lambda m: m.get("attachments"), timeout=300) for h in imagine)
            )
            latencies = sorted(h.ack_latency * 1000 for h in handles)
            standin.assert_no_invalid_requests()
        finally:
            await running.stop()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    return {
        "interactions": float(len(latencies)),
        "ack_ms_p50": statistics.median(latencies),
        "ack_ms_p99": p99,
        "ack_ms_max": latencies[-1],
        "acked_within_3s": float(sum(1 for x in latencies if x < 3000)),
    }


def journal_cost(entries: int = 2000) -> dict[str, float]:
    """Microseconds per committed append (plus its settle) to the command journal, as the ack path pays it."""
    import time

    from bot.store.journal import Ack, Journal

    journal = Journal(Path(tempfile.mkdtemp(prefix="sdbot-journal-bench-")) / "journal.db")
    appends = []
    for i in range(entries):
        ack = Ack(i, 1, "t" * 200, 5, 6, 7, {"typed": {"prompt": "a cat --size 64x64 --steps 2"}, "presets": []})
        start = time.perf_counter()
        journal.append(ack)
        appends.append((time.perf_counter() - start) * 1e6)
        journal.settle(i)
    journal.close()
    appends.sort()
    return {
        "journal_append_us_p50": statistics.median(appends),
        "journal_append_us_p99": appends[int(0.99 * (len(appends) - 1))],
    }


def main() -> None:
    args = arguments(__doc__, users=50).parse_args()
    figures = asyncio.run(measure(args.users))
    burst = asyncio.run(measure(args.users, burst=True))
    figures.update({f"burst_{k}": v for k, v in burst.items() if k.startswith("ack_ms")})
    figures.update(journal_cost())
    print_figures(figures, digits=1)


if __name__ == "__main__":
    main()
