"""Shared fixtures: tiny random models written once per test session, a PostgreSQL server, and `--slow`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

# Under pytest-xdist the workers share the cores: each worker (and the engine children it starts, which inherit the
# variable) gets its share of torch threads instead of all of them, so the workers do not fight over every core.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow",
        action="store_true",
        default=False,
        help="run the long fuzzing runs (10,000+ cases) and other slow tests",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--slow"):
        from hypothesis import settings

        settings.register_profile("slow", max_examples=10_000, deadline=None)
        settings.load_profile("slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_sd15(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD 1.x model in diffusers layout (read-only: copy it before changing anything)."""
    from engine.tiny.models import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-sd15")


@pytest.fixture(scope="session")
def tiny_vae2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD 1.x model whose VAE has two blocks: it scales by 2, not 8 (latents are H/2 x W/2; read-only)."""
    from engine.tiny.models import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny2") / "tiny-vae2", vae_blocks=2)


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.tiny.models import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tinyxl") / "tiny-sdxl", family="sdxl")


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


@pytest.fixture
def models_dir(tmp_path: Path, tiny_sd15: Path) -> Path:
    """A fresh models dir holding the tiny SD 1.x checkpoint as `tiny-sd15`."""
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(tiny_sd15, root / "tiny-sd15")
    return root


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """A real PostgreSQL server's URL for the whole run (tests/postgres.py): skips only where none can start."""
    from tests import postgres

    try:
        return postgres.start()
    except postgres.NoPostgres as exc:
        pytest.skip(str(exc))
