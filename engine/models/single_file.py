"""Single-file checkpoints (SD 1.x, 2.x, SDXL `.safetensors`), loaded offline with shipped configs.

A single file holds weights in the original (LDM) key layout and nothing else: no configs, no tokenizer. The
family is read from the keys, as A1111 does (`modules/sd_models_config.py`):

- SDXL base: `conditioner.embedders.1.model...` (OpenCLIP bigG) beside `conditioner.embedders.0.transformer...`
- SD 2.x:    `cond_stage_model.model.transformer...` (OpenCLIP ViT-H)
- SD 1.x:    `cond_stage_model.transformer...` (OpenAI CLIP ViT-L)

The configs are the official diffusers ones, shipped in `engine/configs/<name>/` (sd1 = runwayml/stable-diffusion-
v1-5, sd2 = stabilityai/stable-diffusion-2-1-base, sd2-v = stabilityai/stable-diffusion-2-1, sdxl = stabilityai/
stable-diffusion-xl-base-1.0), so nothing is fetched from the hub. Epsilon or v-prediction is decided as A1111 does
(`engine.models.prediction`); the tokenizer is the real CLIP BPE (`engine.models.clip_tokenizer`).

Keys are first renamed as A1111 does (`engine.models.ldm_keys`). Weights are converted with diffusers' own
`convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint` and
`convert_open_clip_checkpoint`, and loaded strictly: a missing or misshapen weight is an `EngineError`, never a
silently random layer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from engine.errors import EngineError
from engine.models.clip_tokenizer import load_tokenizer
from engine.models.ldm_keys import (
    SD1_CLIP_PREFIX,
    SD2_OPENCLIP_PREFIX,
    SDXL_CLIP_PREFIX,
    SDXL_OPENCLIP_PREFIX,
    SDXL_REFINER_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    normalize_keys,
)
from engine.models.prediction import explicit_prediction_type, is_v_prediction_sd2, scheduler_for

log = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"  # engine/configs
# The shipped config folder per family; SD 2.x: "sd2" (512, epsilon) or "sd2-v" (768, v-prediction).
CONFIG_NAMES = {"sd1": "sd1", "sd2": "sd2", "sd2-v": "sd2-v", "sdxl": "sdxl"}

# --------------------------------------------------------------------------------------------- family detection


def _has_prefix(keys: Iterable[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def detect_family(state: Mapping[str, Any] | Iterable[str], name: str = "this file") -> str:
    """ "sd1", "sd2" or "sdxl" from a state dict (or just its keys); anything else is an `EngineError` that says
    what the file seems to be instead."""
    if isinstance(state, Mapping):
        state = normalize_keys(dict(state))
    keys = list(state.keys()) if isinstance(state, Mapping) else list(state)
    has_unet = _has_prefix(keys, UNET_PREFIX)
    if has_unet:
        if _has_prefix(keys, SDXL_OPENCLIP_PREFIX + "transformer."):
            family = "sdxl"
        elif _has_prefix(keys, SDXL_REFINER_PREFIX):
            raise EngineError(
                f"{name} is an SDXL refiner, which cannot make images on its own; use an SDXL base "
                f"model (sdbot has no refiner pass)"
            )
        elif _has_prefix(keys, SD2_OPENCLIP_PREFIX + "transformer."):
            family = "sd2"
        elif _has_prefix(keys, SD1_CLIP_PREFIX):
            family = "sd1"
        else:
            raise EngineError(
                f"{name} holds a UNet but no text encoder this engine knows (SD 1.x, 2.x or SDXL); "
                f"it may be a UNet-only export or another model type"
            )
        if isinstance(state, Mapping):
            _check_unet_input(state, name)
        return family
    raise EngineError(_what_is_it(state if isinstance(state, Mapping) else None, keys, name))


def unet_input_channels(state: Mapping[str, Any]) -> int:
    """The UNet's input channels: 4, or 9 for an inpainting checkpoint (latents, mask, masked image's latents)."""
    conv_in = state.get(UNET_PREFIX + "input_blocks.0.0.weight")
    return getattr(conv_in, "shape", (0, 4))[1] if conv_in is not None else 4


def _check_unet_input(state: Mapping[str, Any], name: str) -> None:
    channels = unet_input_channels(state)
    if channels == 8:
        raise EngineError(
            f"{name} is an InstructPix2Pix checkpoint (8 input channels); text-to-image needs a "
            f"normal (4-channel) checkpoint"
        )
    if channels not in (4, 9):
        raise EngineError(
            f"{name}: the UNet takes {channels} input channels; SD 1.x, 2.x and SDXL take 4 (9 for inpainting)"
        )


def _what_is_it(state: Mapping[str, Any] | None, keys: list[str], name: str) -> str:
    """The message for a file that is not a checkpoint: say what it looks like and where it belongs."""
    if not keys:
        return f"{name} holds no weights"
    lowered = [k.lower() for k in keys]
    if any(
        s in k
        for k in lowered
        for s in ("lora_", ".lora_down.", ".lora_up.", ".lora_a.", ".lora_b.", "hada_w", "lokr_w")
    ):
        return (
            f"{name} is a LoRA (or LyCORIS), not a checkpoint: put it in the LoRA folder and use it with "
            f"<lora:NAME:weight> in the prompt"
        )
    if any(k in ("emb_params", "string_to_param", "string_to_token", "clip_l", "clip_g") for k in keys):
        return f"{name} is a textual-inversion embedding, not a checkpoint"
    if _has_prefix(keys, "control_model.") or any(
        "input_hint_block" in k or "controlnet_cond_embedding" in k for k in keys
    ):
        return f"{name} is a ControlNet, not a checkpoint"
    vae_like = all(
        k.startswith(
            ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", VAE_PREFIX, "vae.", "model_ema.", "loss.")
        )
        for k in keys
    )
    if vae_like and any(".up." in k or ".up_blocks." in k or ".down." in k for k in keys):
        return (
            f"{name} is a VAE, not a checkpoint: put it in the VAE folder (models/VAE) and choose it with the "
            f"VAE setting"
        )
    if _has_prefix(keys, "down_blocks.") or _has_prefix(keys, "unet.down_blocks."):
        return (
            f"{name} is a single diffusers-format component (a UNet), not a full checkpoint; use a diffusers "
            f"model folder (with model_index.json) or an original single-file checkpoint"
        )
    if _has_prefix(keys, "text_model.") or _has_prefix(keys, "transformer.resblocks."):
        return f"{name} is a text encoder on its own, not a full checkpoint"
    other = None
    if state is not None:
        try:
            from diffusers.loaders.single_file_utils import infer_diffusers_model_type

            other = infer_diffusers_model_type(state)
        except Exception:  # the detector indexes keys it assumes present: any failure means "unknown"
            other = None
    if other and other != "v1":
        return f"{name} looks like a {other} model; sdbot loads SD 1.x, SD 2.x and SDXL checkpoints only"
    return (
        f"{name} is not an SD 1.x, 2.x or SDXL checkpoint (no model.diffusion_model.* UNet weights; first keys: "
        f"{', '.join(sorted(keys)[:3])})"
    )


# -------------------------------------------------------------------------------------------------- building


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineError(f"model config {path} is missing") from None


def _empty(build):
    """Build a module without allocating or initialising its weights (they come from the checkpoint)."""
    with torch.device("meta"):
        return build()


def _fill(model, state: dict[str, torch.Tensor], what: str, name: str, dtype: torch.dtype):
    """Load `state` into a module built by `_empty`: every weight must be there with the right shape."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise EngineError(
            f"{name}: the {what} weights do not fit the {what} this checkpoint type needs ({len(missing)} of "
            f"{len(expected)} missing, e.g. {missing[0]}); the file may be damaged or of another model type"
        )
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise EngineError(
                f"{name}: {what} weight {key} has shape {tuple(state[key].shape)}, expected "
                f"{tuple(ref.shape)}; the file is of another model type"
            )
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        log.debug("%s: %d unused %s keys, e.g. %s", name, len(unexpected), what, unexpected[0])
    weights = {k: (state[k].to(dtype) if state[k].is_floating_point() else state[k]) for k in expected}
    model.load_state_dict(weights, strict=True, assign=True)
    # Non-persistent buffers (CLIP's position_ids) are not in any state dict: make them real again.
    for module_name, module in model.named_modules():
        for buf_name, buf in list(module._buffers.items()):
            if buf is not None and buf.is_meta:
                if buf_name != "position_ids":
                    raise RuntimeError(f"{what}: buffer {module_name}.{buf_name} was not loaded")
                module._buffers[buf_name] = torch.arange(buf.shape[-1]).expand(buf.shape).clone()
            elif buf is not None and buf.is_floating_point() and buf.dtype != dtype:
                module._buffers[buf_name] = buf.to(dtype)
    return model.eval()


