"""SDXL LoRAs: kohya's te1/te2 prefixes and its original-UNet (SGM) layer names, on the tiny SDXL model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import EngineConfig
from engine.errors import EngineError
from engine.networks.lora import pipeline_targets, sgm_to_diffusers
from engine.render.pipeline import Engine
from engine.request import GenerationRequest
from engine.tiny.models import build_tiny_pipeline
from engine.tiny.networks import write_network

# kohya SDXL name (after "lora_unet_") -> the diffusers layer, for the tiny SDXL UNet (2 blocks, 1 layer each).
SGM_NAMES = {
    "input_blocks_0_0": "conv_in",
    "input_blocks_1_0_in_layers_2": "down_blocks_0_resnets_0_conv1",
    "input_blocks_1_1_transformer_blocks_0_attn1_to_q": "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    "input_blocks_2_0_op": "down_blocks_0_downsamplers_0_conv",
    "input_blocks_3_0_emb_layers_1": "down_blocks_1_resnets_0_time_emb_proj",
    "middle_block_1_proj_in": "mid_block_attentions_0_proj_in",
    "middle_block_2_out_layers_3": "mid_block_resnets_1_conv2",
    "output_blocks_2_0_skip_connection": "up_blocks_1_resnets_0_conv_shortcut",
    "output_blocks_3_1_proj_out": "up_blocks_1_attentions_1_proj_out",
    "out_2": "conv_out",
    "time_embed_0": "time_embedding_linear_1",
    "label_emb_0_2": "add_embedding_linear_2",
}


def test_kohya_sgm_names_map_to_the_diffusers_layers():
    pipe = build_tiny_pipeline("sdxl")
    state = {f"lora_unet_{k}.lora_down.weight": torch.zeros(1) for k in SGM_NAMES}
    state["lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha"] = torch.ones(())
    mapped = {k.split(".")[0] for k in sgm_to_diffusers("x", state, pipe.unet.config)}
    assert mapped == {f"lora_unet_{v}" for v in SGM_NAMES.values()} | {"lora_te2_text_model_encoder_layers_0_mlp_fc1"}
    assert mapped <= set(pipeline_targets(pipe))


def req(prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, seed=2, width=64, height=64, steps=2, sampler="Euler")


@pytest.fixture(scope="module")
def xl(tmp_path_factory, tiny_sdxl: Path) -> Engine:
    root = tmp_path_factory.mktemp("xl-lora")
    shutil.copytree(tiny_sdxl, root / "tiny-sdxl")
    engine = Engine(EngineConfig(models_dir=root))
    pipe = engine.models.checkpoint("tiny-sdxl").pipe
    write_network(
        pipe, root / "Lora" / "xl.safetensors", "loha", seed=1, metadata={"ss_base_model_version": "sdxl_base_v1-0"}
    )
    write_network(build_tiny_pipeline(), root / "Lora" / "sd15.safetensors", seed=2)
    return engine


def test_an_sdxl_lora_acts_on_both_text_encoders_and_the_unet(xl):
    none = np.asarray(xl.render(req("a cat")).images[0].image)
    te_only = np.asarray(xl.render(req("a cat <lora:xl:1:0>")).images[0].image)
    full = np.asarray(xl.render(req("a cat <lora:xl:1>")).images[0].image)
    assert not np.array_equal(none, te_only) and not np.array_equal(te_only, full)
    assert np.array_equal(np.asarray(xl.render(req("a cat <lora:xl:0>")).images[0].image), none)


def test_an_sd15_lora_on_sdxl_is_refused_naming_both_families(xl):
    with pytest.raises(
        EngineError,
        match=r"^LoRA sd15 \(sd15.safetensors\) is for SD 1.x/2.x; this checkpoint is "
        r"SDXL$",
    ):
        xl.render(req("a cat <lora:sd15:1>"))
