"""The real bot, started through `sdbot run`'s own code path (`bot.app.serve`), against the Discord stand-in.

Each test gets a fresh database and outputs folder; `restart()` stops the bot and starts a new process-like
instance on the same files, for persistence tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import load_config
from bot.discord_endpoints import restore_discord_endpoints
from tests.discord_standin import DiscordStandIn, StandInGuild, StandInUser

FAST = "--size 64x64 --steps 2"  # tiny renders: the tiny model's images in well under a second


def write_config(
    root: Path, models_dir: Path, standin: DiscordStandIn, *, defaults: bool = False, **sections: dict[str, Any]
) -> Path:
    """`defaults`: only what points the bot at the stand-in and the temporary files; every limit, pace and
    cooldown as config.example.toml has it (else quick edits and rate limits out of the way)."""
    # One torch thread: the bot, the stand-in and pytest share the process, and two OpenMP threads spinning
    # against the event loop on a 2-core machine made a tiny render step take seconds instead of 0.03 s.
    # The engine in a thread (fast to start); tests of the child process set isolation = "process" themselves.
    engine = {
        "models_dir": str(models_dir),
        **({} if defaults else {"max_queued_per_user": 5}),
        "threads": 1,
        "isolation": "thread",
        **sections.get("engine", {}),
    }
    discord = {
        "api_base_url": standin.api_base_url,
        "gateway_url": standin.gateway_url,
        "guild_ids": [standin.guild.id],
        "outputs_dir": str(root / "outputs"),
        **({} if defaults else {"cooldown_s": 0.0, "edit_period_s": 0.2, "edits_per_channel": 1}),
        **sections.get("discord", {}),
    }
    database = {"url": f"sqlite+aiosqlite:///{root / 'sdbot.db'}", **sections.get("database", {})}
    # Rate limits out of the way (as cooldown_s above) unless a test sets them.
    moderation = {**({} if defaults else {"user_rate": 1000, "guild_rate": 10000}), **sections.get("moderation", {})}
    lines = []
    for name, values in (("engine", engine), ("database", database), ("discord", discord), ("moderation", moderation)):
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = root / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class RunningBot:
    standin: DiscordStandIn
    config_path: Path
    make_worker: Any = None  # e.g. tests.paced_engine.paced_worker(step_s): renders that last as long as asked
    faults: Any = None  # the thread worker's `on_render` when the test asked for one: a `FaultSwitch`
    bot: Any = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task | None = None
    _torch_threads: int = 0

    async def start(self) -> RunningBot:
        import torch

        from bot.app import serve

        self._torch_threads = self._torch_threads or torch.get_num_threads()  # the engine sets it process-wide
        config = load_config(self.config_path)
        started: asyncio.Future = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(serve(config, self.standin.token, self._stop, started, self.make_worker))
        done, _ = await asyncio.wait([self._task, started], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            self._task.result()
        if started not in done:
            raise AssertionError("the bot did not become ready in 30 s")
        self.bot = started.result()
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, 30)
        restore_discord_endpoints()
        if self._torch_threads:  # the tests after this one get the process's own thread count back
            import torch

            torch.set_num_threads(self._torch_threads)

    async def restart(self) -> RunningBot:
        await self.stop()
        return await self.start()

    @property
    def services(self):
        return self.bot.services


class FaultSwitch:
    """A thread worker's `on_render` (called in the worker thread before each render) that calls `inject(attempt)`
    while a test has set one: faults reach the engine through the worker's constructor."""

    inject: Any = None

    def __call__(self, attempt: Any) -> None:
        if self.inject is not None:
            self.inject(attempt)


@contextlib.asynccontextmanager
async def running_bot(
    tmp_path: Path, tiny_sd15: Path, *, step_s: float = 0.0, faults: bool = False, **sections: dict[str, Any]
):
    """The bot against a fresh stand-in; `step_s` > 0 paces every render step (tests/paced_engine.py); `faults`:
    the thread worker is given a `FaultSwitch` as its `on_render` (`running.faults.inject = ...`)."""
    models = tmp_path / "models"
    if not models.exists():
        models.mkdir()
        shutil.copytree(tiny_sd15, models / "tiny-sd15")
    # "tester" (the default user) and "alice" are plain members; "guild-owner" has every permission.
    guild = StandInGuild(members=[StandInUser("tester"), StandInUser("alice")])
    async with DiscordStandIn([guild]) as standin:
        make_worker = None
        if step_s:
            from tests.paced_engine import paced_worker

            make_worker = paced_worker(step_s)
        switch = FaultSwitch() if faults else None
        if switch is not None:
            from engine.backends.worker import Worker

            make_worker = lambda config: Worker(config, on_render=switch)  # noqa: E731
        running = RunningBot(standin, write_config(tmp_path, models, standin, **sections), make_worker, switch)
        await running.start()
        try:
            yield running
        finally:
            await running.stop()
