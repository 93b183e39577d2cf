"""Rendering on tiny models: seeds, CLIP skip, every way to pick a VAE, refused pickles, SDXL."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import EngineConfig
from engine.errors import EngineError
from engine.infotext import parse_infotext, read_png_infotext
from engine.render.pipeline import Engine, initial_noise
from engine.request import GenerationRequest
from engine.tiny.models import perturbed_vae, write_diffusers_vae_file, write_ldm_vae


def req(**kw) -> GenerationRequest:
    base = dict(prompt="a photo of a cat", seed=7, width=64, height=64, steps=3, sampler="Euler")
    return GenerationRequest(**{**base, **kw})


def pixels(result, i: int = 0) -> np.ndarray:
    return np.asarray(result.images[i].image)


@pytest.fixture
def engine(models_dir: Path) -> Engine:
    return Engine(EngineConfig(models_dir=models_dir))


@pytest.fixture
def vae_files(models_dir: Path, engine: Engine) -> dict[str, Path]:
    """One other VAE's weights stored four ways: LDM file, diffusers file, diffusers folder, sidecar."""
    own = engine.models.checkpoint("tiny-sd15").own_vae
    other = perturbed_vae(own, seed=5)
    vae_dir = models_dir / "VAE"
    vae_dir.mkdir()
    files = {
        "ldm": write_ldm_vae(other, vae_dir / "other-ldm.safetensors"),
        "diffusers": write_diffusers_vae_file(other, vae_dir / "other-diffusers.safetensors"),
    }
    other.save_pretrained(vae_dir / "other-folder", safe_serialization=True)
    files["folder"] = vae_dir / "other-folder"
    return files


def test_same_request_same_pixels_and_seed_reported(engine):
    a, b = engine.render(req()), engine.render(req())
    assert np.array_equal(pixels(a), pixels(b))
    assert a.seed == 7 and a.images[0].seed == 7


def test_random_seed_is_drawn_and_reported(engine):
    result = engine.render(req(seed=-1))
    assert 0 <= result.seed <= 2**32 - 2
    again = engine.render(req(seed=result.seed))
    assert np.array_equal(pixels(result), pixels(again))


def test_batch_image_i_uses_seed_plus_i(engine):
    batch = engine.render(req(seed=100, batch_size=3))
    assert [im.seed for im in batch.images] == [100, 101, 102]
    for i in range(3):
        solo = engine.render(req(seed=100 + i))
        assert np.array_equal(pixels(batch, i), pixels(solo))


def test_noise_is_drawn_on_the_cpu_from_the_seed():
    noise, _ = initial_noise([5], 64, 64, 4, 8)
    expected = torch.randn((4, 8, 8), generator=torch.Generator("cpu").manual_seed(5))
    assert torch.equal(noise[0], expected)


# --- the latent grid is the model's: its VAE's scale factor ---------------------------------------------------


def test_a_vae_that_scales_by_2_renders_the_asked_size(tmp_path, tiny_vae2):
    shutil.copytree(tiny_vae2, tmp_path / "tiny-vae2")
    engine = Engine(EngineConfig(models_dir=tmp_path))
    assert engine.models.checkpoint("").pipe.vae_scale_factor == 2
    result = engine.render(req(width=64, height=96))
    assert result.images[0].image.size == (64, 96)
    assert "Size: 64x96" in result.images[0].infotext


def test_a_vae_that_scales_by_16_needs_sides_on_its_grid(tmp_path):
    from engine.tiny.models import write_tiny_model

    write_tiny_model(tmp_path / "tiny-vae16", vae_blocks=5)
    engine = Engine(EngineConfig(models_dir=tmp_path))
    assert engine.render(req(width=64, height=96)).images[0].image.size == (64, 96)
    with pytest.raises(EngineError) as refused:
        engine.render(req(width=72, height=64))
    assert str(refused.value) == (
        "size 72x64 does not fit this model: its VAE scales by 16, so width and height must be multiples of 16; "
        "try 64x64"
    )
    with pytest.raises(EngineError, match=r"^Hires ×1.125 size 72x72 does not fit .* multiples of 16; try 64x64$"):
        engine.render(req(width=64, height=64, hires=1.125))


def test_clip_skip_changes_the_image_and_goes_in_the_infotext(engine):
    one, two = engine.render(req(clip_skip=1)), engine.render(req(clip_skip=2))
    assert not np.array_equal(pixels(one), pixels(two))
    assert "Clip skip" not in one.images[0].infotext
    assert parse_infotext(two.images[0].infotext).params["Clip skip"] == "2"


