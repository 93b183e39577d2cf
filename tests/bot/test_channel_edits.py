"""`ChannelEdits` and `ProgressEdits`: the pace of progress edits per channel, coalescing, dropping a job that
ended, the shared cap, and one failing edit costing only itself (plain asyncio, no Discord)."""

from __future__ import annotations

import asyncio

from bot.channel_edits import ChannelEdits, ProgressEdits

HOUR = 3600.0  # a period no test waits out: what is over the rate stays waiting


async def until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


async def settle() -> None:
    """Let every task that can run now run (for what must NOT happen)."""
    for _ in range(20):
        await asyncio.sleep(0)


class Shown:
    """Records which edits ran, in order."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def edit(self, name: str):
        async def show() -> None:
            self.ran.append(name)

        return show


async def test_edits_past_the_rate_wait_for_the_next_period():
    shown, edits = Shown(), ChannelEdits(rate=2, period_s=HOUR)
    for name in ("a", "b", "c"):
        edits.want(name, shown.edit(name))
    await until(lambda: len(shown.ran) == 2)
    await settle()
    assert shown.ran == ["a", "b"]  # oldest first; "c" waits for a slot


async def test_a_waiting_slot_is_taken_once_the_period_has_passed():
    shown, edits = Shown(), ChannelEdits(rate=1, period_s=0.01)
    for name in ("a", "b"):
        edits.want(name, shown.edit(name))
    await until(lambda: shown.ran == ["a", "b"])


async def test_newer_progress_replaces_older_and_keeps_its_place():
    shown, edits = Shown(), ChannelEdits(rate=2, period_s=HOUR)
    edits.want("a", shown.edit("a1"))
    edits.want("b", shown.edit("b1"))
    edits.want("a", shown.edit("a2"))  # before "a" had its turn
    await until(lambda: len(shown.ran) == 2)
    await settle()
    assert shown.ran == ["a2", "b1"]


async def test_a_job_that_ended_drops_its_pending_progress():
    shown, edits = Shown(), ChannelEdits(rate=5, period_s=HOUR)
    edits.want("a", shown.edit("a"))
    edits.want("b", shown.edit("b"))
    edits.forget("a")
    await until(lambda: shown.ran == ["b"])
    await settle()
    assert shown.ran == ["b"]


async def test_a_failing_edit_costs_only_itself():
    shown, edits = Shown(), ChannelEdits(rate=5, period_s=HOUR)

    async def broken() -> None:
        raise ConnectionError("reset by peer")

    edits.want("a", broken)
    edits.want("b", shown.edit("b"))
    await until(lambda: shown.ran == ["b"])


class Slots:
    """A shared cap that lets `free` calls through and holds the rest."""

    def __init__(self, free: int) -> None:
        self.free, self.taken = free, 0
        self.opened = asyncio.Event()

    async def acquire(self) -> None:
        if self.taken >= self.free:
            await self.opened.wait()
        self.taken += 1


async def test_every_channel_shares_the_bots_cap_on_progress_calls():
    shown, slots = Shown(), Slots(free=1)
    progress = ProgressEdits(rate=5, period_s=HOUR, slots=slots)
    assert progress.channel(1) is progress.channel(1) and progress.channel(1) is not progress.channel(2)
    progress.channel(1).want("a", shown.edit("a"))
    progress.channel(2).want("b", shown.edit("b"))
    await until(lambda: len(shown.ran) == 1)
    await settle()
    assert len(shown.ran) == 1  # the other channel's edit waits for the shared cap
    slots.opened.set()
    await until(lambda: sorted(shown.ran) == ["a", "b"])
