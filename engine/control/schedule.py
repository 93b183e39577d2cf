"""When a unit steers, and how strongly each ControlNet output is added: the extension's control modes.

- Steps: a unit steers step i of a pass of N steps when that step lies wholly inside its guidance range,
  i/N >= start and (i+1)/N <= end (diffusers' ControlNet pipelines' rule). Guidance end 0 therefore never steers,
  so such a unit renders exactly as no unit. (The extension tests i/N against the range and would still steer
  step 0; notes-i23.md.)
- Weights (scripts/hook.py): Balanced adds every output times the weight; "My prompt is more important" and
  "ControlNet is more important" use soft weights, weight * 0.825 ** (12 - k) for the k-th output (down residuals
  first, the middle last), the list cut to the outputs there are (SDXL's ten get the first ten of thirteen);
  "ControlNet is more important" adds the outputs to the conditional half of classifier-free guidance only.
- In the Hires fix pass, canny and mlsd units get the soft weights whatever their mode.
"""

from __future__ import annotations

from engine.control.units import BALANCED, CONTROL_MORE_IMPORTANT, ControlUnit

SOFT_BASE = 0.825
SOFT_OUTPUTS = 13  # an SD 1.x/2.x ControlNet's outputs: 12 down residuals and the middle block
_HIRES_SOFT_MODULES = ("canny", "mlsd")


def steers(unit: ControlUnit, step: int, total: int) -> bool:
    """Whether `unit` steers step `step` (0-based) of a pass of `total` steps."""
    if unit.weight == 0 or total <= 0:
        return False
    return step / total >= unit.guidance_start and (step + 1) / total <= unit.guidance_end


def soft_weights(unit: ControlUnit, hires_pass: bool) -> bool:
    return unit.control_mode != BALANCED or (hires_pass and any(m in unit.module for m in _HIRES_SOFT_MODULES))


def output_scales(unit: ControlUnit, outputs: int, hires_pass: bool = False) -> list[float]:
    """The factor for each of a ControlNet's `outputs` outputs (down residuals in order, then the middle)."""
    if not soft_weights(unit, hires_pass):
        return [unit.weight] * outputs
    scales = [unit.weight * SOFT_BASE ** float(SOFT_OUTPUTS - 1 - k) for k in range(SOFT_OUTPUTS)]
    return scales[:outputs] + [unit.weight] * max(0, outputs - SOFT_OUTPUTS)


def conditional_only(unit: ControlUnit) -> bool:
    """Whether the unit's outputs reach the conditional (prompt) half of CFG only."""
    return unit.control_mode == CONTROL_MORE_IMPORTANT