def test_clip_skip_above_the_layer_count_is_a_user_error(engine):
    with pytest.raises(EngineError, match="CLIP skip must be from 1 to 5"):
        engine.render(req(clip_skip=6))


def test_prompt_weight_changes_the_image(engine):
    a = engine.render(req(prompt="a photo of a (cat:1.0)"))
    b = engine.render(req(prompt="a photo of a (cat:1.6)"))
    assert not np.array_equal(pixels(a), pixels(b))


def test_ldm_and_diffusers_vae_layouts_give_identical_pixels(engine, vae_files):
    ldm = engine.render(req(vae="other-ldm.safetensors"))
    diff = engine.render(req(vae="other-diffusers"))
    folder = engine.render(req(vae="other-folder"))
    own = engine.render(req(vae="none"))
    assert np.array_equal(pixels(ldm), pixels(diff))
    assert np.array_equal(pixels(ldm), pixels(folder))
    assert not np.array_equal(pixels(ldm), pixels(own))
    info = parse_infotext(ldm.images[0].infotext).params
    assert info["VAE"] == "other-ldm.safetensors" and len(info["VAE hash"]) == 10
    assert "VAE" not in parse_infotext(own.images[0].infotext).params


def test_vae_by_path(engine, vae_files):
    by_path = engine.render(req(vae=str(vae_files["ldm"])))
    by_name = engine.render(req(vae="other-ldm"))
    assert np.array_equal(pixels(by_path), pixels(by_name))


def test_auto_uses_the_sidecar_vae_else_the_baked_in_one(engine, models_dir, vae_files):
    baked = engine.render(req(vae="auto"))
    assert np.array_equal(pixels(baked), pixels(engine.render(req(vae="none"))))
    shutil.copy(vae_files["ldm"], models_dir / "tiny-sd15.vae.safetensors")
    auto = engine.render(req(vae="auto"))
    assert np.array_equal(pixels(auto), pixels(engine.render(req(vae="other-ldm"))))
    assert auto.vae == "tiny-sd15.vae.safetensors"
    none = engine.render(req(vae="none"))
    assert np.array_equal(pixels(none), pixels(baked))


def test_unknown_vae_lists_the_valid_names(engine, vae_files):
    with pytest.raises(EngineError, match=r"unknown VAE 'nope'; valid: auto, none, .*other-ldm"):
        engine.render(req(vae="nope"))


def test_a_vae_used_before_costs_no_disk_read(engine, vae_files):
    engine.render(req(vae="other-ldm"))
    engine.render(req(vae="other-diffusers"))
    loads = engine.models.disk_loads
    engine.render(req(vae="other-ldm"))
    engine.render(req(vae="other-diffusers"))
    assert engine.models.disk_loads == loads


def test_vae_with_wrong_latent_channels_is_refused(engine, models_dir):
    from safetensors.torch import save_file

    own = engine.models.checkpoint("").own_vae
    state = {k: v.clone() for k, v in own.state_dict().items()}
    state["decoder.conv_in.weight"] = torch.zeros(16, 16, 3, 3)
    (models_dir / "VAE").mkdir()
    save_file(state, str(models_dir / "VAE" / "wide.safetensors"))
    with pytest.raises(EngineError, match="16-channel latents; this checkpoint needs 4"):
        engine.render(req(vae="wide"))


def test_not_a_vae_is_refused(engine, models_dir):
    from safetensors.torch import save_file

    (models_dir / "VAE").mkdir()
    save_file({"lora_unet.weight": torch.zeros(2)}, str(models_dir / "VAE" / "lora.safetensors"))
    with pytest.raises(EngineError, match="is not a VAE"):
        engine.render(req(vae="lora"))


class _Hostile:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("allow", [False, True])
def test_hostile_pickle_is_refused_without_running(models_dir, tmp_path, allow):
    marker = tmp_path / "pwned"
    (models_dir / "VAE").mkdir()
    with open(models_dir / "VAE" / "evil.pt", "wb") as fh:
        pickle.dump({"decoder.conv_in.weight": _Hostile(marker)}, fh)
    engine = Engine(EngineConfig(models_dir=models_dir, allow_pickle=allow))
    expected = "was refused: it holds more than plain weights" if allow else r"evil.pt is refused \(pickle format"
    with pytest.raises(EngineError, match=expected):
        engine.render(req(vae="evil.pt"))
    assert not marker.exists()


