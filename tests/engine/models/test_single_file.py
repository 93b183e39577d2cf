"""Single-file checkpoints (engine/models/single_file.py): family detection, the offline CLIP tokenizer, shipped
configs, and tiny checkpoints written in the original LDM layout that must load to exactly the diffusers folder's
weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from engine.errors import EngineError
from engine.models import ldm_layout
from engine.models.clip_tokenizer import clip_tokenizer, load_tokenizer
from engine.models.prediction import explicit_prediction_type, is_v_prediction_sd2
from engine.models.single_file import (
    CONFIGS_DIR,
    detect_family,
    load_single_file_pipeline,
    pipeline_from_state_dict,
)


def _load_folder(path: Path):
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(
        str(path), local_files_only=True, safety_checker=None, requires_safety_checker=False
    )


def _config_copy(model_dir: Path, dest: Path) -> Path:
    """The folder's configs and tokenizer files only: proves the loader reads no weights from it."""
    for f in model_dir.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".txt"):
            target = dest / f.relative_to(model_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target)
    return dest


def _assert_same_weights(a, b, components) -> None:
    for name in components:
        ma, mb = getattr(a, name), getattr(b, name)
        sa, sb = ma.state_dict(), mb.state_dict()
        assert sa.keys() == sb.keys(), name
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{name}.{key}"
        ba, bb = dict(ma.named_buffers()), dict(mb.named_buffers())
        assert ba.keys() == bb.keys()
        for key in ba:
            assert torch.equal(ba[key], bb[key]), f"{name}.{key}"


