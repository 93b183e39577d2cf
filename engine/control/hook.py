"""ControlNet inside any diffusers pass: the UNet's forward gets the steering units' residuals, step by step.

Rather than swapping pipelines (txt2img, img2img, Hires' second pass and inpainting each have their own), the
UNet's `forward` is wrapped for the job: before each UNet call, every unit that steers this step (engine.control.
schedule) runs its ControlNet on the same inputs the UNet gets (latents, timestep, prompt embeddings and, for SDXL,
the added conditioning) and its map; the outputs, scaled per output by the unit's weight and control mode, are
summed over the units and handed to the UNet as `down_block_additional_residuals` / `mid_block_additional_residual`,
exactly what diffusers' ControlNet pipelines do. A step no unit steers is the plain UNet call, so a unit with weight
0 or guidance end 0 leaves the image bit for bit as without it. "ControlNet is more important" runs the ControlNet
on the conditional half of the classifier-free-guidance batch only (the unconditional half gets no residual).

The wrapper must sit inside any per-image splitting of the UNet call (`engine.render.exact_batch`), so the
ControlNet also sees one image (its unconditional and conditional rows) at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engine.control.maps import fitted
from engine.control.preprocessors import UNION_TYPES, preprocessor
from engine.control.schedule import conditional_only, output_scales, steers
from engine.control.units import ControlUnit
from engine.errors import EngineError
from engine.models.patching import forward_replaced


@dataclass
class ActiveUnit:
    """A unit ready to steer: its loaded ControlNet and its detected map (fitted anew for each pass)."""

    unit: ControlUnit
    model: Any
    detected: np.ndarray
    hint: torch.Tensor | None = field(default=None, repr=False)

    @property
    def is_union(self) -> bool:
        return hasattr(self.model, "task_embedding")  # ControlNetUnionModel's per-type embeddings

    def union_type(self) -> int:
        """The ControlNet Union control type of the unit's module (canny: hard edge, depth: depth ...)."""
        index = preprocessor(self.unit.module).union_type
        types = int(self.model.config.num_control_type)
        if index is None or index >= types:
            raise EngineError(
                f"the ControlNet Union model {self.unit.model} needs a preprocessor of a control type it knows "
                f"({', '.join(UNION_TYPES[:types])}); module {self.unit.label} is none of them"
            )
        return index


class ControlHook:
    """The units of one job, steering the UNet of the passes run between `begin_pass` calls."""

    def __init__(self, units: list[ActiveUnit], classifier_free_guidance: bool) -> None:
        self.units = units
        self.cfg = classifier_free_guidance
        self.step = 0
        self.runner: Any = None  # the diffusers pipeline running the pass (its num_timesteps is the pass's length)
        self.hires_pass = False
        for active in units:
            if active.is_union:
                active.union_type()  # refuse a module the union model cannot take before any step runs

    def begin_pass(self, runner: Any, width: int, height: int, hires_pass: bool = False) -> None:
        """A new pass of `runner` at width x height: maps fitted to that size, steps counted from 0."""
        self.runner = runner
        self.hires_pass = hires_pass
        self.step = 0
        for active in self.units:
            active.hint = fitted(active.unit, active.detected, width, height)

    def step_done(self) -> None:
        """Called from the pipeline's step-end callback."""
        self.step += 1

    def steering(self) -> list[ActiveUnit]:
        total = int(getattr(self.runner, "num_timesteps", 0) or 0)
        return [a for a in self.units if steers(a.unit, self.step, total)]

    @contextmanager
    def installed(self, unet: Any) -> Iterator[None]:
        """The UNet's forward wrapped for the job (restored afterwards, also on errors)."""
        original = unet.forward

        def forward(sample, timestep, encoder_hidden_states=None, *args, **kwargs):
            steering = self.steering()
            if not steering:
                return original(sample, timestep, encoder_hidden_states, *args, **kwargs)
            down, mid = self.residuals(steering, sample, timestep, encoder_hidden_states, kwargs)
            return original(
                sample,
                timestep,
                encoder_hidden_states,
                *args,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
                **kwargs,
            )

        with forward_replaced(unet, forward):
            yield

    def residuals(
        self,
        steering: list[ActiveUnit],
        sample: torch.Tensor,
        timestep: Any,
        context: torch.Tensor,
        unet_kwargs: dict[str, Any],
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The steering units' outputs, scaled and summed (down residuals, middle residual)."""
        total_down: list[torch.Tensor] | None = None
        total_mid: torch.Tensor | None = None
        for active in steering:
            down, mid = self._run(active, sample, timestep, context, unet_kwargs.get("added_cond_kwargs"))
            scales = output_scales(active.unit, len(down) + 1, self.hires_pass)
            down = [d * s for d, s in zip(down, scales)]
            mid = mid * scales[len(down)]
            if total_down is None or total_mid is None:
                total_down, total_mid = down, mid
            else:
                total_down = [a + b for a, b in zip(total_down, down)]
                total_mid = total_mid + mid
        assert total_down is not None and total_mid is not None
        return total_down, total_mid

    def _run(
        self, active: ActiveUnit, sample: torch.Tensor, timestep: Any, context: torch.Tensor, added: dict | None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        rows = sample.shape[0]
        first = rows // 2 if self.cfg and conditional_only(active.unit) and rows % 2 == 0 else 0

        def part(value: Any) -> Any:
            if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == rows:
                return value[first:]
            if isinstance(value, dict):
                return {k: part(v) for k, v in value.items()}
            return value

        x = part(sample)
        channels = int(active.model.config.in_channels)
        if x.shape[1] > channels:  # an inpainting UNet's 9 channels: the ControlNet takes the latents (the extension)
            x = x[:, :channels]
        assert active.hint is not None, "begin_pass fits the maps before the first step"
        hint = active.hint.to(x.device, x.dtype).expand(x.shape[0], -1, -1, -1)
        extra: dict[str, Any] = {}
        if added is not None:
            extra["added_cond_kwargs"] = part(added)
        if active.is_union:
            kind = active.union_type()
            types = torch.zeros(x.shape[0], int(active.model.config.num_control_type), device=x.device, dtype=x.dtype)
            types[:, kind] = 1
            extra.update(controlnet_cond=[hint], control_type=types, control_type_idx=[kind])
        else:
            extra["controlnet_cond"] = hint
        down, mid = active.model(
            x, part(timestep), encoder_hidden_states=part(context), conditioning_scale=1.0, return_dict=False, **extra
        )
        if first:
            down = [torch.cat([torch.zeros_like(d), d]) for d in down]
            mid = torch.cat([torch.zeros_like(mid), mid])
        return list(down), mid
