"""Reading weights files into tensors without executing them: safetensors, or a pickle only when allowed and then
weights-only. A leaf of engine.models: the loader, single-file checkpoints, networks, upscalers and previews all read
through it.

A pickle (.ckpt, .pt, .bin, .pth) can run code when it is loaded (spec §2): every weights reader goes through
`load_pickle`, refused unless `[engine] allow_pickle`, and then read with `torch.load(weights_only=True)`. The reason
a file is refused is one line (`refusal`), the same in errors, notes and listings (engine/render/refusals.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from engine.errors import EngineError

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".bin", ".pth")
PICKLE_REFUSAL = "pickle format; set [engine] allow_pickle = true to allow it"


class _File(Protocol):
    @property
    def path(self) -> Path: ...


F = TypeVar("F", bound=_File)


def is_pickle(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


def refusal(path: Path) -> str:
    """`easynegative.pt is refused (pickle format; …)`: a pickle file while `allow_pickle` is off."""
    return f"{path.name} is refused ({PICKLE_REFUSAL})"


def loadable(files: Iterable[F], allow_pickle: bool) -> list[F]:
    """`files` without the refused ones: what listings offer (a job that names a refused one hears why)."""
    return [f for f in files if allow_pickle or not is_pickle(f.path)]


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
        raise EngineError(refusal(path))
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything but plain tensors
        raise EngineError(f"{path.name} was refused: it holds more than plain weights ({exc})") from None