def _assert_same_image(a, b) -> None:
    """Same weights give the same image; only BLAS rounding may differ (its results depend on how a weight's
    memory is aligned: a tensor read from a file vs one made by the converter), far below one 8-bit level."""
    import numpy as np

    images = [
        p(
            "a photo of a cat",
            negative_prompt="blurry",
            num_inference_steps=2,
            height=64,
            width=64,
            guidance_scale=5.0,
            generator=torch.Generator("cpu").manual_seed(7),
            output_type="np",
        ).images[0]
        for p in (a, b)
    ]
    np.testing.assert_allclose(images[0], images[1], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------- tokenizer


def test_clip_tokenizer_is_the_real_one() -> None:
    tok = clip_tokenizer()
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert tok.pad_token_id == 49407
    assert clip_tokenizer("!").pad_token_id == 0
    padded = clip_tokenizer("!")("a cat", padding="max_length").input_ids
    assert len(padded) == 77 and padded[:4] == [49406, 320, 2368, 49407] and padded[4:] == [0] * 73
    # Each caller owns its copy: added (textual inversion) tokens stay in that copy.
    tok.add_tokens(["<my-embedding>"])
    assert len(clip_tokenizer()) == 49408


@pytest.mark.parametrize(
    "folder, pad",
    [
        ("sd1/tokenizer", 49407),
        ("sd2/tokenizer", 0),
        ("sd2-v/tokenizer", 0),
        ("sdxl/tokenizer", 49407),
        ("sdxl/tokenizer_2", 0),
    ],
)
def test_shipped_tokenizer_pads(folder: str, pad: int) -> None:
    tok = load_tokenizer(CONFIGS_DIR / folder)
    assert tok.pad_token_id == pad and tok.model_max_length == 77


# ---------------------------------------------------------------------------------------- family detection

UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"
VAE_KEYS = [
    "first_stage_model.decoder.up.0.block.0.conv1.weight",
    "first_stage_model.encoder.down.0.block.0.conv1.weight",
]


@pytest.mark.parametrize(
    "keys, family",
    [
        ([UNET_KEY, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", *VAE_KEYS], "sd1"),
        ([UNET_KEY, "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", *VAE_KEYS], "sd2"),
        (
            [
                UNET_KEY,
                "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
                "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
                *VAE_KEYS,
            ],
            "sdxl",
        ),
    ],
)
def test_detect_family(keys: list[str], family: str) -> None:
    assert detect_family(keys) == family
    assert detect_family(set(keys)) == family


@pytest.mark.parametrize(
    "keys, words",
    [
        (["encoder.down.0.block.0.conv1.weight", "decoder.up.0.block.0.conv1.weight", "quant_conv.weight"], "is a VAE"),
        (["encoder.down_blocks.0.resnets.0.conv1.weight", "decoder.up_blocks.0.resnets.0.conv1.weight"], "is a VAE"),
        (VAE_KEYS, "is a VAE"),
        (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "lora_te_text_model.alpha"], "is a LoRA"),
        (["unet.down_blocks.0.attentions.0.to_q.lora_A.weight"], "is a LoRA"),
        (["emb_params"], "embedding"),
        (["control_model.input_hint_block.0.weight"], "ControlNet"),
        (["down_blocks.0.resnets.0.conv1.weight", "conv_in.weight"], "diffusers-format"),
        ([UNET_KEY, "conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight"], "refiner"),
        ([UNET_KEY, *VAE_KEYS], "no text encoder"),
        (["something.else"], "not an SD 1.x, 2.x or SDXL checkpoint"),
        ([], "no weights"),
    ],
)
def test_detect_family_refuses(keys: list[str], words: str) -> None:
    with pytest.raises(EngineError, match=words):
        detect_family(keys, "x.safetensors")


@pytest.mark.parametrize("channels, words", [(8, "InstructPix2Pix"), (5, "SD 1.x, 2.x and SDXL take 4 .9 for")])
def test_detect_family_refuses_other_unet_inputs(channels: int, words: str) -> None:
    state = {
        UNET_KEY: torch.zeros(320, channels, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(1),
    }
    with pytest.raises(EngineError, match=words):
        detect_family(state, "x.safetensors")


def test_a1111_key_renames() -> None:
    from engine.models.ldm_keys import normalize_keys

    turbo = {
        UNET_KEY: torch.zeros(320, 4, 3, 3),
        "conditioner.embedders.0.model.ln_final.weight": torch.zeros(1024),
        "conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(1),
    }
    assert "cond_stage_model.model.ln_final.weight" in normalize_keys(turbo)
    assert detect_family(turbo) == "sd2"  # SD 2.x Turbo, not an SDXL refiner
    old = {UNET_KEY: torch.zeros(1), "cond_stage_model.transformer.encoder.layers.0.mlp.fc1.weight": torch.zeros(1)}
    assert list(normalize_keys(old))[1] == "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"


# ------------------------------------------------------------------------------ tiny single-file checkpoints


@pytest.fixture(scope="module")
def sd15_folder_pipe(tiny_sd15: Path):
    return _load_folder(tiny_sd15)


@pytest.fixture(scope="module")
def sd15_file(tmp_path_factory: pytest.TempPathFactory, tiny_sd15: Path, sd15_folder_pipe):
    root = tmp_path_factory.mktemp("single")
    config = _config_copy(tiny_sd15, root / "config-sd15")
    path = ldm_layout.save_single_file(
        sd15_folder_pipe, "sd1", root / "tiny-sd15.safetensors", extra={"alphas_cumprod": torch.linspace(1, 0, 1000)}
    )
    return path, config


def test_sd1_single_file_matches_folder(sd15_file, sd15_folder_pipe) -> None:
    from diffusers import StableDiffusionPipeline

    path, config = sd15_file
    pipe = load_single_file_pipeline(path, torch.float32, False, config_dir=config)
    assert type(pipe) is StableDiffusionPipeline and pipe.safety_checker is None
    _assert_same_weights(sd15_folder_pipe, pipe, ("unet", "vae", "text_encoder"))
    assert dict(pipe.scheduler.config) == dict(sd15_folder_pipe.scheduler.config)
    assert pipe.tokenizer("a photo").input_ids == sd15_folder_pipe.tokenizer("a photo").input_ids
    _assert_same_image(pipe, sd15_folder_pipe)


def test_inpainting_single_file_gets_a_9_channel_unet(tmp_path: Path, tiny_sd15: Path) -> None:
    """An inpainting checkpoint loads with the shipped (4-channel) configs: its weights say 9 input channels."""
    from engine.tiny.models import write_tiny_model

    folder_pipe = _load_folder(write_tiny_model(tmp_path / "tiny-inpaint", inpainting=True))
    path = ldm_layout.save_single_file(folder_pipe, "sd1", tmp_path / "tiny-inpaint.safetensors")
    pipe = load_single_file_pipeline(path, torch.float32, False, config_dir=_config_copy(tiny_sd15, tmp_path / "c"))
    assert pipe.unet.config.in_channels == 9
    _assert_same_weights(folder_pipe, pipe, ("unet",))


def test_sd2_layout_single_file(tmp_path: Path, tiny_sd15: Path, sd15_folder_pipe) -> None:
    """The tiny model's text encoder written as OpenCLIP (SD 2.x layout) loads back to the same weights."""
    path = ldm_layout.save_single_file(sd15_folder_pipe, "sd2", tmp_path / "tiny-sd2.safetensors")
    config = _config_copy(tiny_sd15, tmp_path / "config")
    pipe = load_single_file_pipeline(path, torch.float32, False, config_dir=config)
    _assert_same_weights(sd15_folder_pipe, pipe, ("unet", "vae", "text_encoder"))
    assert pipe.scheduler.config.prediction_type == "epsilon"
    # A1111's sidecar config decides the parameterization.
    path.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    pipe = load_single_file_pipeline(path, torch.float32, False, config_dir=config)
    assert pipe.scheduler.config.prediction_type == "v_prediction"


def test_sdxl_single_file_matches_folder(tmp_path: Path, tiny_sdxl: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    folder_pipe = _load_folder(tiny_sdxl)
    path = ldm_layout.save_single_file(folder_pipe, "sdxl", tmp_path / "tiny-xl.safetensors")
    pipe = load_single_file_pipeline(path, torch.float32, False, config_dir=_config_copy(tiny_sdxl, tmp_path / "c"))
    assert type(pipe) is StableDiffusionXLPipeline
    _assert_same_weights(folder_pipe, pipe, ("unet", "vae", "text_encoder", "text_encoder_2"))
    assert pipe.vae.config.scaling_factor == 0.13025
    assert pipe.tokenizer_2.pad_token == "!"
    _assert_same_image(pipe, folder_pipe)


def test_v_pred_key_and_half_precision(tmp_path: Path, sd15_file, sd15_folder_pipe) -> None:
    path, config = sd15_file
    marked = ldm_layout.save_single_file(
        sd15_folder_pipe, "sd1", tmp_path / "vpred.safetensors", extra={"v_pred": torch.tensor([])}
    )
    pipe = load_single_file_pipeline(marked, torch.float16, False, config_dir=config)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.unet.dtype == torch.float16 and pipe.text_encoder.dtype == torch.float16
    assert pipe.text_encoder.embeddings.position_ids.dtype == torch.int64


def test_old_sd1_text_encoder_names(tmp_path: Path, sd15_file, sd15_folder_pipe) -> None:
    from safetensors.torch import load_file, save_file

    path, config = sd15_file
    prefix = "cond_stage_model.transformer."
    state = {k.replace(prefix + "text_model.", prefix): v for k, v in load_file(str(path)).items()}
    old = tmp_path / "old.safetensors"
    save_file(state, str(old))
    pipe = load_single_file_pipeline(old, torch.float32, False, config_dir=config)
    _assert_same_weights(sd15_folder_pipe, pipe, ("text_encoder",))


def test_pickle_refused_unless_allowed(tmp_path: Path, sd15_file, sd15_folder_pipe) -> None:
    from safetensors.torch import load_file

    path, config = sd15_file
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(str(path))}, ckpt)
    with pytest.raises(EngineError, match="pickle"):
        load_single_file_pipeline(ckpt, torch.float32, False, config_dir=config)
    pipe = load_single_file_pipeline(ckpt, torch.float32, True, config_dir=config)
    _assert_same_weights(sd15_folder_pipe, pipe, ("unet",))


def test_vae_given_as_model_is_refused(tmp_path: Path, sd15_folder_pipe) -> None:
    from engine.models.loader import ModelFile, load_checkpoint
    from engine.tiny.models import write_ldm_vae

    vae_file = write_ldm_vae(sd15_folder_pipe.vae, tmp_path / "my-model.safetensors")
    with pytest.raises(EngineError, match=r"my-model.safetensors is a VAE, not a checkpoint"):
        load_single_file_pipeline(vae_file, torch.float32, False)
    with pytest.raises(EngineError, match="is a VAE"):  # the same through the model cache's loader
        load_checkpoint(ModelFile("my-model", vae_file), torch.device("cpu"), torch.float32, False)


def test_lora_given_as_model_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "style.safetensors"
    save_file(
        {
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4),
        },
        str(path),
    )
    with pytest.raises(EngineError, match="style.safetensors is a LoRA"):
        load_single_file_pipeline(path, torch.float32, False)


def test_incomplete_checkpoint_is_refused(tmp_path: Path, sd15_file) -> None:
    from safetensors.torch import load_file, save_file

    path, config = sd15_file
    state = load_file(str(path))
    del state["model.diffusion_model.out.2.weight"]
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken))
    with pytest.raises(EngineError, match="UNet weights do not fit"):
        load_single_file_pipeline(broken, torch.float32, False, config_dir=config)


