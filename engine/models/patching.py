"""Temporarily replacing a loaded model's `forward` (the per-image UNet split, the ControlNet hook), so that such
replacements nest: each puts back exactly what was there before it, a wrapper or the class's own method."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def forward_replaced(module: Any, forward: Callable[..., Any]) -> Iterator[None]:
    """`module.forward` is `forward` inside the block; the previous one is restored afterwards, also on errors."""
    previous = vars(module).get("forward")
    module.forward = forward
    try:
        yield
    finally:
        if previous is None:
            del module.forward
        else:
            module.forward = previous
