"""Single-file checkpoints (SD 1.x, 2.x, SDXL `.safetensors`), loaded offline with shipped configs."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.errors import EngineError


def load_single_file_pipeline(path: Path, dtype: torch.dtype, allow_pickle: bool):
    raise EngineError(f"{path.name}: single-file checkpoints are not supported yet; use a diffusers folder")
