"""The CLI's ControlNet parts: `sdbot render --control IMAGE --control-model NAME ...` (each `--control` starts a
unit, the `--control-*` flags after it set that unit) and the ControlNet section of `sdbot models`."""

from __future__ import annotations

import argparse
from typing import Any

_UNITS = "controls"  # the namespace attribute holding the units' settings, one dict per --control


class _NewUnit(argparse.Action):
    """`--control IMAGE`: a new unit with this control image."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option=None):
        units = list(getattr(namespace, _UNITS, None) or [])
        units.append({"image": values})
        setattr(namespace, _UNITS, units)


class _UnitSetting(argparse.Action):
    """A `--control-*` flag: one setting of the unit the last `--control` started."""

    def __init__(self, *args: Any, setting: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setting = setting

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option=None):
        units = getattr(namespace, _UNITS, None)
        if not units:
            parser.error(f"{option} sets a ControlNet unit: put it after the unit's --control IMAGE")
        units[-1][self.setting] = True if self.nargs == 0 else values


def add_control_arguments(p: argparse.ArgumentParser) -> None:
    """The ControlNet flags of `sdbot render`."""
    group = p.add_argument_group("ControlNet (each --control starts a unit; the --control-* flags after it set it)")
    group.add_argument(
        "--control", action=_NewUnit, dest=_UNITS, default=[], metavar="IMAGE", help="a unit's control image"
    )
    flags: list[tuple[str, str, dict[str, Any]]] = [
        ("--control-model", "model", dict(metavar="NAME", help="a ControlNet from models/ControlNet (sdbot models)")),
        ("--control-module", "module", dict(metavar="MODULE", help="preprocessor: canny, none, invert ... (none)")),
        ("--control-weight", "weight", dict(type=float, metavar="W", help="0-2 (1)")),
        ("--control-start", "guidance_start", dict(type=float, metavar="S", help="guidance start, 0-1 (0)")),
        ("--control-end", "guidance_end", dict(type=float, metavar="E", help="guidance end, 0-1 (1)")),
        ("--control-mode", "control_mode", dict(choices=("balanced", "prompt", "control"), help="(balanced)")),
        ("--control-resize", "resize_mode", dict(choices=("just", "crop", "fill"), help="(crop)")),
        ("--control-res", "processor_res", dict(type=int, metavar="PX", help="processor resolution (512)")),
        ("--control-threshold-a", "threshold_a", dict(type=float, metavar="A", help="e.g. canny low (100)")),
        ("--control-threshold-b", "threshold_b", dict(type=float, metavar="B", help="e.g. canny high (200)")),
    ]
    for flag, setting, extra in flags:
        group.add_argument(flag, action=_UnitSetting, dest=_UNITS, setting=setting, **extra)
    group.add_argument(
        "--control-pixel-perfect",
        action=_UnitSetting,
        dest=_UNITS,
        setting="pixel_perfect",
        nargs=0,
        help="processor resolution from the image and the size",
    )


def print_controlnets(engine_config: Any) -> None:
    """The ControlNets with their family (and why a file cannot be used), and the preprocessors offered."""
    from engine.control.annotators import Annotators
    from engine.control.library import ControlNetLibrary
    from engine.control.preprocessors import opencv_modules
    from engine.models.state_dict import loadable

    library = ControlNetLibrary(engine_config)
    print(f"ControlNets ({library.root}; use --control-model NAME):")
    files = loadable(library.files(), engine_config.allow_pickle)  # a refused pickle gets its own line
    for file in files:
        if file.problem:
            print(f"  {file.name}  (cannot be used: it is {file.problem})  ({file.path})")
        else:
            kind = ", union" if file.kind == "union" else ""
            print(f"  {file.name}  [{file.family_label}{kind}]  ({file.path})")
    if not files:
        print("  (none)")
    weighted = [p.name for p in Annotators(engine_config.control_annotators).offered()]
    print("ControlNet preprocessors: " + ", ".join(opencv_modules() + weighted))
