"""Fixtures and helpers shared by the img2img and Hires tests: one loaded tiny model per module, UNet counting."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.render.pipeline import Engine
from engine.request import GenerationRequest


@pytest.fixture(scope="module")
def module_models(tmp_path_factory, tiny_sd15: Path) -> Path:
    """One models dir (and so one loaded checkpoint) for the module: these tests only read the checkpoint."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_sd15, root / "tiny-sd15")
    return root


@pytest.fixture(scope="module")
def engine(module_models: Path) -> Engine:
    return Engine(EngineConfig(models_dir=module_models))


@pytest.fixture(scope="module")
def vae2_engine(tmp_path_factory, tiny_vae2: Path) -> Engine:
    """An engine whose only checkpoint has a VAE that scales by 2 (`tiny_vae2`)."""
    root = tmp_path_factory.mktemp("models2")
    shutil.copytree(tiny_vae2, root / "tiny-vae2")
    return Engine(EngineConfig(models_dir=root))


def count_unet_calls(engine: Engine, request: GenerationRequest):
    """(UNet forward calls, the (step, total) progress reports, the result) of one render."""
    unet = engine.models.checkpoint("").pipe.unet
    calls, original, progress = [0], unet.forward, []

    def counting(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    unet.forward = counting
    try:
        result = engine.render(request, on_step=lambda step, total, latents: progress.append((step, total)))
    finally:
        del unet.forward
    return calls[0], progress, result
