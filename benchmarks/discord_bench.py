"""Interaction acknowledgement latency: 50 users x 4 commands through the Discord stand-in, all at once.

The real bot (`sdbot run`'s code path, tiny model, SQLite file) answers /imagine, /preset save, /preset list and
/queue for 50 simulated users sending at the same moment. Latency is measured by the stand-in from writing
INTERACTION_CREATE to receiving the first callback (what Discord's 3 s limit applies to).

Run: .venv/bin/python benchmarks/discord_bench.py [--users 50]
Prints `ack_ms_p50`, `ack_ms_p99`, `ack_ms_max`, `acked_within_3s` last, as `name: value` lines.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.tiny import write_tiny_model  # noqa: E402
from tests.bot.harness import RunningBot, write_config  # noqa: E402
from tests.discord_standin import DiscordStandIn, StandInGuild, StandInUser  # noqa: E402


async def measure(users: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="sdbot-discord-bench-"))
    write_tiny_model(root / "models" / "tiny-sd15")
    members = [StandInUser(f"user{i}") for i in range(users)]
    async with DiscordStandIn([StandInGuild(members=list(members))]) as standin:
        running = RunningBot(standin, write_config(root, root / "models", standin,
                                                   discord={"edit_period_s": 1.0}))
        await running.start()
        try:
            def commands(user: StandInUser) -> list[dict]:
                return [
                    standin.slash("imagine", {"prompt": "a cat --size 64x64 --steps 2"}, user=user),
                    standin.slash("preset save", {"name": "fast", "options": "--steps 2 --size 64x64"}, user=user),
                    standin.slash("preset list", {}, user=user),
                    standin.slash("queue", {}, user=user),
                ]

            payloads = [p for u in members for p in commands(u)]
            handles = await asyncio.gather(*(standin.send_interaction(p) for p in payloads))
            await asyncio.gather(*(h.wait_callback(timeout=30) for h in handles))
            # let the renders finish before tearing down, so shutdown does not skew anything
            imagine = handles[0::4]
            await asyncio.gather(*(h.wait_original_message(lambda m: m.get("attachments"), timeout=300)
                                   for h in imagine))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.users))
    for name, value in figures.items():
        print(f"{name}: {value:.1f}")


if __name__ == "__main__":
    main()