def test_plain_weights_pickle_loads_only_when_allowed(models_dir, vae_files):
    from safetensors.torch import load_file

    torch.save(load_file(str(vae_files["ldm"])), models_dir / "VAE" / "plain.ckpt")
    with pytest.raises(EngineError, match="allow_pickle = true"):
        Engine(EngineConfig(models_dir=models_dir)).render(req(vae="plain.ckpt"))
    allowed = Engine(EngineConfig(models_dir=models_dir, allow_pickle=True))
    a = allowed.render(req(vae="plain.ckpt"))
    b = allowed.render(req(vae="other-ldm"))
    assert np.array_equal(pixels(a), pixels(b))


def test_png_carries_the_infotext_which_round_trips(engine):
    result = engine.render(
        req(
            prompt="猫 🐱, (best quality:1.2)",
            negative_prompt="blurry, text",
            clip_skip=2,
            sampler="DPM++ 2M Karras",
            cfg_scale=6.5,
        )
    )
    text = read_png_infotext(result.images[0].png())
    assert text == result.images[0].infotext
    info = parse_infotext(text)
    assert info.prompt == "猫 🐱, (best quality:1.2)" and info.negative_prompt == "blurry, text"
    p = info.params
    assert (p["Steps"], p["Sampler"], p["Schedule type"], p["CFG scale"], p["Seed"], p["Size"]) == (
        "3",
        "DPM++ 2M",
        "Karras",
        "6.5",
        "7",
        "64x64",
    )
    assert p["Model"] == "tiny-sd15" and len(p["Model hash"]) == 10 and p["Clip skip"] == "2"


def test_unknown_model_lists_the_available_ones(engine):
    with pytest.raises(EngineError, match="unknown model 'sd-xyz'; available models: tiny-sd15"):
        engine.render(req(model="sd-xyz"))


def test_no_model_configured_writes_the_tiny_one(tmp_path):
    from engine.tiny.models import ensure_demo_model

    config = EngineConfig(models_dir=tmp_path / "empty")
    with pytest.raises(EngineError, match="no checkpoint in"):
        Engine(config).render(req())
    assert ensure_demo_model(config) == tmp_path / "empty" / "sdbot-tiny-sd15"
    result = Engine(config).render(req())
    assert result.model == "sdbot-tiny-sd15"
    assert (tmp_path / "empty" / "sdbot-tiny-sd15" / "model_index.json").exists()
    assert ensure_demo_model(EngineConfig(models_dir=tmp_path / "empty")) is None  # one is installed now


def test_every_sampler_renders(engine):
    from engine.samplers import sampler_names

    for name in sampler_names():
        assert engine.render(req(sampler=name, steps=2)).images


def test_nan_decode_is_redone_in_fp32(engine, monkeypatch):
    """A1111's automatic revert: a NaN from a half-precision VAE decodes again in fp32."""
    vae = engine.models.checkpoint("").own_vae
    vae.to(torch.bfloat16)
    original = vae.decode
    calls = []

    def decode(latents, return_dict=True):
        calls.append(latents.dtype)
        out = original(latents, return_dict=return_dict)
        if latents.dtype != torch.float32:
            return (out[0] * float("nan"),)
        return out

    monkeypatch.setattr(vae, "decode", decode)
    result = engine.render(req())
    assert calls == [torch.bfloat16, torch.float32]
    assert "32-bit" in result.notes[0]
    assert not np.isnan(pixels(result).astype(float)).any()


def test_sdxl_renders_with_clip_skip_and_a_vae(tmp_path, tiny_sdxl):
    root = tmp_path / "models"
    shutil.copytree(tiny_sdxl, root / "tiny-sdxl")
    engine = Engine(EngineConfig(models_dir=root))
    own = engine.models.checkpoint("tiny-sdxl").own_vae
    assert own.config.scaling_factor == 0.13025
    (root / "VAE").mkdir()
    write_ldm_vae(perturbed_vae(own, 3), root / "VAE" / "xl-vae.safetensors")
    base = engine.render(req(model="tiny-sdxl"))
    skip3 = engine.render(req(model="tiny-sdxl", clip_skip=3))
    with_vae = engine.render(req(model="tiny-sdxl", vae="xl-vae"))
    assert engine.models._vaes  # the file VAE was built with the SDXL config
    assert next(iter(engine.models._vaes.values())).config.scaling_factor == 0.13025
    assert not np.array_equal(pixels(base), pixels(skip3))
    assert not np.array_equal(pixels(base), pixels(with_vae))
