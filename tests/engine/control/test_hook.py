"""engine.control.hook: units steer a real diffusers pass through the UNet's forward, as the ControlNet pipelines do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine.control.hook import ActiveUnit, ControlHook
from engine.control.library import describe
from engine.control.loader import load_controlnet
from engine.control.units import ControlUnit
from engine.errors import EngineError

SIZE = 64
STEPS = 4


def _map() -> np.ndarray:
    """A control map (already preprocessed: module none) with strong structure."""
    detected = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    detected[8:40, 16:56] = 255
    detected[44:60, 4:30] = (0, 255, 128)
    return detected


def _embeds(pipe: Any) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    width = pipe.unet.config.cross_attention_dim
    return {
        "prompt_embeds": torch.randn(1, 77, width, generator=g),
        "negative_prompt_embeds": torch.randn(1, 77, width, generator=g),
    }


def _render(pipe: Any, hook: ControlHook | None, cfg: float = 7.0) -> np.ndarray:
    from diffusers import EulerDiscreteScheduler

    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    latents = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(3))

    def step_end(p, index, timestep, kwargs):
        if hook is not None:
            hook.step_done()
        return kwargs

    call = dict(
        num_inference_steps=STEPS,
        width=SIZE,
        height=SIZE,
        latents=latents,
        guidance_scale=cfg,
        output_type="latent",
        callback_on_step_end=step_end,
        **_embeds(pipe),
    )
    with torch.inference_mode():
        if hook is None:
            return pipe(**call).images.numpy()
        hook.begin_pass(pipe, SIZE, SIZE)
        with hook.installed(pipe.unet):
            return pipe(**call).images.numpy()


@pytest.fixture(scope="module")
def sd15(tiny_pipes: dict[str, Any], tiny_controlnets: dict[str, Path]) -> tuple[Any, Any]:
    pipe = tiny_pipes["sd15"]
    model = load_controlnet(describe(tiny_controlnets["sd15-file"]), dict(pipe.unet.config), torch.float32, False, "c")
    return pipe, model


def _hook(model: Any, cfg: bool = True, **unit: Any) -> ControlHook:
    return ControlHook([ActiveUnit(ControlUnit(model="m", module="none", **unit), model, _map())], cfg)


def test_weight_zero_and_end_zero_render_as_without_controlnet(sd15: tuple[Any, Any]) -> None:
    pipe, model = sd15
    plain = _render(pipe, None)
    assert np.array_equal(_render(pipe, _hook(model, weight=0.0)), plain)
    assert np.array_equal(_render(pipe, _hook(model, guidance_end=0.0)), plain)
    assert not np.array_equal(_render(pipe, _hook(model)), plain)


def test_balanced_equals_diffusers_controlnet_pipeline(sd15: tuple[Any, Any]) -> None:
    """Same components, latents, embeddings and map: the hook renders exactly what diffusers' pipeline renders."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionControlNetPipeline

    pipe, model = sd15
    reference: Any = StableDiffusionControlNetPipeline(**pipe.components, controlnet=model)
    reference.set_progress_bar_config(disable=True)
    reference.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    hint = torch.from_numpy(_map()).float().div(255).permute(2, 0, 1)[None]
    latents = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = reference(
            image=hint,
            num_inference_steps=STEPS,
            width=SIZE,
            height=SIZE,
            latents=latents,
            guidance_scale=7.0,
            output_type="latent",
            controlnet_conditioning_scale=0.8,
            **_embeds(pipe),
        ).images.numpy()
    assert np.array_equal(_render(pipe, _hook(model, weight=0.8, resize_mode="just")), expected)


def test_modes_and_ranges_each_change_the_image(sd15: tuple[Any, Any]) -> None:
    pipe, model = sd15
    renders = {
        "balanced": _render(pipe, _hook(model)),
        "prompt": _render(pipe, _hook(model, control_mode="prompt")),
        "control": _render(pipe, _hook(model, control_mode="control")),
        "first half": _render(pipe, _hook(model, guidance_end=0.5)),
        "second half": _render(pipe, _hook(model, guidance_start=0.5)),
    }
    names = list(renders)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.array_equal(renders[a], renders[b]), (a, b)


