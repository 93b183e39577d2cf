"""What every benchmark script's `main()` shares: its command line and how it prints its figures."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any


def arguments(doc: str | None, **defaults: Any) -> argparse.ArgumentParser:
    """A parser described by the docstring's first line, with `--name` for each default (`unet_width` becomes
    `--unet-width`, its type the default's); a `(default, help)` pair adds a help text. Add more as usual."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    for name, default in defaults.items():
        value, help_text = default if isinstance(default, tuple) else (default, None)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value, help=help_text)
    return parser


def print_figures(figures: Mapping[str, Any], digits: int | None = 3) -> None:
    """Each figure last, as a `name: value` line (floats to `digits` places; None: as they are)."""
    for name, value in figures.items():
        print(f"{name}: {value:.{digits}f}" if digits is not None and isinstance(value, float) else f"{name}: {value}")
