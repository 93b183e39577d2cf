"""Which model family a LoRA/LyCORIS file is for, from its kohya metadata or its key names (no weights read).

A leaf of engine.networks: the library lists files with it and the LoRA merger checks files against the checkpoint.
"""

from __future__ import annotations

FAMILY_LABELS = {"sd": "SD 1.x/2.x", "sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
# kohya's names for SDXL UNet blocks, which follow the original (SGM) UNet
SGM_BLOCKS = ("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_")


def file_family(keys: list[str], metadata: dict[str, str]) -> str:
    """A file's model family from its kohya metadata, else from its key names."""
    base = str(metadata.get("ss_base_model_version", ""))
    if base.startswith("sdxl"):
        return "sdxl"
    if str(metadata.get("ss_v2", "")) == "True" or base.startswith("sd_v2"):
        return "sd2"
    if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) or k.startswith(SGM_BLOCKS) for k in keys):
        return "sdxl"
    return "sd"