def test_controlnet_is_more_important_runs_on_the_conditional_half_only(sd15: tuple[Any, Any]) -> None:
    pipe, model = sd15
    rows: list[int] = []
    original = model.forward

    def counting(sample, *args, **kwargs):
        rows.append(sample.shape[0])
        return original(sample, *args, **kwargs)

    model.forward = counting
    try:
        _render(pipe, _hook(model, control_mode="control"))
        assert rows == [1] * STEPS
        rows.clear()
        _render(pipe, _hook(model, control_mode="prompt"))
        assert rows == [2] * STEPS
        rows.clear()
        _render(pipe, _hook(model, cfg=False, control_mode="control"), cfg=1.0)  # no CFG: every row is conditional
        assert rows == [1] * STEPS
        rows.clear()
        _render(pipe, _hook(model, guidance_start=0.5))
        assert rows == [2] * (STEPS // 2)  # steps outside the range never call the ControlNet
    finally:
        del model.forward


def test_two_units_sum_and_the_unet_is_restored(sd15: tuple[Any, Any]) -> None:
    pipe, model = sd15
    one = ActiveUnit(ControlUnit(model="m", weight=0.5), model, _map())
    two = ActiveUnit(ControlUnit(model="m", weight=0.5), model, _map())
    both = _render(pipe, ControlHook([one, two], True))
    assert np.allclose(both, _render(pipe, _hook(model, weight=1.0)), atol=1e-4)
    assert "forward" not in vars(pipe.unet)


def test_union_models_need_a_module_of_a_known_type(tiny_pipes, tiny_controlnets: dict[str, Path]) -> None:
    pipe = tiny_pipes["sdxl"]
    union = load_controlnet(describe(tiny_controlnets["sdxl-union"]), dict(pipe.unet.config), torch.float32, False, "")
    with pytest.raises(EngineError, match="needs a preprocessor of a control type it knows"):
        ControlHook([ActiveUnit(ControlUnit(model="u", module="none"), union, _map())], True)
    hook = ControlHook([ActiveUnit(ControlUnit(model="u", module="canny"), union, _map())], True)
    assert hook.units[0].union_type() == 3  # hard edge


@pytest.mark.parametrize("kind", ["sdxl-file", "sdxl-union"])
def test_sdxl_controlnets_steer_with_the_added_conditioning(
    kind: str, tiny_pipes: dict[str, Any], tiny_controlnets: dict[str, Path]
) -> None:
    """SDXL's ControlNets get the UNet's text_embeds and time_ids; a union model its module's control type."""
    from diffusers import EulerDiscreteScheduler

    pipe = tiny_pipes["sdxl"]
    model = load_controlnet(describe(tiny_controlnets[kind]), dict(pipe.unet.config), torch.float32, False, "c")
    g = torch.Generator().manual_seed(2)
    embeds = {
        "prompt_embeds": torch.randn(1, 77, 32, generator=g),
        "negative_prompt_embeds": torch.randn(1, 77, 32, generator=g),
        "pooled_prompt_embeds": torch.randn(1, 16, generator=g),
        "negative_pooled_prompt_embeds": torch.randn(1, 16, generator=g),
    }

    def render(hook: ControlHook | None) -> np.ndarray:
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        latents = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(3))
        call = dict(num_inference_steps=STEPS, width=SIZE, height=SIZE, latents=latents, output_type="latent")
        with torch.inference_mode():
            if hook is None:
                return pipe(**call, **embeds).images.numpy()
            hook.begin_pass(pipe, SIZE, SIZE)

            def step_end(p: Any, index: int, timestep: Any, kwargs: dict) -> dict:
                hook.step_done()
                return kwargs

            with hook.installed(pipe.unet):
                return pipe(**call, **embeds, callback_on_step_end=step_end).images.numpy()

    unit = ControlUnit(model="m", module="canny")
    plain = render(None)
    steered = render(ControlHook([ActiveUnit(unit, model, _map())], True))
    assert not np.array_equal(plain, steered)
    assert np.array_equal(render(ControlHook([ActiveUnit(unit.replace(weight=0.0), model, _map())], True)), plain)
