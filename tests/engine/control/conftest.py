"""Tiny pipelines and tiny ControlNets for them, built once per test session (read-only: copy before changing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_pipes() -> dict[str, Any]:
    """The tiny SD 1.x and SDXL pipelines, in memory."""
    from engine.tiny.models import build_tiny_pipeline

    return {"sd15": build_tiny_pipeline("sd15"), "sdxl": build_tiny_pipeline("sdxl")}


@pytest.fixture(scope="session")
def tiny_controlnets(tiny_pipes: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each tiny family's ControlNet as a diffusers folder and as an original-layout file, plus an SDXL union."""
    from engine.tiny.controlnet import build_tiny_controlnet, write_original_controlnet

    root = tmp_path_factory.mktemp("controlnets")
    paths: dict[str, Path] = {}
    for family, pipe in tiny_pipes.items():
        model = build_tiny_controlnet(pipe.unet, seed=7)
        model.save_pretrained(root / f"tiny-{family}-folder", safe_serialization=True)
        paths[f"{family}-folder"] = root / f"tiny-{family}-folder"
        paths[f"{family}-file"] = write_original_controlnet(model, root / f"tiny_{family}_canny.safetensors")
    union = build_tiny_controlnet(tiny_pipes["sdxl"].unet, seed=8, union=True)
    union.save_pretrained(root / "tiny-sdxl-union", safe_serialization=True)
    paths["sdxl-union"] = root / "tiny-sdxl-union"
    return paths
