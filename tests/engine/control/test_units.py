"""engine.control.units: a unit's defaults are the extension's; a bad value is one line saying what is allowed."""

from __future__ import annotations

import pytest

from engine.control.units import (
    BALANCED,
    CONTROL_MORE_IMPORTANT,
    PROMPT_MORE_IMPORTANT,
    ControlUnit,
    control_mode,
    resize_mode,
)
from engine.errors import EngineError


def test_defaults_are_the_extensions() -> None:
    unit = ControlUnit(model="control_v11p_sd15_canny", module="canny")
    assert (unit.weight, unit.guidance_start, unit.guidance_end) == (1.0, 0.0, 1.0)
    assert (unit.control_mode, unit.resize_mode, unit.pixel_perfect) == (BALANCED, "Crop and Resize", False)
    assert (unit.processor_res, unit.threshold_a, unit.threshold_b) == (512, 100.0, 200.0)
    assert unit.label == "canny" and unit.active


def test_module_is_stored_by_name_and_shown_by_label() -> None:
    unit = ControlUnit(model="m", module="invert (from white bg & black line)")
    assert unit.module == "invert"
    assert unit.label == "invert (from white bg & black line)"
    assert (unit.threshold_a, unit.threshold_b) == (0.5, 0.5)  # hidden sliders hold 0.5, as in the extension


def test_hidden_sliders_ignore_what_was_given() -> None:
    unit = ControlUnit(model="m", module="none", threshold_a=42, threshold_b=7, processor_res=768)
    assert (unit.threshold_a, unit.threshold_b, unit.processor_res) == (0.5, 0.5, 768)
    assert ControlUnit(model="m", module="invert", processor_res=5).processor_res == 512  # invert has no resolution


@pytest.mark.parametrize(
    ("short", "mode"),
    [("balanced", BALANCED), ("prompt", PROMPT_MORE_IMPORTANT), ("control", CONTROL_MORE_IMPORTANT)],
)
def test_control_mode_short_names(short: str, mode: str) -> None:
    assert control_mode(short) == mode
    assert control_mode(mode.upper()) == mode


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("just", "Just Resize"),
        ("crop", "Crop and Resize"),
        ("fill", "Resize and Fill"),
        ("Inner Fit (Scale to Fit)", "Crop and Resize"),
        ("Envelope (Outer Fit)", "Resize and Fill"),
        ("2", "Resize and Fill"),
        ("3", "Just Resize"),
    ],
)
def test_resize_mode_names_and_aliases(text: str, mode: str) -> None:
    assert resize_mode(text) == mode


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "None"}, "a ControlNet unit needs a model"),
        ({"module": "sobel"}, "unknown ControlNet preprocessor 'sobel'"),
        ({"weight": 2.5}, "ControlNet weight must be from 0 to 2 (got 2.5)"),
        ({"weight": "1"}, "ControlNet weight must be a number from 0 to 2"),
        ({"guidance_start": 0.8, "guidance_end": 0.2}, "guidance start (0.8) must not be after its end (0.2)"),
        ({"guidance_end": 1.5}, "ControlNet guidance end must be from 0 to 1 (got 1.5)"),
        ({"control_mode": "strong"}, "unknown ControlNet control mode 'strong'; valid: balanced, prompt"),
        ({"resize_mode": "stretch"}, "unknown ControlNet resize mode 'stretch'; valid: just"),
        ({"processor_res": 32}, "processor resolution must be a whole number from 64 to 2048 (got 32)"),
        ({"threshold_a": 300}, "threshold A (Low Threshold) must be from 1 to 255 (got 300)"),
        ({"pixel_perfect": "yes"}, "pixel perfect must be true or false"),
    ],
)
def test_bad_values_are_one_line(changes: dict, message: str) -> None:
    fields = {"model": "m", "module": "canny", **changes}
    with pytest.raises(EngineError) as err:
        ControlUnit(**fields)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_active_only_with_weight_and_a_step_range() -> None:
    unit = ControlUnit(model="m")
    assert not unit.replace(weight=0).active
    assert not unit.replace(guidance_end=0.0).active
    assert not unit.replace(guidance_start=0.5, guidance_end=0.5).active
    assert unit.replace(guidance_start=0.2, guidance_end=0.6).active


def test_options_leave_out_the_image_bytes() -> None:
    unit = ControlUnit(model="m", image="/tmp/pose.png", image_data=b"png")
    assert "image_data" not in unit.options()
    assert unit.options()["image"] == "/tmp/pose.png"
    assert unit == unit.replace(image_data=b"other")  # the bytes in transit do not make another unit