def _sub(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def _build_unet(
    state: Mapping[str, torch.Tensor],
    folder: Path,
    dtype: torch.dtype,
    name: str,
    converted: dict[str, torch.Tensor] | None = None,
):
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    config = _read_json(folder / "unet" / "config.json") | {"in_channels": unet_input_channels(state)}
    if converted is None:
        try:
            converted = convert_ldm_unet_checkpoint(_sub(state, UNET_PREFIX), config)
        except (KeyError, IndexError) as exc:
            raise EngineError(f"{name}: the UNet weights do not fit this checkpoint type ({exc!r})") from None
    unet = _empty(lambda: UNet2DConditionModel.from_config(config))
    return _fill(unet, converted, "UNet", name, dtype), converted


def _build_vae(state: Mapping[str, torch.Tensor], folder: Path, dtype: torch.dtype, name: str):
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    config = _read_json(folder / "vae" / "config.json")
    vae_state = _sub(state, VAE_PREFIX)
    if not vae_state:
        raise EngineError(f"{name} holds no VAE (first_stage_model.* weights); it is not a complete checkpoint")
    try:
        converted = convert_ldm_vae_checkpoint(vae_state, config)
    except (KeyError, IndexError) as exc:
        raise EngineError(f"{name}: the baked-in VAE does not fit this checkpoint type ({exc!r})") from None
    vae = _empty(lambda: AutoencoderKL.from_config(config))
    return _fill(vae, converted, "VAE", name, dtype)


def _text_encoder_class(folder: Path, component: str):
    import transformers

    config = _read_json(folder / component / "config.json")
    index = folder / "model_index.json"
    class_name = None
    if index.exists():
        entry = _read_json(index).get(component)
        if isinstance(entry, list) and len(entry) == 2 and entry[1]:
            class_name = entry[1]
    class_name = class_name or (config.get("architectures") or ["CLIPTextModel"])[0]
    if class_name not in ("CLIPTextModel", "CLIPTextModelWithProjection"):
        raise EngineError(f"model config {folder / component}: unsupported text encoder {class_name}")
    return getattr(transformers, class_name), config


def _build_text_encoder(
    state: Mapping[str, torch.Tensor],
    folder: Path,
    component: str,
    prefix: str,
    openclip: bool,
    dtype: torch.dtype,
    name: str,
):
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextConfig

    cls, config_dict = _text_encoder_class(folder, component)
    config = CLIPTextConfig.from_dict(config_dict)
    model = _empty(lambda: cls(config))
    sub = _sub(state, prefix)
    if not sub:
        raise EngineError(f"{name} holds no text encoder weights under {prefix}*")
    if openclip:
        # SD 2.x uses the penultimate OpenCLIP layer: the config has one layer fewer than the file. Drop the
        # layers the config does not have (diffusers hard-codes layer 23 of SD 2.x; this works for any size).
        layers = config.num_hidden_layers
        keep = {}
        for key, value in sub.items():
            rest = key[len(prefix) :]
            if rest.startswith("transformer.resblocks.") and int(rest.split(".")[2]) >= layers:
                continue
            if rest == "text_projection" and not hasattr(model, "text_projection"):
                continue
            keep[key] = value
        converted = convert_open_clip_checkpoint(model, keep, prefix=prefix)
    else:
        converted = convert_ldm_clip_checkpoint(sub, remove_prefix=prefix)
    if not hasattr(model, "text_model"):  # transformers >= 5.6 flattens CLIPTextModel
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    converted = {k: v for k, v in converted.items() if not k.endswith("position_ids")}
    return _fill(model, converted, f"text encoder ({component})", name, dtype)


def pipeline_from_state_dict(
    state: Mapping[str, torch.Tensor],
    dtype: torch.dtype,
    *,
    name: str = "checkpoint",
    config_dir: Path | None = None,
    prediction_type: str | None = None,
):
    """A StableDiffusionPipeline or StableDiffusionXLPipeline from an LDM-layout state dict.

    `config_dir`: a diffusers model folder whose configs (and tokenizer files) describe the weights; by default the
    shipped config of the detected family. `prediction_type` overrides the scheduler's ("epsilon" or
    "v_prediction"); for SD 2.x with the shipped configs and no override, A1111's UNet test decides.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    state = normalize_keys(dict(state))
    family = detect_family(state, name)
    zero_snr = "ztsnr" in state
    folder = Path(config_dir) if config_dir is not None else CONFIGS_DIR / CONFIG_NAMES[family]
    if family == "sd2" and config_dir is None and prediction_type == "v_prediction":
        folder = CONFIGS_DIR / CONFIG_NAMES["sd2-v"]
    unet, converted = _build_unet(state, folder, dtype, name)
    if family == "sd2" and config_dir is None and prediction_type is None:
        if is_v_prediction_sd2(unet):
            # 768 px v-prediction (SD 2.x "768-v"): same weights, the 2-1 config (attention upcast, 768 px).
            folder = CONFIGS_DIR / CONFIG_NAMES["sd2-v"]
            unet, _ = _build_unet(state, folder, dtype, name, converted=converted)
            prediction_type = "v_prediction"
        else:
            prediction_type = "epsilon"
        log.info("%s: SD 2.x %s model (A1111's UNet test)", name, prediction_type)
    del converted
    vae = _build_vae(state, folder, dtype, name)
    scheduler_config = _read_json(folder / "scheduler" / "scheduler_config.json")
    scheduler = scheduler_for(scheduler_config, prediction_type, zero_snr, f"model config {folder}")
    index = _read_json(folder / "model_index.json") if (folder / "model_index.json").exists() else {}
    if family == "sdxl":
        te1 = _build_text_encoder(state, folder, "text_encoder", SDXL_CLIP_PREFIX, False, dtype, name)
        te2 = _build_text_encoder(state, folder, "text_encoder_2", SDXL_OPENCLIP_PREFIX, True, dtype, name)
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=te1,
            text_encoder_2=te2,
            tokenizer=load_tokenizer(folder / "tokenizer"),
            tokenizer_2=load_tokenizer(folder / "tokenizer_2"),
            unet=unet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)),
            add_watermarker=False,
        )
    if family == "sd2":
        text_encoder = _build_text_encoder(state, folder, "text_encoder", SD2_OPENCLIP_PREFIX, True, dtype, name)
    else:
        text_encoder = _build_text_encoder(state, folder, "text_encoder", SD1_CLIP_PREFIX, False, dtype, name)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=load_tokenizer(folder / "tokenizer"),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def load_single_file_pipeline(path: Path, dtype: torch.dtype, allow_pickle: bool, config_dir: Path | None = None):
    """Load an SD 1.x, 2.x or SDXL single-file checkpoint offline (safety checker None).

    Pickle files (.ckpt, .pt, .bin, .pth) are refused unless `allow_pickle`, then read weights-only.
    `config_dir` replaces the shipped family config (tests use tiny models).
    """
    from engine.models.state_dict import read_state_dict

    path = Path(path)
    state = read_state_dict(path, allow_pickle)
    prediction_type = explicit_prediction_type(path, state)
    pipe = pipeline_from_state_dict(
        state, dtype, name=path.name, config_dir=config_dir, prediction_type=prediction_type
    )
    del state
    return pipe
