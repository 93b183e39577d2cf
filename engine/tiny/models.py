"""Tiny random Stable Diffusion models, made offline, for tests and the offline demo.

They run the real diffusers code path in seconds on a CPU. Choices that matter (spec §7):
- a byte-level CLIP BPE tokenizer built in code, with a few merges so common prompt words are one token;
- text encoders with 5 layers, so CLIP skip 1..5 can be tested, and a final layer norm with a clearly non-zero
  random weight and bias, as a trained CLIP has (a zero bias makes A1111's mean restoration divide by ~0);
- a VAE with four blocks by default, so latents are H/8 x W/8 as in real models and A1111's noise shape applies
  (`vae_blocks` makes others: 2 blocks scale by 2, 5 by 16, for models whose latent grid is not 8);
- `write_ldm_vae` writes the same VAE weights in the original LDM key layout, to test that loader.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from engine.config import EngineConfig
from engine.models.ldm_layout import vae_diffusers_to_ldm
from engine.models.loader import ModelLibrary

log = logging.getLogger(__name__)

DEMO_MODEL_NAME = "sdbot-tiny-sd15"

TINY_WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "cat",
    "dog",
    "man",
    "woman",
    "girl",
    "boy",
    "portrait",
    "landscape",
    "painting",
    "anime",
    "style",
    "best",
    "quality",
    "masterpiece",
    "detailed",
    "high",
    "low",
    "worst",
    "blurry",
    "text",
    "red",
    "blue",
    "green",
    "sky",
    "sun",
    "night",
    "city",
    "forest",
    "sea",
    "mountain",
    "beautiful",
    "face",
    "eyes",
    "hair",
    "smile",
    "in",
    "on",
    "with",
    "and",
    "by",
    "art",
    "digital",
    "oil",
    "watercolor",
    "sketch",
]

TEXT_LAYERS = 5
TEXT_HIDDEN = 32


def byte_level_vocab(words: tuple[str, ...] | list[str] = TINY_WORDS) -> tuple[dict[str, int], list[str]]:
    """CLIP's byte-level BPE layout (spec §7) with merges that make each of `words` one token."""
    from engine.models.clip_tokenizer import clip_byte_characters

    chars = clip_byte_characters()
    tokens = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pair = f"{symbols[0]} {symbols[1]}"
            merged = symbols[0] + symbols[1]
            if pair not in merges:
                merges.append(pair)
                tokens.append(merged)
            symbols = [merged] + symbols[2:]
    vocab: dict[str, int] = {}
    for tok in tokens:
        vocab.setdefault(tok, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def make_tokenizer(pad_token: str = "<|endoftext|>"):
    from transformers import CLIPTokenizer

    vocab, merges = byte_level_vocab()
    pairs: list[Any] = [tuple(m.split()) for m in merges]  # tokenizers' BPE takes pairs; transformers types str
    return CLIPTokenizer(vocab=vocab, merges=pairs, model_max_length=77, pad_token=pad_token)


def _text_encoder(tokenizer, *, hidden: int, layers: int, projection: bool, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=hidden,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_factor=1.0,
    )
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)
    with torch.no_grad():
        # Larger token embeddings make the prompt (and its weights) visibly steer the tiny UNet.
        embeddings = model.get_input_embeddings()
        norm = next(module for name, module in model.named_modules() if name.endswith("final_layer_norm"))
        assert isinstance(embeddings, torch.nn.Embedding) and isinstance(norm, torch.nn.LayerNorm)
        embeddings.weight.normal_(0.0, 1.0)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(0.2, 0.8)
    return model.eval()


def _vae(seed: int, width: int = 8, blocks: int = 4):
    from diffusers.models import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(width,) + (width * 2,) * (blocks - 1),
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    ).eval()


def _unet(seed: int, *, cross_dim: int, sdxl: bool, width: int, inpainting: bool = False):
    from diffusers.models import UNet2DConditionModel

    torch.manual_seed(seed)
    extra = {}
    if sdxl:
        extra = dict(
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=(TEXT_HIDDEN - 16) + 6 * 8,  # pooled (encoder 2) + 6 time ids
            transformer_layers_per_block=(1, 1),
        )
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=9 if inpainting else 4,  # an inpainting UNet also sees the mask and the masked image's latents
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(width, width * 2),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_dim,
        attention_head_dim=(2, 4),
        norm_num_groups=8,
        **extra,
    ).eval()


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    # SD 1.x's scheduler config, as in its model_index.
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        prediction_type="epsilon",
        timestep_spacing="leading",
    )


