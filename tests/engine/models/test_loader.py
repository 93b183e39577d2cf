"""engine.models.loader: what the models dir holds and how a name, `auto`, `none` or a path resolves (no weights
read), the family and hash read without loading, the device and dtype settings, and the warm caches."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.config import EngineConfig
from engine.errors import EngineError
from engine.models.ldm_keys import SDXL_CLIP_PREFIX, SDXL_OPENCLIP_PREFIX, UNET_PREFIX, VAE_PREFIX
from engine.models.loader import (
    ModelCache,
    ModelFile,
    ModelLibrary,
    checkpoint_family,
    file_hash,
    resolve_device,
    resolve_dtype,
)
from engine.tiny.models import perturbed_vae, write_diffusers_vae_file


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def folder_model(path: Path, class_name: str = "StableDiffusionPipeline") -> Path:
    path.mkdir(parents=True)
    (path / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    return path


def library(root: Path, **config) -> ModelLibrary:
    return ModelLibrary(EngineConfig(models_dir=root, **config))


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A models dir as A1111 users fill it: files at the top and in Stable-diffusion/, a diffusers folder, a pickle,
    VAEs in VAE/ and one beside its checkpoint."""
    root = tmp_path / "models"
    touch(root / "Beta.safetensors")
    touch(root / "Stable-diffusion" / "alpha.safetensors")
    touch(root / "checkpoints" / "old.ckpt")
    folder_model(root / "gamma")
    touch(root / "Beta.vae.safetensors")  # Beta's own VAE, not a checkpoint
    touch(root / "VAE" / "sharp.safetensors")
    return root


def test_checkpoints_are_found_where_a1111_users_put_them(models):
    names = [f.name for f in library(models).checkpoints()]
    assert names == ["Beta", "gamma", "alpha", "old"]  # the top first, then Stable-diffusion/, then checkpoints/


def test_a_checkpoint_by_name_in_any_case_by_file_name_or_by_path(models):
    lib = library(models)
    assert lib.checkpoint("ALPHA").path == models / "Stable-diffusion" / "alpha.safetensors"
    assert lib.checkpoint("beta.safetensors").name == "Beta"
    elsewhere = touch(models.parent / "elsewhere" / "mine.safetensors")
    assert lib.checkpoint(str(elsewhere)) == ModelFile("mine", elsewhere)


def test_the_default_is_the_configured_one_else_the_first(models):
    assert library(models).checkpoint("").name == "Beta"
    assert library(models, default_model="gamma").checkpoint("").name == "gamma"


def test_an_unknown_or_missing_checkpoint_says_what_there_is(models, tmp_path):
    with pytest.raises(EngineError, match="unknown model 'delta'; available models: Beta, gamma, alpha, old"):
        library(models).checkpoint("delta")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="no checkpoint in .*empty: install one there or set"):
        library(tmp_path / "empty").checkpoint("")


def test_vaes_come_from_the_vae_folder_and_beside_their_checkpoints(models):
    assert [v.name for v in library(models).vaes()] == ["sharp.safetensors", "Beta.vae.safetensors"]


def test_the_vae_setting(models):
    lib = library(models)
    beta, alpha = lib.checkpoint("Beta"), lib.checkpoint("alpha")
    assert lib.vae_for("none", beta) is None
    assert lib.vae_for("auto", beta).name == "Beta.vae.safetensors"  # its own sidecar
    assert lib.vae_for("auto", alpha) is None  # none beside it: the baked-in VAE
    assert lib.vae_for("SHARP", alpha).name == "sharp.safetensors"  # by stem, any case
    assert lib.vae_for("Beta.vae", alpha).name == "Beta.vae.safetensors"
    with pytest.raises(EngineError, match=r"unknown VAE 'blurry'; valid: auto, none, sharp.safetensors"):
        lib.vae_for("blurry", beta)


def test_auto_skips_a_pickled_sidecar_unless_pickles_are_allowed(models):
    touch(models / "Stable-diffusion" / "alpha.vae.pt")
    alpha = library(models).checkpoint("alpha")
    assert library(models).vae_for("auto", alpha) is None
    assert library(models, allow_pickle=True).vae_for("auto", alpha).name == "alpha.vae.pt"


def test_the_family_is_read_without_loading_weights(tmp_path):
    assert checkpoint_family(ModelFile("x", folder_model(tmp_path / "xl", "StableDiffusionXLPipeline"))) == "sdxl"
    assert checkpoint_family(ModelFile("s", folder_model(tmp_path / "sd"))) == "sd"
    xl = tmp_path / "xl.safetensors"
    prefixes = (UNET_PREFIX, VAE_PREFIX, SDXL_CLIP_PREFIX, SDXL_OPENCLIP_PREFIX + "transformer.")
    save_file({prefix + "x": torch.zeros(1) for prefix in prefixes}, str(xl))
    assert checkpoint_family(ModelFile("xl", xl)) == "sdxl"
    assert checkpoint_family(ModelFile("p", touch(tmp_path / "p.ckpt"))) == "sd"  # a pickle is never opened
    assert checkpoint_family(ModelFile("junk", touch(tmp_path / "junk.safetensors"))) == "sd"


def test_the_hash_is_a1111s_first_ten_hex_digits_of_sha256(tmp_path):
    path = touch(tmp_path / "m.safetensors", b"weights")
    assert file_hash(path) == hashlib.sha256(b"weights").hexdigest()[:10]
    folder = tmp_path / "vae-folder"
    touch(folder / "diffusion_pytorch_model.safetensors", b"vae")
    assert file_hash(folder) == hashlib.sha256(b"vae").hexdigest()[:10]
    (tmp_path / "empty").mkdir()
    assert file_hash(tmp_path / "empty") == "0000000000"


def test_device_and_dtype_settings():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32  # half precision only on a GPU
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(EngineError, match="no CUDA device is available; use 'auto' or 'cpu'"):
            resolve_device("cuda")


def test_the_caches_load_each_model_and_vae_once_and_drop_the_least_recent(tmp_path, tiny_sd15):
    root = tmp_path / "models"
    for name in ("one", "two"):
        shutil.copytree(tiny_sd15, root / name)
    cache = ModelCache(EngineConfig(models_dir=root, checkpoint_cache_size=1, vae_cache_size=1))
    one = cache.checkpoint("one")
    assert cache.checkpoint("ONE") is one and cache.disk_loads == 1  # a hit reads nothing
    (root / "VAE").mkdir()
    write_diffusers_vae_file(perturbed_vae(one.own_vae, seed=1), root / "VAE" / "other.safetensors")
    vae, file = cache.vae("other", one)
    assert file is not None and file.name == "other.safetensors" and vae is not one.own_vae
    assert cache.vae("other", one)[0] is vae and cache.disk_loads == 2
    assert cache.vae("none", one) == (one.own_vae, None)
    cache.checkpoint("two")  # the cache holds one checkpoint: "one" and its VAEs go
    assert cache.disk_loads == 3
    cache.checkpoint("one")
    assert cache.disk_loads == 4
