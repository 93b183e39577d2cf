"""Reading weights files into tensors without executing them: safetensors, or a pickle only when allowed and then
weights-only. A leaf of engine.models: the loader, single-file checkpoints, networks and previews all read through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engine.errors import EngineError

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".bin", ".pth")


def read_state_dict(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """Tensors from a weights file. Never runs code: safetensors, or a pickle only with weights_only=True."""
    suffix = path.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for broken files
            raise EngineError(f"{path.name} is not a readable safetensors file ({exc})") from None
    if suffix in PICKLE_SUFFIXES:
        data = load_pickle(path, allow_pickle)
        if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
            data = data["state_dict"]
        if not isinstance(data, dict):
            raise EngineError(f"{path.name} does not hold a state dict")
        return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    raise EngineError(f"{path.name}: unsupported file type; use .safetensors")


def load_pickle(path: Path, allow_pickle: bool) -> Any:
    """A pickle file's data, only with `allow_pickle` and then with `weights_only=True`: never runs its code."""
    if not allow_pickle:
        raise EngineError(
            f"{path.name} is a pickle file ({path.suffix.lower()}), which can run code when loaded; convert it to "
            f".safetensors, or set allow_pickle = true in [engine] to load it in weights-only mode"
        )
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything but plain tensors
        raise EngineError(f"{path.name} was refused: it holds more than plain weights ({exc})") from None