def build_tiny_pipeline(
    family: str = "sd15",
    seed: int = 0,
    unet_width: int = 16,
    vae_width: int = 8,
    vae_blocks: int = 4,
    inpainting: bool = False,
):
    """The tiny pipeline in memory; `unet_width` and `vae_width` (multiples of 8) grow it for benchmarks that need
    compute to dominate in a real model's proportions; `vae_blocks` sets the latent grid (2 ** (blocks - 1));
    `inpainting` gives it a 9-input-channel UNet, as SD 1.x's and SDXL's inpainting checkpoints have."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if family == "sd15":
        tokenizer = make_tokenizer()
        text_encoder = _text_encoder(tokenizer, hidden=TEXT_HIDDEN, layers=TEXT_LAYERS, projection=False, seed=seed + 1)
        return StableDiffusionPipeline(
            vae=_vae(seed + 2, vae_width, vae_blocks),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=_unet(seed + 3, cross_dim=TEXT_HIDDEN, sdxl=False, width=unet_width, inpainting=inpainting),
            scheduler=_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    if family == "sdxl":
        tokenizer = make_tokenizer()
        tokenizer_2 = make_tokenizer(pad_token="!")
        text_encoder = _text_encoder(tokenizer, hidden=16, layers=TEXT_LAYERS, projection=False, seed=seed + 1)
        text_encoder_2 = _text_encoder(
            tokenizer_2, hidden=TEXT_HIDDEN - 16, layers=TEXT_LAYERS, projection=True, seed=seed + 4
        )
        vae = _vae(seed + 2, vae_width, vae_blocks)
        vae.register_to_config(scaling_factor=0.13025)
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=_unet(seed + 3, cross_dim=TEXT_HIDDEN, sdxl=True, width=unet_width, inpainting=inpainting),
            scheduler=_scheduler(),
            force_zeros_for_empty_prompt=False,
        )
    raise ValueError(f"unknown family {family!r}; valid: sd15, sdxl")


def write_tiny_model(
    directory: str | Path,
    family: str = "sd15",
    seed: int = 0,
    unet_width: int = 16,
    vae_width: int = 8,
    vae_blocks: int = 4,
    inpainting: bool = False,
) -> Path:
    """Write a tiny model in diffusers layout (safetensors weights, tokenizer files) and return its path."""
    path = Path(directory)
    pipe = build_tiny_pipeline(
        family, seed=seed, unet_width=unet_width, vae_width=vae_width, vae_blocks=vae_blocks, inpainting=inpainting
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def ensure_demo_model(config: EngineConfig) -> Path | None:
    """No model configured and none installed: write the tiny demo model into the models dir, so everything runs
    offline (the `sdbot` commands that render call this before the engine starts). Its path, or None when a model
    is configured or installed."""
    library = ModelLibrary(config)
    if config.default_model or library.checkpoints():
        return None
    path = library.root / DEMO_MODEL_NAME
    if not (path / "model_index.json").exists():
        log.warning("no checkpoint in %s: writing the tiny demo model to %s", library.root, path)
        write_tiny_model(path)
    return path


def write_ldm_vae(vae, path: str | Path) -> Path:
    """Save `vae`'s weights as one safetensors file in the LDM key layout (like vae-ft-mse-840000)."""
    from safetensors.torch import save_file

    state = vae_diffusers_to_ldm(vae.state_dict(), len(vae.config.block_out_channels))
    save_file(state, str(path))
    return Path(path)


def write_diffusers_vae_file(vae, path: str | Path) -> Path:
    """Save `vae`'s weights as one safetensors file in the diffusers key layout."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(path))
    return Path(path)


def perturbed_vae(vae, seed: int):
    """A copy of `vae` with different decoder weights: a second VAE that visibly changes images."""
    import copy

    other = copy.deepcopy(vae)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.decoder.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return other


def describe(directory: Path) -> str:
    index = json.loads((directory / "model_index.json").read_text())
    return f"{directory} ({index.get('_class_name')})"


def write_tiny_esrgan(path: str | Path, scale: int = 2, seed: int = 0) -> Path:
    """A tiny ESRGAN (RRDBNet, old key layout) upscaler saved as safetensors, for the model-upscaler tests."""
    from safetensors.torch import save_file

    from engine.render.upscalers import _import_spandrel

    _import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    model = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
