"""Slash-command parameter types for the generation options, from the one vocabulary (`bot.option_spec`).

Annotate a parameter `steps: Steps | None = None`: discord.py reads the bounds from these, so /imagine and
/preset save accept the same values. Descriptions come from `bot.option_spec.describe`.
"""

from __future__ import annotations

from discord import app_commands

from bot.option_spec import BY_KEY


def _range(key: str, kind: type):
    low, high = BY_KEY[key].range or (None, None)
    return app_commands.Range[kind, kind(low), kind(high)]


Steps = _range("steps", int)
Cfg = _range("cfg_scale", float)
Seed = _range("seed", int)
ClipSkip = _range("clip_skip", int)
Batch = _range("batch_size", int)
Strength = _range("strength", float)
Hires = _range("hires", float)
HiresSteps = _range("hires_steps", int)
Prompt = app_commands.Range[str, 1, 4000]
Negative = app_commands.Range[str, 0, 4000]
