"""engine.control.stage: a job's units become a hook and infotext entries; idle units load nothing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine.config import EngineConfig
from engine.control.library import legacy_hash
from engine.control.stage import ControlStage
from engine.control.units import ControlUnit
from engine.errors import EngineError


@pytest.fixture
def stage(tmp_path: Path, tiny_controlnets: dict[str, Path]) -> ControlStage:
    root = tmp_path / "models" / "ControlNet"
    root.mkdir(parents=True)
    shutil.copy(tiny_controlnets["sd15-file"], root / "control_tiny_sd15_canny.safetensors")
    shutil.copy(tiny_controlnets["sdxl-file"], root / "tiny_xl_canny.safetensors")
    config = EngineConfig(models_dir=tmp_path / "models")
    return ControlStage(config, torch.device("cpu"), torch.float32, cache_size=2)


def _image() -> np.ndarray:
    image = np.zeros((64, 96, 3), dtype=np.uint8)
    image[10:50, 20:70] = 200
    return image


def _prepare(stage: ControlStage, pipe: Any, *units: ControlUnit):
    return stage.prepare(
        units,
        [_image() for _ in units],
        unet_config=dict(pipe.unet.config),
        checkpoint_key="ckpt",
        checkpoint_name="tiny",
        width=64,
        height=64,
        classifier_free_guidance=True,
    )


def test_units_become_a_hook_and_infotext_entries(stage: ControlStage, tiny_pipes: dict[str, Any]) -> None:
    unit = ControlUnit(model="control_tiny_sd15_canny", module="canny")
    prepared = _prepare(stage, tiny_pipes["sd15"], unit, unit.replace(module="invert", weight=0.5))
    assert prepared.hook is not None and len(prepared.hook.units) == 2
    assert prepared.hook.units[0].detected.shape == (512, 768, 3)  # canny at its 512 processor resolution
    label = f"control_tiny_sd15_canny [{legacy_hash(stage.library.find('control_tiny_sd15_canny').path)}]"
    assert list(prepared.params) == ["ControlNet 0", "ControlNet 1"]
    assert prepared.params["ControlNet 0"].startswith(f"Module: canny, Model: {label}, Weight: 1.0")
    assert stage.cache.disk_loads == 1  # the same ControlNet serves both units


def test_idle_units_are_written_but_load_nothing(stage: ControlStage, tiny_pipes: dict[str, Any]) -> None:
    unit = ControlUnit(model="control_tiny_sd15_canny", module="canny", weight=0.0)
    prepared = _prepare(stage, tiny_pipes["sd15"], unit, unit.replace(weight=1.0, guidance_end=0.0))
    assert prepared.hook is None
    assert "Weight: 0.0" in prepared.params["ControlNet 0"]
    assert stage.cache.disk_loads == 0


def test_a_missing_model_or_another_family_is_one_line(stage: ControlStage, tiny_pipes: dict[str, Any]) -> None:
    with pytest.raises(EngineError, match="ControlNet model 'control_v11p_sd15_canny' not found; available: "):
        _prepare(stage, tiny_pipes["sd15"], ControlUnit(model="control_v11p_sd15_canny [d14c016b]"))
    with pytest.raises(EngineError, match="ControlNet tiny_xl_canny is for SDXL; the checkpoint tiny is SD 1.x"):
        _prepare(stage, tiny_pipes["sd15"], ControlUnit(model="tiny_xl_canny", weight=0.0))


def test_a_unit_without_a_model_gets_the_one_its_module_names(stage: ControlStage, tiny_pipes: dict[str, Any]) -> None:
    """As the extension's UI: canny picks a ControlNet with canny in its name, of the checkpoint's family."""
    prepared = _prepare(stage, tiny_pipes["sd15"], ControlUnit(module="canny"))
    assert "Model: control_tiny_sd15_canny [" in prepared.params["ControlNet 0"]
    prepared = _prepare(stage, tiny_pipes["sdxl"], ControlUnit(module="canny"))
    assert "Model: tiny_xl_canny [" in prepared.params["ControlNet 0"]
    with pytest.raises(EngineError, match="fits module tile_resample for SD 1.x: name a tile ControlNet"):
        _prepare(stage, tiny_pipes["sd15"], ControlUnit(module="tile_resample"))
    with pytest.raises(EngineError, match="fits module none for SD 1.x: name the ControlNet to use"):
        _prepare(stage, tiny_pipes["sd15"], ControlUnit(module="none"))
