"""The original (LDM) single-file layout's key prefixes, one per part, and the renames A1111 applies to a
checkpoint's keys before loading it. The loader (`engine.models.single_file`) reads them; `engine.models.ldm_layout`
writes them."""

from __future__ import annotations

from typing import Any

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
