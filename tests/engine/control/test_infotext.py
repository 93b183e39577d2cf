"""engine.control.infotext: `ControlNet N` entries written and read as sd-webui-controlnet writes and reads them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.control.infotext import (
    display_name,
    field_name,
    format_unit,
    parse_unit,
    unit_params,
    units_from_params,
)
from engine.control.preprocessors import PREPROCESSORS
from engine.control.sizing import RESIZE_MODES
from engine.control.units import CONTROL_MODES, ControlUnit
from engine.errors import EngineError
from engine.infotext import format_infotext, parse_infotext

# The issue's example, as the extension writes it for a default canny unit.
CANNY = (
    "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: Crop and Resize, "
    "Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, "
    "Pixel Perfect: False, Control Mode: Balanced"
)


def test_default_canny_unit_is_written_exactly() -> None:
    unit = ControlUnit(model="control_v11p_sd15_canny", module="canny")
    assert format_unit(unit, "control_v11p_sd15_canny [d14c016b]") == CANNY


def test_the_whole_infotext_quotes_the_entry() -> None:
    """A1111 quotes the value (it holds ", " and ": "), so the line reads `ControlNet 0: "Module: canny, ..."`."""
    unit = ControlUnit(model="control_v11p_sd15_canny", module="canny")
    params = {
        "Steps": 20,
        "Sampler": "Euler",
        "CFG scale": 7,
        **unit_params([unit], ["control_v11p_sd15_canny [d14c016b]"]),
    }
    text = format_infotext("a cat", "", params)
    assert text.endswith(f'ControlNet 0: "{CANNY}"')
    info = parse_infotext(text)
    assert units_from_params(info.params) == [unit.replace(model="control_v11p_sd15_canny [d14c016b]")]


def test_reading_the_issue_example() -> None:
    unit = parse_unit(CANNY)
    assert unit.module == "canny" and unit.model == "control_v11p_sd15_canny [d14c016b]"
    assert (unit.threshold_a, unit.threshold_b, unit.processor_res) == (100.0, 200.0, 512)
    assert unit.image == ""


def test_ui_written_non_default_unit() -> None:
    """What the extension's UI writes for a depth unit with pixel perfect and 'ControlNet is more important'."""
    text = (
        "Module: depth_midas, Model: control_v11f1p_sd15_depth [cfd03158], Weight: 0.55, Resize Mode: Resize and "
        "Fill, Processor Res: 512, Threshold A: 0.5, Threshold B: 0.5, Guidance Start: 0.1, Guidance End: 0.85, "
        "Pixel Perfect: True, Control Mode: ControlNet is more important"
    )
    unit = parse_unit(text, "ControlNet 1")
    assert unit.module == "depth" and unit.label == "depth_midas"
    assert (unit.weight, unit.guidance_start, unit.guidance_end) == (0.55, 0.1, 0.85)
    assert unit.pixel_perfect and unit.control_mode == "ControlNet is more important"
    assert unit.resize_mode == "Resize and Fill"
    assert format_unit(unit, unit.model) == text


def test_out_of_range_sliders_reset_to_the_modules_defaults() -> None:
    """The extension's bound check: a resolution or threshold outside its slider becomes the default."""
    text = CANNY.replace("Processor Res: 512", "Processor Res: -1").replace("Threshold A: 100.0", "Threshold A: -1")
    unit = parse_unit(text)
    assert (unit.processor_res, unit.threshold_a) == (512, 100.0)
    invert = parse_unit("Module: invert (from white bg & black line), Model: m, Processor Res: 0.5, Weight: 1.0")
    assert invert.module == "invert" and invert.processor_res == 512


def test_unknown_fields_are_ignored_and_missing_ones_default() -> None:
    unit = parse_unit("Module: canny, Model: m, Weight: 0.7, Hr Option: Both, Save Detected Map: True")
    assert unit.weight == 0.7 and unit.guidance_end == 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Module canny, Model: m", "ControlNet 2: cannot read 'Module canny'"),
        ("Module: canny", "ControlNet 2: it names no model"),
        ("Module: canny, Model: None", "ControlNet 2: a ControlNet unit needs a model"),
        ("Module: sobel, Model: m", "ControlNet 2: unknown ControlNet preprocessor 'sobel'"),
        ("Module: canny, Model: m, Weight: 3.0", "ControlNet 2: ControlNet weight must be from 0 to 2"),
    ],
)
def test_unreadable_entries_name_the_entry(text: str, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        parse_unit(text, "ControlNet 2")


def test_a_value_with_a_comma_or_colon_is_not_written() -> None:
    """The extension refuses to serialise such a unit (it could not be read back)."""
    unit = ControlUnit(model="m", module="canny")
    assert format_unit(unit, "my, model") is None
    assert format_unit(unit, "c:model") is None
    assert unit_params([unit, unit], ["a, b", "ok [12345678]"]) == {"ControlNet 1": format_unit(unit, "ok [12345678]")}


def test_entries_read_in_index_order() -> None:
    first = ControlUnit(model="a", module="canny")
    second = ControlUnit(model="b", module="invert")
    params = {
        "ControlNet 1": str(format_unit(second, "b")),
        "Steps": "20",
        "ControlNet 0": str(format_unit(first, "a")),
    }
    assert units_from_params(params) == [first, second]


def test_names_stay_as_written() -> None:
    """Unlike the extension's number guessing, a model called `1e5` or `1_000` keeps its name."""
    for name in ("1e5", "1_000", "True", "007"):
        assert parse_unit(f"Module: canny, Model: {name}, Weight: 1").model == name


def test_display_names() -> None:
    assert display_name("resize_mode") == "Resize Mode"
    assert field_name("Processor Res") == "processor_res"


_models = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789_-. []"), min_size=1, max_size=30).filter(
    lambda s: s.strip() and s.strip() == s and s.lower() != "none"
)


@st.composite
def _units(draw: st.DrawFn) -> ControlUnit:
    module = draw(st.sampled_from(PREPROCESSORS))
    start = draw(st.floats(0, 1, allow_nan=False))
    end = draw(st.floats(start, 1, allow_nan=False))

    def slider(s):
        return None if s is None else draw(st.floats(s.minimum, s.maximum, allow_nan=False))

    return ControlUnit(
        model=draw(_models),
        module=draw(st.sampled_from([module.name, module.label])),
        weight=draw(st.floats(0, 2, allow_nan=False)),
        guidance_start=start,
        guidance_end=end,
        control_mode=draw(st.sampled_from(CONTROL_MODES)),
        resize_mode=draw(st.sampled_from(RESIZE_MODES)),
        pixel_perfect=draw(st.booleans()),
        processor_res=draw(st.integers(64, 2048)),
        threshold_a=slider(module.threshold_a),
        threshold_b=slider(module.threshold_b),
    )


@settings(max_examples=200, deadline=None)
@given(units=st.lists(_units(), min_size=1, max_size=3))
def test_round_trip_through_a_whole_infotext(units: list[ControlUnit]) -> None:
    """Every unit written into an A1111 infotext reads back equal (floats print and parse exactly)."""
    params = {"Steps": 20, "Sampler": "Euler", "CFG scale": 7, **unit_params(units, [u.model for u in units])}
    info = parse_infotext(format_infotext("a photo of a cat", "blurry", params))
    assert units_from_params(info.params) == units


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_reads_or_raises_engine_error(text: str) -> None:
    try:
        parse_unit(text)
    except EngineError as err:
        assert "\n" not in str(err) or "\n" in text
