"""Pickle files (.ckpt, .pt, .bin, .pth): how they are told apart, loaded only when allowed, and refused otherwise.

A pickle can run code when it is loaded (spec §2). Every weights reader of the engine goes through `load_pickle`:
refused unless `[engine] allow_pickle`, and then read with `torch.load(weights_only=True)`. The reason a file is
refused is one line (`refusal`), the same in errors, notes and listings (engine/refusals.py). A leaf module, so
that every library can use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from engine.errors import EngineError

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


def load_pickle(path: Path, allow_pickle: bool) -> Any:
    """A pickle file's data, only with `allow_pickle` and then with `weights_only=True`: never runs its code."""
    import torch

    if not allow_pickle:
        raise EngineError(refusal(path))
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything but plain tensors
        raise EngineError(f"{path.name} was refused: it holds more than plain weights ({exc})") from None
