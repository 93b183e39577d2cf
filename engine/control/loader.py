"""Loading ControlNets offline, for the checkpoint they are used with, and keeping the warm ones.

A diffusers folder carries its own config. A single file carries only weights, and the config a ControlNet needs is
its base UNet's (a ControlNet is a trained copy of the UNet's encoder: diffusers' `ControlNetModel.from_unet`), so
a single file is built from the loaded checkpoint's UNet config, with what the file itself fixes read from its
shapes: the hint's channels, the conditioning embedding's widths, the transformer depth of each block (SDXL's
"mid" and "small" ControlNets have fewer layers than the UNet) and, for a ControlNet Union, its task count. Nothing
is fetched from the hub. Original-layout weights are converted with diffusers' `convert_controlnet_checkpoint`;
SDXL's `label_emb`, which that converter leaves out, is mapped here. Every weight must be there with the right
shape: anything else is an `EngineError`, never a silently random layer. A ControlNet of another family than the
checkpoint (SDXL or not, or a different text width) is refused before anything is read.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections import OrderedDict
from typing import Any

import torch

from engine.control.library import FAMILY_LABELS, ORIGINAL_PREFIX, ControlNetFile, recognise
from engine.errors import EngineError
from engine.models.state_dict import read_state_dict

log = logging.getLogger(__name__)

_LABEL_EMB = {
    "label_emb.0.0.weight": "add_embedding.linear_1.weight",
    "label_emb.0.0.bias": "add_embedding.linear_1.bias",
    "label_emb.0.2.weight": "add_embedding.linear_2.weight",
    "label_emb.0.2.bias": "add_embedding.linear_2.bias",
}


def unet_family(unet_config: dict[str, Any]) -> str:
    """ "sdxl", "sd2" or "sd1" for a UNet config (SDXL's added time conditioning, SD 2.x's 1024-wide text)."""
    if unet_config.get("addition_embed_type") == "text_time":
        return "sdxl"
    return "sd2" if unet_config.get("cross_attention_dim") == 1024 else "sd1"


def check_family(file: ControlNetFile, unet_config: dict[str, Any], checkpoint_name: str) -> None:
    """EngineError when `file` cannot be used (what it is instead) or is for another family than the checkpoint."""
    if file.problem:
        raise EngineError(f"ControlNet {file.name} cannot be used: it is {file.problem}")
    family = unet_family(unet_config)
    if file.family and file.family != family:
        raise EngineError(
            f"ControlNet {file.name} is for {FAMILY_LABELS[file.family]}; the checkpoint {checkpoint_name} is "
            f"{FAMILY_LABELS[family]} (use a ControlNet made for {FAMILY_LABELS[family]})"
        )


# ------------------------------------------------------------------------------------------------ single files


def to_diffusers_layout(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """An original-layout state dict (with or without `control_model.`) in the diffusers layout."""
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    if any(k.startswith(ORIGINAL_PREFIX) for k in state):
        state = {k[len(ORIGINAL_PREFIX) :]: v for k, v in state.items() if k.startswith(ORIGINAL_PREFIX)}
    converted = convert_controlnet_checkpoint(state, {"layers_per_block": layers_per_block})
    converted.update({new: state[old] for old, new in _LABEL_EMB.items() if old in state})
    return {k: v for k, v in converted.items() if v is not None}


def _indices(keys: list[str], pattern: str) -> set[int]:
    regex = re.compile(pattern)
    return {int(m.group(1)) for k in keys if (m := regex.match(k))}


def derived_config(cls: type, unet_config: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The config of a `cls` ControlNet with these (diffusers-layout) weights, for a UNet with `unet_config`."""
    accepted = set(inspect.signature(cls).parameters)
    config = {k: v for k, v in unet_config.items() if k in accepted}
    keys = list(state)
    hint_in = state["controlnet_cond_embedding.conv_in.weight"]
    blocks = sorted(_indices(keys, r"controlnet_cond_embedding\.blocks\.(\d+)\.weight"))
    widths = [hint_in.shape[0]] + [state[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0] for i in blocks[1::2]]
    config["conditioning_channels"] = hint_in.shape[1]
    config["in_channels"] = state["conv_in.weight"].shape[1]  # 4 even beside an inpainting UNet's 9
    config["conditioning_embedding_out_channels"] = tuple(widths)
    block_types, depths = [], []
    for block in range(len(config["down_block_types"])):
        attentions = [k for k in keys if k.startswith(f"down_blocks.{block}.attentions.")]
        block_types.append("CrossAttnDownBlock2D" if attentions else "DownBlock2D")
        pattern = rf"down_blocks\.{block}\.attentions\.0\.transformer_blocks\.(\d+)\."
        depths.append(len(_indices(attentions, pattern)) if attentions else 1)  # a DownBlock2D ignores its depth
    mid = [k for k in keys if k.startswith("mid_block.attentions.")]
    if mid and block_types[-1] == "DownBlock2D":
        depths[-1] = len(_indices(mid, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\."))
    config["down_block_types"] = tuple(block_types)
    config["transformer_layers_per_block"] = tuple(depths)
    if "mid_block_type" in accepted:
        config["mid_block_type"] = "UNetMidBlock2DCrossAttn" if mid else "UNetMidBlock2D"
    if "task_embedding" in state:
        config["num_control_type"] = state["task_embedding"].shape[0]
        config["num_trans_channel"] = state["task_embedding"].shape[1]
        config["num_trans_layer"] = len(_indices(keys, r"transformer_layes\.(\d+)\."))
        config["num_proj_channel"] = state["spatial_ch_projs.weight"].shape[0]
    return config


def _fit_projections(model: Any, state: dict[str, torch.Tensor]) -> None:
    """1x1-conv and linear attention projections hold the same numbers: reshape to what the model expects."""
    expected = model.state_dict()
    for key, value in list(state.items()):
        if (".proj_in." in key or ".proj_out." in key) and key in expected:
            shape = tuple(expected[key].shape)
            if tuple(value.shape) != shape and value.numel() == expected[key].numel():
                state[key] = value.reshape(shape)


def _build(file: ControlNetFile, state: dict[str, torch.Tensor], unet_config: dict[str, Any], dtype: torch.dtype):
    from diffusers import ControlNetModel, ControlNetUnionModel

    from engine.models.single_file import _empty, _fill

    if "controlnet_cond_embedding.conv_in.weight" not in state:
        state = to_diffusers_layout(state, int(unet_config["layers_per_block"]))
    cls = ControlNetUnionModel if file.kind == "union" else ControlNetModel
    try:
        config = derived_config(cls, unet_config, state)
        model = _empty(lambda: cls.from_config(config))
    except (KeyError, IndexError, ValueError) as exc:
        raise EngineError(f"ControlNet {file.name} does not fit this checkpoint's UNet ({exc!r})") from None
    _fit_projections(model, state)
    return _fill(model, state, "ControlNet", file.name, dtype)


def _load_folder(file: ControlNetFile, dtype: torch.dtype, allow_pickle: bool):
    from diffusers import ControlNetModel, ControlNetUnionModel

    cls = ControlNetUnionModel if file.kind == "union" else ControlNetModel
    if file.weights.suffix.lower() != ".safetensors":
        read_state_dict(file.weights, allow_pickle)  # refuses a pickle unless allowed, and then reads weights only
    try:
        model = cls.from_pretrained(
            str(file.path), local_files_only=True, torch_dtype=dtype, use_safetensors=None if allow_pickle else True
        )
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EngineError(f"ControlNet {file.name} could not be loaded ({first})") from None
    return model.eval()


def load_controlnet(
    file: ControlNetFile, unet_config: dict[str, Any], dtype: torch.dtype, allow_pickle: bool, checkpoint_name: str
):
    """A ControlNetModel (or ControlNetUnionModel) for a checkpoint whose UNet has `unet_config`."""
    check_family(file, unet_config, checkpoint_name)
    if file.is_folder:
        model = _load_folder(file, dtype, allow_pickle)
    else:
        state = read_state_dict(file.path, allow_pickle)
        if not file.family:  # a pickle, listed by its name only: recognise it from its weights now
            family, kind, problem = recognise({k: list(v.shape) for k, v in state.items()})
            file = ControlNetFile(file.name, file.path, file.weights, family, kind or "controlnet", problem)
            check_family(file, unet_config, checkpoint_name)
        model = _build(file, state, unet_config, dtype)
    if model.config.cross_attention_dim != unet_config.get("cross_attention_dim"):
        raise EngineError(
            f"ControlNet {file.name} conditions on {model.config.cross_attention_dim}-wide text; the checkpoint "
            f"{checkpoint_name} has {unet_config.get('cross_attention_dim')} (another model family)"
        )
    return model


class ControlNetCache:
    """Warm ControlNets per checkpoint (a single file's shape depends on the checkpoint's UNet), LRU by use."""

    def __init__(self, size: int, device: torch.device, dtype: torch.dtype, allow_pickle: bool) -> None:
        self.size = size
        self.device = device
        self.dtype = dtype
        self.allow_pickle = allow_pickle
        self._models: OrderedDict[tuple[str, str, float], Any] = OrderedDict()
        self.disk_loads = 0  # counted for tests: a cache hit does not touch the disk

    def get(self, file: ControlNetFile, unet_config: dict[str, Any], checkpoint_key: str, checkpoint_name: str):
        key = (checkpoint_key, str(file.path.resolve()), file.weights.stat().st_mtime if file.weights.exists() else 0)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        model = load_controlnet(file, unet_config, self.dtype, self.allow_pickle, checkpoint_name).to(self.device)
        self.disk_loads += 1
        if self.size > 0:
            self._models[key] = model
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return model

    def retain(self, checkpoint_keys: set[str]) -> None:
        """Keep only the ControlNets built for these checkpoints (the ones still in memory)."""
        self._models = OrderedDict((k, v) for k, v in self._models.items() if k[0] in checkpoint_keys)

    def clear(self) -> None:
        self._models.clear()
