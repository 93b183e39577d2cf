"""engine.control.loader: ControlNets load offline for their checkpoint, whatever the layout, or fail in one line."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.control.library import describe
from engine.control.loader import ControlNetCache, load_controlnet, to_diffusers_layout, unet_family
from engine.errors import EngineError
from engine.tiny.controlnet import controlnet_to_original


def _outputs(model: Any, pipe: Any, sdxl: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, pipe.unet.config.cross_attention_dim, generator=generator)
    hint = torch.rand(1, 3, 64, 64, generator=generator)
    extra = {}
    if sdxl:
        embeds, time_ids = torch.randn(1, 16, generator=generator), torch.randn(1, 6, generator=generator)
        extra = {"added_cond_kwargs": {"text_embeds": embeds, "time_ids": time_ids}}
    with torch.no_grad():
        down, mid = model(sample, 500, encoder_hidden_states=context, controlnet_cond=hint, return_dict=False, **extra)
    return list(down), mid


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_single_file_and_folder_are_the_same_controlnet(
    family: str, tiny_pipes: dict[str, Any], tiny_controlnets: dict[str, Path]
) -> None:
    """The original-layout file, built from the checkpoint's UNet config, equals the diffusers folder exactly."""
    pipe = tiny_pipes[family]
    unet_config = dict(pipe.unet.config)
    folder = load_controlnet(describe(tiny_controlnets[f"{family}-folder"]), unet_config, torch.float32, False, "c")
    single = load_controlnet(describe(tiny_controlnets[f"{family}-file"]), unet_config, torch.float32, False, "c")
    a, b = folder.state_dict(), single.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (down_a, mid_a), (down_b, mid_b) = (_outputs(m, pipe, family == "sdxl") for m in (folder, single))
    # The weights are equal to the bit (above); CPU kernels may sum in another order for another memory alignment
    # of the same weights, so the outputs are compared to float32 rounding, far below one pixel level.
    for x, y in zip([*down_a, mid_a], [*down_b, mid_b], strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
    assert mid_a.abs().mean() > 0.01  # the tiny ControlNet really outputs something


def test_sdxl_label_emb_is_converted(tiny_controlnets: dict[str, Path]) -> None:
    """diffusers' converter drops SDXL's label_emb; the loader maps it to add_embedding."""
    state = load_file(str(tiny_controlnets["sdxl-file"]))
    converted = to_diffusers_layout(state, layers_per_block=1)
    assert torch.equal(converted["add_embedding.linear_1.weight"], state["control_model.label_emb.0.0.weight"])
    assert torch.equal(converted["add_embedding.linear_2.bias"], state["control_model.label_emb.0.2.bias"])


@pytest.mark.parametrize(
    ("controlnet", "checkpoint", "message"),
    [
        ("sdxl-file", "sd15", "ControlNet tiny_sdxl_canny is for SDXL; the checkpoint ckpt is SD 1.x"),
        ("sd15-folder", "sdxl", "ControlNet tiny-sd15-folder is for SD 1.x; the checkpoint ckpt is SDXL"),
    ],
)
def test_another_family_is_refused_in_one_line(
    controlnet: str, checkpoint: str, message: str, tiny_pipes: dict[str, Any], tiny_controlnets: dict[str, Path]
) -> None:
    config = dict(tiny_pipes[checkpoint].unet.config)
    with pytest.raises(EngineError) as err:
        load_controlnet(describe(tiny_controlnets[controlnet]), config, torch.float32, False, "ckpt")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_sd2_width_is_another_family(tiny_pipes: dict[str, Any], tiny_controlnets: dict[str, Path]) -> None:
    """A UNet with 1024-wide text conditioning is SD 2.x: an SD 1.x ControlNet is refused before loading."""
    config = {**dict(tiny_pipes["sd15"].unet.config), "cross_attention_dim": 1024}
    assert unet_family(config) == "sd2"
    with pytest.raises(EngineError, match="is for SD 1.x; the checkpoint ckpt is SD 2.x"):
        load_controlnet(describe(tiny_controlnets["sd15-file"]), config, torch.float32, False, "ckpt")


def test_a_file_of_another_kind_is_refused(tmp_path: Path, tiny_pipes: dict[str, Any]) -> None:
    path = tmp_path / "adapter.safetensors"
    save_file({"adapter.body.0.resnets.0.block1.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(EngineError, match="ControlNet adapter cannot be used: it is a T2I-Adapter, not a ControlNet"):
        load_controlnet(describe(path), dict(tiny_pipes["sd15"].unet.config), torch.float32, False, "ckpt")


def test_a_damaged_file_names_what_does_not_fit(tmp_path: Path, tiny_pipes: dict[str, Any], tiny_controlnets) -> None:
    state = load_file(str(tiny_controlnets["sd15-file"]))
    del state["control_model.zero_convs.1.0.weight"]
    path = tmp_path / "damaged.safetensors"
    save_file(state, str(path))
    with pytest.raises(EngineError, match="damaged: the ControlNet weights do not fit"):
        load_controlnet(describe(path), dict(tiny_pipes["sd15"].unet.config), torch.float32, False, "ckpt")


def test_pickles_only_with_allow_pickle_and_weights_only(
    tmp_path: Path, tiny_pipes: dict[str, Any], tiny_controlnets: dict[str, Path]
) -> None:
    """A .pth is refused by default; allowed, it is read weights-only and recognised from its weights."""
    state = load_file(str(tiny_controlnets["sd15-file"]))
    path = tmp_path / "control_tiny.pth"
    torch.save({k[len("control_model.") :]: v for k, v in state.items()}, path)
    file = describe(path)
    assert file.family == ""  # not opened to be listed; the name says nothing either
    config = dict(tiny_pipes["sd15"].unet.config)
    with pytest.raises(EngineError, match=r"control_tiny.pth is refused \(pickle format; set \[engine\] allow_pickle"):
        load_controlnet(file, config, torch.float32, False, "ckpt")
    model = load_controlnet(file, config, torch.float32, True, "ckpt")
    reference = load_controlnet(describe(tiny_controlnets["sd15-file"]), config, torch.float32, False, "ckpt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.state_dict().items())


def test_union_models_load_as_folder_and_single_file(tmp_path: Path, tiny_pipes, tiny_controlnets) -> None:
    from diffusers import ControlNetUnionModel

    config = dict(tiny_pipes["sdxl"].unet.config)
    folder = load_controlnet(describe(tiny_controlnets["sdxl-union"]), config, torch.float32, False, "ckpt")
    expected = folder.state_dict()
    path = tmp_path / "union.safetensors"
    save_file({k: v.contiguous() for k, v in expected.items()}, str(path))
    single = load_controlnet(describe(path), config, torch.float32, False, "ckpt")
    got = single.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    assert type(folder) is ControlNetUnionModel and type(single) is ControlNetUnionModel


def test_original_layout_round_trips_through_diffusers_converter(tiny_pipes: dict[str, Any]) -> None:
    """controlnet_to_original is the inverse of the loader's conversion, key for key, tensor for tensor."""
    from engine.tiny.controlnet import build_tiny_controlnet

    model = build_tiny_controlnet(tiny_pipes["sdxl"].unet)
    state = model.state_dict()
    original = controlnet_to_original(state, model.config.layers_per_block)
    assert all(k.startswith("control_model.") for k in original)
    assert (
        "control_model.input_hint_block.14.weight" in original and "control_model.middle_block_out.0.bias" in original
    )
    back = to_diffusers_layout(original, model.config.layers_per_block)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_cache_keeps_warm_models_per_checkpoint(tiny_pipes: dict[str, Any], tiny_controlnets, tmp_path: Path) -> None:
    cache = ControlNetCache(size=1, device=torch.device("cpu"), dtype=torch.float32, allow_pickle=False)
    config = dict(tiny_pipes["sd15"].unet.config)
    first = describe(tiny_controlnets["sd15-file"])
    second_path = tmp_path / "copy.safetensors"
    shutil.copy(tiny_controlnets["sd15-file"], second_path)
    model = cache.get(first, config, "ckpt-a", "a")
    assert cache.get(first, config, "ckpt-a", "a") is model and cache.disk_loads == 1
    cache.get(describe(second_path), config, "ckpt-a", "a")  # evicts the first (size 1)
    assert cache.get(first, config, "ckpt-a", "a") is not model and cache.disk_loads == 3
    cache.get(first, config, "ckpt-b", "b")  # another checkpoint: another build
    assert cache.disk_loads == 4
    cache.retain({"ckpt-a"})  # ckpt-b left the checkpoint cache: its ControlNets go too
    cache.get(first, config, "ckpt-b", "b")
    assert cache.disk_loads == 5