# ------------------------------------------------------------- shipped configs at real size (meta tensors)


def _meta(build):
    with torch.device("meta"):
        return build()


def _real_size_state(name: str) -> dict[str, torch.Tensor]:
    """An LDM-layout state dict of the real architecture, with meta tensors (no memory), as A1111 files hold it."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = CONFIGS_DIR / name
    unet = _meta(lambda: UNet2DConditionModel.from_config(json.loads((folder / "unet/config.json").read_text())))
    vae = _meta(lambda: AutoencoderKL.from_config(json.loads((folder / "vae/config.json").read_text())))
    text = json.loads((folder / "text_encoder/config.json").read_text())
    state = ldm_layout.unet_diffusers_to_ldm(unet.state_dict(), unet.config)
    state.update(ldm_layout.vae_to_ldm(vae))
    if name == "sdxl":
        text_2 = json.loads((folder / "text_encoder_2/config.json").read_text())
        te = _meta(lambda: CLIPTextModel(CLIPTextConfig.from_dict(text)))
        te2 = _meta(lambda: CLIPTextModelWithProjection(CLIPTextConfig.from_dict(text_2)))
        state.update(ldm_layout.clip_diffusers_to_ldm(te.state_dict(), ldm_layout.SDXL_CLIP_PREFIX))
        state.update(ldm_layout.openclip_diffusers_to_ldm(te2.state_dict(), ldm_layout.SDXL_OPENCLIP_PREFIX))
    elif name.startswith("sd2"):
        # The file holds all 24 OpenCLIP layers and the projection; SD 2.x uses 23 (the penultimate layer).
        full = CLIPTextConfig.from_dict({**text, "num_hidden_layers": 24})
        te = _meta(lambda: CLIPTextModelWithProjection(full))
        state.update(ldm_layout.openclip_diffusers_to_ldm(te.state_dict(), ldm_layout.SD2_OPENCLIP_PREFIX))
    else:
        te = _meta(lambda: CLIPTextModel(CLIPTextConfig.from_dict(text)))
        state.update(ldm_layout.clip_diffusers_to_ldm(te.state_dict(), ldm_layout.SD1_CLIP_PREFIX, position_ids=True))
    return state


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "name, diffusers_type, params, scheduler, prediction, size",
    [
        ("sd1", "v1", (859_520_964, 83_653_863, 123_060_480), "PNDMScheduler", "epsilon", 64),
        ("sd2", "v2", (865_910_724, 83_653_863, 340_387_840), "PNDMScheduler", "epsilon", 64),
        ("sd2-v", "v2", (865_910_724, 83_653_863, 340_387_840), "DDIMScheduler", "v_prediction", 96),
        ("sdxl", "xl_base", (2_567_463_684, 83_653_863, 123_060_480), "EulerDiscreteScheduler", "epsilon", 128),
    ],
)
def test_shipped_configs_fit_real_checkpoints(name, diffusers_type, params, scheduler, prediction, size) -> None:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    state = _real_size_state(name)
    assert infer_diffusers_model_type(state) == diffusers_type  # diffusers' own detector agrees on the layout
    override = {"sd2": "epsilon", "sd2-v": "v_prediction"}.get(name)
    pipe = pipeline_from_state_dict(state, torch.float16, name=name, prediction_type=override)
    assert (_count(pipe.unet), _count(pipe.vae), _count(pipe.text_encoder)) == params
    assert type(pipe.scheduler).__name__ == scheduler
    assert pipe.scheduler.config.prediction_type == prediction
    assert pipe.unet.config.sample_size == size
    assert pipe.unet.dtype == torch.float16
    if name == "sdxl":
        assert _count(pipe.text_encoder_2) == 694_659_840
        assert pipe.vae.config.scaling_factor == 0.13025 and pipe.vae.config.force_upcast
        assert (pipe.tokenizer.pad_token_id, pipe.tokenizer_2.pad_token_id) == (49407, 0)
    else:
        assert pipe.vae.config.scaling_factor == 0.18215
        assert pipe.tokenizer.pad_token_id == (0 if name.startswith("sd2") else 49407)


@pytest.mark.parametrize("is_v, scheduler, upcast", [(True, "DDIMScheduler", True), (False, "PNDMScheduler", False)])
def test_sd2_parameterization_is_tested_when_unknown(monkeypatch, is_v, scheduler, upcast) -> None:
    import engine.models.single_file as sf

    monkeypatch.setattr(sf, "is_v_prediction_sd2", lambda unet: is_v)
    pipe = pipeline_from_state_dict(_real_size_state("sd2"), torch.float16, name="sd2.safetensors")
    assert type(pipe.scheduler).__name__ == scheduler
    assert pipe.scheduler.config.prediction_type == ("v_prediction" if is_v else "epsilon")
    assert bool(pipe.unet.config.upcast_attention) is upcast


def test_a1111_v_prediction_test() -> None:
    from types import SimpleNamespace

    class FakeUNet(torch.nn.Module):
        def __init__(self, shift: float) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.shift = shift
            self.config = SimpleNamespace(in_channels=4, cross_attention_dim=1024)

        def forward(self, x, t, encoder_hidden_states):
            assert t.tolist() == [999] and encoder_hidden_states.shape == (1, 2, 1024)
            return SimpleNamespace(sample=x + self.shift + self.w)

    assert is_v_prediction_sd2(FakeUNet(-1.5))
    assert not is_v_prediction_sd2(FakeUNet(0.2))


def test_v_prediction_test_runs_a_real_unet(sd15_folder_pipe) -> None:
    import copy

    unet = sd15_folder_pipe.unet
    assert isinstance(is_v_prediction_sd2(unet), bool)
    half = copy.deepcopy(unet).to(torch.float16)
    assert is_v_prediction_sd2(half) == is_v_prediction_sd2(unet)
    assert half.dtype == torch.float16


def test_explicit_prediction_type(tmp_path: Path) -> None:
    ckpt = tmp_path / "m.safetensors"
    assert explicit_prediction_type(ckpt, {}) is None
    assert explicit_prediction_type(ckpt, {"v_pred": torch.tensor([])}) == "v_prediction"
    ckpt.with_suffix(".yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    assert explicit_prediction_type(ckpt, {"v_pred": torch.tensor([])}) == "epsilon"  # the yaml comes first
    ckpt.with_suffix(".yaml").write_text("model:\n  params:\n    parameterization: v\n")
    assert explicit_prediction_type(ckpt, {}) == "v_prediction"
