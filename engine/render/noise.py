"""The seeds' starting noise, drawn as A1111 draws it; shared by the first pass and the Hires second pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def initial_noise(
    seeds: Sequence[int], width: int, height: int, channels: int, factor: int
) -> tuple[torch.Tensor, list]:
    """A1111's CPU RNG: per image, a fresh CPU generator seeded with its seed, the same on every device. The noise
    has the latent's shape: `factor` is the model's VAE scale (`pipe.vae_scale_factor`, 8 for SD and SDXL)."""
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    noise = torch.stack([torch.randn((channels, height // factor, width // factor), generator=g) for g in generators])
    return noise, generators
