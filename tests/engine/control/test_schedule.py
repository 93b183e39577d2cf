"""engine.control.schedule: step ranges and per-output weights with the extension's control modes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.control.schedule import conditional_only, output_scales, steers
from engine.control.units import ControlUnit


def _unit(**fields) -> ControlUnit:
    return ControlUnit(model="m", module=fields.pop("module", "canny"), **fields)


def test_full_range_steers_every_step() -> None:
    assert all(steers(_unit(), i, 20) for i in range(20))


@pytest.mark.parametrize(
    ("start", "end", "steps"),
    [(0.0, 0.5, list(range(10))), (0.5, 1.0, list(range(10, 20))), (0.2, 0.6, list(range(4, 12))), (0.0, 0.0, [])],
)
def test_a_step_counts_when_wholly_inside_the_range(start: float, end: float, steps: list[int]) -> None:
    unit = _unit(guidance_start=start, guidance_end=end)
    assert [i for i in range(20) if steers(unit, i, 20)] == steps


def test_weight_zero_never_steers() -> None:
    assert not any(steers(_unit(weight=0.0), i, 20) for i in range(20))


@given(start=st.floats(0, 1), length=st.floats(0, 1), total=st.integers(1, 150))
def test_end_zero_or_weight_zero_never_steer(start: float, length: float, total: int) -> None:
    end = min(1.0, start + length)
    assert not any(steers(_unit(guidance_start=start, guidance_end=end, weight=0.0), i, total) for i in range(total))
    assert not any(steers(_unit(guidance_end=0.0), i, total) for i in range(total))


def test_balanced_weights_every_output_alike() -> None:
    assert output_scales(_unit(weight=0.7), 13) == [0.7] * 13


@pytest.mark.parametrize("mode", ["prompt", "control"])
def test_both_unbalanced_modes_use_the_soft_weights(mode: str) -> None:
    """weight * 0.825 ** (12 - k): the first down residual barely, the middle block fully (hook.py:653)."""
    scales = output_scales(_unit(weight=2.0, control_mode=mode), 13)
    assert scales[-1] == 2.0
    assert scales[0] == pytest.approx(2.0 * 0.825**12)
    assert scales == sorted(scales)


def test_sdxl_takes_the_first_ten_soft_weights() -> None:
    """SDXL's 9 down residuals + middle get the list's first ten: its middle gets 0.825 ** 3 (hook.py:655-656)."""
    scales = output_scales(_unit(control_mode="prompt"), 10)
    assert len(scales) == 10 and scales[-1] == pytest.approx(0.825**3)


def test_hires_pass_softens_canny_and_mlsd_only() -> None:
    assert output_scales(_unit(module="canny"), 13, hires_pass=True)[0] == pytest.approx(0.825**12)
    assert output_scales(_unit(module="tile_resample"), 13, hires_pass=True) == [1.0] * 13
    assert output_scales(_unit(module="canny"), 13, hires_pass=False) == [1.0] * 13


def test_only_controlnet_is_more_important_skips_the_unconditional_half() -> None:
    assert conditional_only(_unit(control_mode="control"))
    assert not conditional_only(_unit(control_mode="prompt"))
    assert not conditional_only(_unit())
