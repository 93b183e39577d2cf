"""The seeds' starting noise, drawn as A1111 draws it; shared by the first pass and the Hires second pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def initial_noise(seeds: Sequence[int], width: int, height: int, channels: int = 4) -> tuple[torch.Tensor, list]:
    """A1111's CPU RNG: per image, a fresh CPU generator seeded with its seed, the same on every device."""
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    noise = torch.stack([torch.randn((channels, height // 8, width // 8), generator=g) for g in generators])
    return noise, generators
