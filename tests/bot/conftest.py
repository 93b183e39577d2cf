"""Fixtures for the Discord side: the real bot against the stand-in (see tests/bot/harness.py)."""

from __future__ import annotations

import pytest_asyncio

from tests.bot.harness import running_bot


@pytest_asyncio.fixture
async def harness(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15) as running:
        yield running
