"""Single-file checkpoints (SD 1.x, 2.x, SDXL `.safetensors`), loaded offline with shipped configs.

A single file holds weights in the original (LDM) key layout and nothing else: no configs, no tokenizer. The
family is read from the keys, as A1111 does (`modules/sd_models_config.py`):

- SDXL base: `conditioner.embedders.1.model...` (OpenCLIP bigG) beside `conditioner.embedders.0.transformer...`
- SD 2.x:    `cond_stage_model.model.transformer...` (OpenCLIP ViT-H)
- SD 1.x:    `cond_stage_model.transformer...` (OpenAI CLIP ViT-L)

The configs are the official diffusers ones, shipped in `engine/configs/<name>/` (sd1 = runwayml/stable-diffusion-
v1-5, sd2 = stabilityai/stable-diffusion-2-1-base, sd2-v = stabilityai/stable-diffusion-2-1, sdxl = stabilityai/
stable-diffusion-xl-base-1.0), so nothing is fetched from the hub. SD 2.x comes as 512 px epsilon and 768 px
v-prediction models with the same keys; like A1111 we look for a `<checkpoint>.yaml` beside the file first
(`parameterization: "v"`), then for a `v_pred` key (Forge's marker, also used by v-prediction SDXL merges), and
otherwise run A1111's test: the UNet at t=999 on a constant input, `mean(out - x) < -1` means v-prediction.

Keys are first renamed as A1111 does (old SD 1.x text-encoder names, SD 2.x Turbo's prefix). Weights are
converted with diffusers' own `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`,
`convert_ldm_clip_checkpoint` and `convert_open_clip_checkpoint`, and loaded strictly: a missing or misshapen
weight is an `EngineError`, never a silently random layer. The tokenizer is the real CLIP BPE, built from
`engine/configs/clip/bpe_simple_vocab_16e6.txt.gz` (spec §7).
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from engine.errors import EngineError

log = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"  # engine/configs
BPE_FILE = CONFIGS_DIR / "clip" / "bpe_simple_vocab_16e6.txt.gz"
# The shipped config folder per family; SD 2.x: "sd2" (512, epsilon) or "sd2-v" (768, v-prediction).
CONFIG_NAMES = {"sd1": "sd1", "sd2": "sd2", "sd2-v": "sd2-v", "sdxl": "sdxl"}

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_OPENCLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_PREFIX = "conditioner.embedders.0.model."


# A1111's `checkpoint_dict_replacements_sd1` / `_sd2_turbo` (modules/sd_models.py): old SD 1.x files name the text
# encoder without `text_model.`; SD 2.x Turbo keeps its OpenCLIP encoder under the SDXL-style prefix.
_SD1_REPLACEMENTS = {
    "cond_stage_model.transformer.embeddings.": "cond_stage_model.transformer.text_model.embeddings.",
    "cond_stage_model.transformer.encoder.": "cond_stage_model.transformer.text_model.encoder.",
    "cond_stage_model.transformer.final_layer_norm.": "cond_stage_model.transformer.text_model.final_layer_norm.",
}
_SD2_TURBO_REPLACEMENTS = {"conditioner.embedders.0.": "cond_stage_model."}


def normalize_keys(state: dict[str, Any]) -> dict[str, Any]:
    """The key renames A1111 applies to every checkpoint before loading it."""
    ln_final = state.get(SDXL_REFINER_PREFIX + "ln_final.weight")
    turbo = ln_final is not None and getattr(ln_final, "shape", (0,))[0] == 1024
    replacements = _SD2_TURBO_REPLACEMENTS if turbo else _SD1_REPLACEMENTS
    if not any(k.startswith(old) for k in state for old in replacements):
        return state
    out: dict[str, Any] = {}
    for key, value in state.items():
        for old, new in replacements.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


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


def _check_unet_input(state: Mapping[str, Any], name: str) -> None:
    conv_in = state.get(UNET_PREFIX + "input_blocks.0.0.weight")
    channels = getattr(conv_in, "shape", (0, 4))[1] if conv_in is not None else 4
    if channels == 9:
        raise EngineError(
            f"{name} is an inpainting checkpoint (9 input channels); text-to-image needs a normal "
            f"(4-channel) checkpoint"
        )
    if channels == 8:
        raise EngineError(
            f"{name} is an InstructPix2Pix checkpoint (8 input channels); text-to-image needs a "
            f"normal (4-channel) checkpoint"
        )
    if channels != 4:
        raise EngineError(f"{name}: the UNet takes {channels} input channels; SD 1.x, 2.x and SDXL take 4")


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


# -------------------------------------------------------------------------------------------------- tokenizer


def clip_byte_characters() -> list[str]:
    """CLIP's reversible byte -> printable character table, in CLIP's order (also the tiny vocab's base)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


@functools.lru_cache(maxsize=1)
def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's 49,408-token vocab and 48,894 merges, parsed once from the shipped BPE file (spec §7)."""
    if not BPE_FILE.exists():
        raise EngineError(f"the CLIP tokenizer file {BPE_FILE} is missing; reinstall sdbot")
    with gzip.open(BPE_FILE, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    pairs = [line.split() for line in lines[1 : 49152 - 256 - 2 + 1]]
    if any(len(pair) != 2 for pair in pairs):
        raise EngineError(f"{BPE_FILE.name} is damaged (a merge that is not a pair of tokens); reinstall sdbot")
    merges = [(first, second) for first, second in pairs]
    chars = clip_byte_characters()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != 49408:
        raise EngineError(f"{BPE_FILE.name} is damaged ({len(vocab)} tokens instead of 49408); reinstall sdbot")
    return vocab, merges


@functools.lru_cache(maxsize=4)
def _cached_clip_tokenizer(pad_token: str):
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    pairs: list[Any] = list(merges)  # tokenizers' BPE takes pairs; transformers types them as str
    return CLIPTokenizer(vocab=vocab, merges=pairs, model_max_length=77, pad_token=pad_token)


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """The real CLIP BPE tokenizer, offline. Pad token: `<|endoftext|>` for SD 1.x and SDXL encoder 1, `!` for
    SD 2.x and SDXL encoder 2. Built once per pad token; each call gets its own copy (textual inversion adds
    tokens to a tokenizer, which must not leak into other models)."""
    return copy.deepcopy(_cached_clip_tokenizer(pad_token))


def load_tokenizer(folder: Path):
    """A tokenizer folder with its own vocabulary (vocab.json + merges.txt, or tokenizer.json) is loaded as is;
    one with only tokenizer_config.json (the shipped configs) gets the CLIP BPE with the configured pad token."""
    from transformers import CLIPTokenizer

    if (folder / "tokenizer.json").exists() or (folder / "vocab.json").exists():
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, model_max_length=77)
    pad = "<|endoftext|>"
    settings = folder / "tokenizer_config.json"
    if settings.exists():
        value = json.loads(settings.read_text()).get("pad_token", pad)
        pad = value["content"] if isinstance(value, dict) else value
    return clip_tokenizer(pad)


# ----------------------------------------------------------------------------------------- v-prediction (SD 2)


def explicit_prediction_type(path: Path | None, state: Mapping[str, Any]) -> str | None:
    """ "v_prediction" / "epsilon" when the checkpoint says so: a `<stem>.yaml` beside it (A1111 reads that
    first; `parameterization: "v"` means v-prediction, none means epsilon) or a `v_pred` key; else None."""
    if path is not None:
        config = path.with_suffix(".yaml")
        if config.exists():
            try:
                import yaml

                data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
                params = (data.get("model") or {}).get("params") or {}
            except Exception as exc:  # a broken sidecar is reported and ignored, as the key test still works
                log.warning("ignoring %s: not a readable LDM config (%s)", config.name, exc)
            else:
                return "v_prediction" if params.get("parameterization") == "v" else "epsilon"
    if "v_pred" in state:
        return "v_prediction"
    return None


def is_v_prediction_sd2(unet) -> bool:
    """A1111's `is_using_v_parameterization_for_sd2`: at t=999 on a constant input and constant conditioning, a
    v-prediction UNet's output is far below the input (`mean(out - x) < -1`), an epsilon UNet's is not."""
    param = next(unet.parameters())
    dims = unet.config.cross_attention_dim

    def run(dtype: torch.dtype) -> float:
        x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, dtype=dtype, device=param.device)
        cond = torch.full((1, 2, dims), 0.5, dtype=dtype, device=param.device)
        t = torch.tensor([999], device=param.device)
        with torch.no_grad():
            out = unet(x, t, encoder_hidden_states=cond).sample
        return (out.float() - x.float()).mean().item()

    try:
        value = run(param.dtype)
    except RuntimeError:  # a half-precision op missing on this device: test in float32, as A1111 does
        original = param.dtype
        unet.float()
        try:
            value = run(torch.float32)
        finally:
            unet.to(original)
    return value < -1


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

    config = _read_json(folder / "unet" / "config.json")
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


def _build_scheduler(folder: Path, prediction_type: str | None, zero_snr: bool):
    import diffusers

    config = _read_json(folder / "scheduler" / "scheduler_config.json")
    cls = getattr(diffusers, config.get("_class_name", "PNDMScheduler"), None)
    if cls is None:
        raise EngineError(f"model config {folder}: unknown scheduler {config.get('_class_name')}")
    if prediction_type:
        config["prediction_type"] = prediction_type
    if zero_snr:
        config["rescale_betas_zero_snr"] = True
    return cls.from_config(config)


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
    scheduler = _build_scheduler(folder, prediction_type, zero_snr)
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
