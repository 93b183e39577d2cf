"""Diffusers -> original (LDM / A1111) single-file key layout: the inverse of diffusers' `convert_ldm_*`.

Used to write single-file checkpoints from diffusers models (tiny test models, exports): the result loads with
`engine.models.single_file.load_single_file_pipeline` exactly as an SD 1.x, 2.x or SDXL `.safetensors` file from the
web does. Layouts, as in the original repos (CompVis/stable-diffusion, Stability-AI/stablediffusion,
Stability-AI/generative-models):

- UNet:  `model.diffusion_model.{input_blocks,middle_block,output_blocks,time_embed,label_emb,out}...`
- VAE:   `first_stage_model.{encoder,decoder}...` (see `vae_diffusers_to_ldm`)
- SD 1.x text encoder (HF CLIP): `cond_stage_model.transformer.text_model...`
- SD 2.x text encoder (OpenCLIP): `cond_stage_model.model.{transformer.resblocks.N,token_embedding,...}`
- SDXL: `conditioner.embedders.0.transformer.text_model...` (CLIP ViT-L, HF layout) and
  `conditioner.embedders.1.model...` (OpenCLIP ViT-bigG, with `text_projection`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from engine.models.ldm_keys import (  # the single-file layout's key prefixes, read by the loader too
    SD1_CLIP_PREFIX,
    SD2_OPENCLIP_PREFIX,
    SDXL_CLIP_PREFIX,
    SDXL_OPENCLIP_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
)

_UNET_FIXED = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "class_embedding.linear_1.": "label_emb.0.0.",
    "class_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_RESNET_RENAMES = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
)


def unet_diffusers_to_ldm(
    state: Mapping[str, torch.Tensor], config: Mapping[str, Any], prefix: str = UNET_PREFIX
) -> dict[str, torch.Tensor]:
    """A diffusers `UNet2DConditionModel` state dict in the LDM layout (any block count and layers per block)."""
    per_block = config["layers_per_block"]
    step = per_block + 1
    up_types = list(config["up_block_types"])
    resnets: list[tuple[str, str]] = []
    others: list[tuple[str, str]] = list(_UNET_FIXED.items())
    for i in range(len(config["block_out_channels"])):
        for j in range(per_block):
            resnets.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{step * i + j + 1}.0."))
            others.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{step * i + j + 1}.1."))
        others.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{step * (i + 1)}.0.op."))
        for j in range(step):
            resnets.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{step * i + j}.0."))
            others.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{step * i + j}.1."))
        slot = 2 if "CrossAttn" in up_types[i] else 1
        others.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{step * i + per_block}.{slot}."))
    resnets += [("mid_block.resnets.0.", "middle_block.0."), ("mid_block.resnets.1.", "middle_block.2.")]
    others.append(("mid_block.attentions.0.", "middle_block.1."))

    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = None
        for old, repl in resnets:
            if key.startswith(old):
                rest = key[len(old) :]
                for a, b in _RESNET_RENAMES:
                    if rest.startswith(a):
                        rest = b + rest[len(a) :]
                        break
                new = repl + rest
                break
        if new is None:
            for old, repl in others:
                if key.startswith(old):
                    new = repl + key[len(old) :]
                    break
        if new is None:
            raise ValueError(f"unet key {key!r} has no LDM equivalent")
        out[prefix + new] = value
    return out


def _with_text_model(key: str) -> str:
    """transformers >= 5.6 flattens `CLIPTextModel` (no `text_model.`); the LDM layout always has it."""
    if key.startswith("text_model.") or key.startswith("text_projection."):
        return key
    return "text_model." + key


def clip_diffusers_to_ldm(
    state: Mapping[str, torch.Tensor], prefix: str = SD1_CLIP_PREFIX, position_ids: bool = False
) -> dict[str, torch.Tensor]:
    """An HF `CLIPTextModel` state dict under `prefix` (SD 1.x, SDXL encoder 1). `position_ids` adds the
    buffer that many SD 1.x files carry (loaders must ignore it)."""
    out = {prefix + _with_text_model(k): v for k, v in state.items()}
    if position_ids:
        n = next(v for k, v in state.items() if k.endswith("position_embedding.weight")).shape[0]
        out[prefix + "text_model.embeddings.position_ids"] = torch.arange(n)[None]
    return out


def openclip_diffusers_to_ldm(
    state: Mapping[str, torch.Tensor], prefix: str = SD2_OPENCLIP_PREFIX
) -> dict[str, torch.Tensor]:
    """An HF CLIP text model's state dict in OpenCLIP's layout (SD 2.x, SDXL encoder 2): fused `in_proj`
    attention, `resblocks`, `ln_final`, and `text_projection` transposed (when the model has one)."""
    state = {_with_text_model(k): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    fixed = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    layer_renames = (
        ("self_attn.out_proj.", "attn.out_proj."),
        ("layer_norm1.", "ln_1."),
        ("layer_norm2.", "ln_2."),
        ("mlp.fc1.", "mlp.c_fc."),
        ("mlp.fc2.", "mlp.c_proj."),
    )
    layers = "text_model.encoder.layers."
    for key, value in state.items():
        if key in fixed:
            out[prefix + fixed[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif key.startswith(layers):
            index, rest = key[len(layers) :].split(".", 1)
            base = f"{prefix}transformer.resblocks.{index}."
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                kind = rest.rsplit(".", 1)[1]  # weight or bias
                if rest.startswith("self_attn.q_proj."):
                    qkv = [state[f"{layers}{index}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
                    out[base + f"attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
                continue
            for a, b in layer_renames:
                if rest.startswith(a):
                    rest = b + rest[len(a) :]
                    break
            else:
                raise ValueError(f"text encoder key {key!r} has no OpenCLIP equivalent")
            out[base + rest] = value
        else:
            raise ValueError(f"text encoder key {key!r} has no OpenCLIP equivalent")
    return out


def vae_diffusers_to_ldm(state: dict[str, torch.Tensor], num_blocks: int) -> dict[str, torch.Tensor]:
    """The inverse of diffusers' `convert_ldm_vae_checkpoint`: diffusers VAE keys to the original LDM layout."""
    renames: list[tuple[str, str]] = [
        ("conv_norm_out.", "norm_out."),
        ("mid_block.attentions.0.", "mid.attn_1."),
        ("mid_block.resnets.0.", "mid.block_1."),
        ("mid_block.resnets.1.", "mid.block_2."),
    ]
    for i in range(num_blocks):
        renames += [
            (f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."),
            (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."),
            (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{num_blocks - 1 - i}.block."),
            (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{num_blocks - 1 - i}.upsample."),
        ]
    attn = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key.replace("conv_shortcut", "nin_shortcut")
        for old, repl in renames:
            new = new.replace(old, repl)
        if ".mid.attn_1." in new:
            for old, repl in attn.items():
                new = new.replace(".mid.attn_1." + old, ".mid.attn_1." + repl)
            if value.ndim == 2:  # LDM stores attention projections as 1x1 convolutions
                value = value[:, :, None, None]
        out[new] = value.contiguous()
    return out


def vae_to_ldm(vae, prefix: str = VAE_PREFIX) -> dict[str, torch.Tensor]:
    state = vae_diffusers_to_ldm(vae.state_dict(), len(vae.config.block_out_channels))
    return {prefix + k: v for k, v in state.items()}


def pipeline_to_ldm(pipe, family: str) -> dict[str, torch.Tensor]:
    """A whole pipeline as one single-file state dict. `family`: "sd1" (HF CLIP text encoder), "sd2" (the same
    pipeline with its text encoder in the OpenCLIP layout) or "sdxl"."""
    out = unet_diffusers_to_ldm(pipe.unet.state_dict(), pipe.unet.config)
    out.update(vae_to_ldm(pipe.vae))
    if family == "sd1":
        out.update(clip_diffusers_to_ldm(pipe.text_encoder.state_dict(), SD1_CLIP_PREFIX, position_ids=True))
    elif family == "sd2":
        out.update(openclip_diffusers_to_ldm(pipe.text_encoder.state_dict(), SD2_OPENCLIP_PREFIX))
    elif family == "sdxl":
        out.update(clip_diffusers_to_ldm(pipe.text_encoder.state_dict(), SDXL_CLIP_PREFIX))
        out.update(openclip_diffusers_to_ldm(pipe.text_encoder_2.state_dict(), SDXL_OPENCLIP_PREFIX))
    else:
        raise ValueError(f"unknown family {family!r}; valid: sd1, sd2, sdxl")
    return {k: v.detach().contiguous() for k, v in out.items()}


def save_single_file(pipe, family: str, path, extra: Mapping[str, torch.Tensor] | None = None):
    """Write `pipe` as one `.safetensors` checkpoint in the original layout; `extra` tensors are added as is."""
    from pathlib import Path

    from safetensors.torch import save_file

    state = pipeline_to_ldm(pipe, family)
    state.update(extra or {})
    save_file(state, str(path))
    return Path(path)
