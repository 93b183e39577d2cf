"""The real bot against the stand-in, with settings that keep fault tests fast (see _helpers)."""

from __future__ import annotations

import pytest_asyncio

from tests.bot.harness import running_bot
from tests.reliability._helpers import DISCORD, ENGINE, recovered


@pytest_asyncio.fixture
async def bot(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15, engine=ENGINE, discord=DISCORD) as running:
        await recovered(running)
        yield running
