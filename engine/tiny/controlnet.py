"""Tiny random ControlNets matching the tiny UNets of `engine.tiny`, for tests and the offline demo.

`build_tiny_controlnet(unet)` copies the UNet's encoder as a real ControlNet does (diffusers' `from_unet`), with a
small conditioning embedding, then gives the zero convolutions (which training would have moved away from zero)
clearly non-zero random weights, so a control image visibly steers the tiny model. It can be saved as a diffusers
folder (`save_pretrained`) or, through `controlnet_to_original`, as one file in the original layout people
download (`control_model.input_blocks…`, `zero_convs…`, `input_hint_block…`): the inverse of diffusers'
`convert_controlnet_checkpoint`, plus SDXL's `label_emb`, which that converter leaves out.
`write_tiny_depth_model` writes a tiny Depth Anything, for the depth preprocessors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

ORIGINAL_PREFIX = "control_model."
TINY_CONDITIONING_CHANNELS = (8, 16, 16, 32)  # four entries: the hint block's last conv stays input_hint_block.14

_RESNET_RENAMES = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)


def build_tiny_controlnet(
    unet: Any, seed: int = 0, union: bool = False, conditioning: tuple[int, ...] = TINY_CONDITIONING_CHANNELS
) -> Any:
    """A ControlNet (or, with `union`, a ControlNet Union: SDXL UNets only) for `unet`, with random zero convs;
    `conditioning`: the hint block's widths (real ControlNets: 16, 32, 96, 256)."""
    from diffusers import ControlNetModel, ControlNetUnionModel

    torch.manual_seed(seed)
    model = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=conditioning)
    zero_initialised = [
        *model.controlnet_down_blocks,
        model.controlnet_mid_block,
        model.controlnet_cond_embedding.conv_out,
    ]
    if union:
        # The union's task transformer works at the first block's width (320 in SDXL; the tiny UNet's is smaller).
        width = unet.config.block_out_channels[0]
        config = {**ControlNetUnionModel.from_unet(unet).config, "num_trans_channel": width, "num_proj_channel": width}
        config.pop("_use_default_values", None)  # else from_config resets the widths to their defaults
        config["conditioning_embedding_out_channels"] = conditioning
        union_model = ControlNetUnionModel.from_config(config)
        shapes = {k: v.shape for k, v in union_model.state_dict().items()}
        union_model.load_state_dict(
            {k: v for k, v in model.state_dict().items() if shapes.get(k) == v.shape}, strict=False
        )
        zero_initialised = [
            *union_model.controlnet_down_blocks,
            union_model.controlnet_mid_block,
            union_model.controlnet_cond_embedding.conv_out,
            union_model.spatial_ch_projs,
        ]
        model = union_model
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in zero_initialised:
            for param in conv.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model.eval()


def _resnet(key: str) -> str:
    for new, old in _RESNET_RENAMES:
        key = key.replace(f".{new}.", f".{old}.")
    return key


def controlnet_to_original(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """A diffusers-layout ControlNet state dict in the original layout, keys prefixed `control_model.`."""
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("controlnet_cond_embedding.blocks.")}
    fixed = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "add_embedding.linear_1.": "label_emb.0.0.",
        "add_embedding.linear_2.": "label_emb.0.2.",
        "conv_in.": "input_blocks.0.0.",
        "controlnet_cond_embedding.conv_in.": "input_hint_block.0.",
        "controlnet_cond_embedding.conv_out.": f"input_hint_block.{2 * (len(blocks) + 1)}.",
        "controlnet_mid_block.": "middle_block_out.0.",
        "mid_block.resnets.0.": "middle_block.0.",
        "mid_block.attentions.0.": "middle_block.1.",
        "mid_block.resnets.1.": "middle_block.2.",
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        new = None
        for old_prefix, new_prefix in fixed.items():
            if key.startswith(old_prefix):
                new = new_prefix + key[len(old_prefix) :]
                if old_prefix.startswith("mid_block.resnets."):
                    new = _resnet(new)
                break
        if new is None and key.startswith("controlnet_cond_embedding.blocks."):
            new = f"input_hint_block.{2 * (int(parts[2]) + 1)}." + ".".join(parts[3:])
        elif new is None and key.startswith("controlnet_down_blocks."):
            new = f"zero_convs.{parts[1]}.0." + ".".join(parts[2:])
        elif new is None and key.startswith("down_blocks."):
            block, kind, index = int(parts[1]), parts[2], parts[3]
            rest = ".".join(parts[4:])
            first = 1 + block * (layers_per_block + 1)
            if kind == "resnets":
                new = _resnet(f"input_blocks.{first + int(index)}.0.{rest}")
            elif kind == "attentions":
                new = f"input_blocks.{first + int(index)}.1.{rest}"
            else:  # downsamplers.0.conv.*
                new = f"input_blocks.{first + layers_per_block}.0.op." + ".".join(parts[5:])
        if new is None:
            raise ValueError(f"no original-layout name for {key}")
        out[ORIGINAL_PREFIX + new] = value.contiguous()
    return out


def write_original_controlnet(model: Any, path: str | Path) -> Path:
    """Save `model`'s weights as one safetensors file in the original layout (like control_v11p_sd15_canny)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(controlnet_to_original(model.state_dict(), model.config.layers_per_block), str(path))
    return path


def write_tiny_controlnet(unet: Any, folder: str | Path, seed: int = 0, union: bool = False) -> Path:
    """A tiny ControlNet for `unet` saved as a diffusers folder (config.json + safetensors weights)."""
    folder = Path(folder)
    build_tiny_controlnet(unet, seed=seed, union=union).save_pretrained(folder, safe_serialization=True)
    return folder


def write_tiny_depth_model(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random Depth Anything model (transformers layout), for the weighted depth preprocessors' tests."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(seed)
    backbone: dict[str, Any] = dict(
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=56,
        patch_size=14,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=Dinov2Config(**backbone),
        neck_hidden_sizes=[8, 16, 16, 16],
        fusion_hidden_size=16,
        head_hidden_size=8,
        reassemble_hidden_size=16,
        patch_size=14,
    )
    folder = Path(folder)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    return folder
