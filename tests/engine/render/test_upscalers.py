"""engine.render.upscalers: names as A1111 lists them, latent and image upscaling to the exact size, model
upscalers found in their folders, loaded with the pickle rule, run in tiles without seams, and kept in a small
cache; spandrel imported without torchvision."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import EngineError
from engine.render import upscalers
from engine.render.upscalers import (
    UpscalerLibrary,
    _import_spandrel,
    canonical_name,
    load_model,
    run_tiled,
    upscale_latents,
)
from engine.tiny.models import write_tiny_esrgan


def noise_image(width: int, height: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("typed", "listed"),
    [("lanczos", "Lanczos"), ("  LATENT (Nearest-Exact) ", "Latent (nearest-exact)"), ("my-esrgan", "My-ESRGAN")],
)
def test_names_are_matched_in_any_case(typed, listed):
    assert canonical_name(typed, ["My-ESRGAN"]) == listed


def test_an_unknown_name_lists_every_valid_one():
    with pytest.raises(EngineError, match=r"unknown upscaler 'x4'; valid: Latent, .*, Lanczos, Nearest, mine$"):
        canonical_name("x4", ["mine"])


def test_latents_are_interpolated_to_the_target_over_the_vae_scale():
    latents = torch.randn(1, 4, 8, 8)
    assert upscale_latents(latents, 128, 96, "Latent", 8).shape == (1, 4, 12, 16)
    assert upscale_latents(latents, 128, 96, "Latent (nearest)", 4).shape == (1, 4, 24, 32)


@pytest.mark.parametrize("name", ["Lanczos", "Nearest"])
def test_image_upscalers_give_exactly_the_size_asked(tmp_path, name):
    out = UpscalerLibrary(tmp_path).upscale(noise_image(30, 20), 75, 50, name)
    assert out.size == (75, 50)


def test_nearest_repeats_pixels():
    image = noise_image(4, 4)
    out = np.asarray(UpscalerLibrary("unused").upscale(image, 8, 8, "nearest"))
    assert (out[::2, ::2] == np.asarray(image)).all()


def test_a_latent_mode_is_not_an_image_upscaler(tmp_path):
    with pytest.raises(EngineError, match="works on latents, not images"):
        UpscalerLibrary(tmp_path).upscale(noise_image(8, 8), 16, 16, "Latent")


def test_a_model_runs_until_the_target_then_lanczos_gives_the_exact_size(tmp_path, monkeypatch):
    write_tiny_esrgan(tmp_path / "ESRGAN" / "x2.safetensors", scale=2)
    runs = []
    real = upscalers.run_tiled

    def counted(*args, **kwargs):
        runs.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(upscalers, "run_tiled", counted)
    out = UpscalerLibrary(tmp_path).upscale(noise_image(10, 8), 70, 56, "x2")  # x2 three times is 80x64, then down
    assert out.size == (70, 56) and len(runs) == 3
    runs.clear()
    UpscalerLibrary(tmp_path).upscale(noise_image(10, 8), 300, 240, "x2")  # never more than 3 runs
    assert len(runs) == 3


def test_loaded_models_are_kept_up_to_the_cache_size(tmp_path, monkeypatch):
    for name in ("a", "b", "c"):
        write_tiny_esrgan(tmp_path / "ESRGAN" / f"{name}.safetensors", scale=2)
    loads = []
    real = upscalers.load_model

    def counted(path, **kwargs):
        loads.append(path.stem)
        return real(path, **kwargs)

    monkeypatch.setattr(upscalers, "load_model", counted)
    library = UpscalerLibrary(tmp_path, cache_size=2)
    for name in ("a", "b", "a", "c", "a", "b"):
        library.upscale(noise_image(8, 8), 16, 16, name)
    assert loads == ["a", "b", "c", "b"]  # "a" stayed (used most recently), "b" was dropped for "c"


def test_spandrel_never_leaves_a_torchvision_stand_in_behind():
    _import_spandrel()
    stand_in = sys.modules.get("torchvision")
    assert stand_in is None or hasattr(stand_in, "__file__")  # a real torchvision, or none at all


def test_upscaler_folders_realesrgan_swinir_dat_are_searched(tmp_path):
    for folder in ("RealESRGAN", "SwinIR", "DAT"):
        write_tiny_esrgan(tmp_path / folder / f"m-{folder}.safetensors")
    assert {"m-RealESRGAN", "m-SwinIR", "m-DAT"} <= set(UpscalerLibrary(tmp_path).names())


def test_tiling_matches_the_whole_image_run(tmp_path):
    path = write_tiny_esrgan(tmp_path / "ESRGAN" / "t.safetensors", scale=2)
    descriptor = load_model(path, allow_pickle=False, device="cpu")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    whole = np.asarray(run_tiled(descriptor, image, "cpu", tile=1000)).astype(int)
    tiled = np.asarray(run_tiled(descriptor, image, "cpu", tile=16, margin=16)).astype(int)
    assert whole.shape == (100, 140, 3)
    assert np.abs(whole - tiled).max() <= 1  # no seams: each tile saw enough context


def test_pickled_upscaler_refused_unless_allowed(tmp_path):
    import torch

    _import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    path = tmp_path / "ESRGAN" / "old.pth"
    path.parent.mkdir(parents=True)
    torch.save(ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2).state_dict(), path)
    with pytest.raises(
        EngineError, match=r"old.pth is refused \(pickle format; set \[engine\] allow_pickle = true to allow it\)"
    ):
        load_model(path, allow_pickle=False, device="cpu")
    assert load_model(path, allow_pickle=True, device="cpu").scale == 2


def test_a_non_upscaler_file_is_a_clear_error(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "ESRGAN" / "junk.safetensors"
    path.parent.mkdir(parents=True)
    save_file({"x": torch.zeros(3)}, str(path))
    with pytest.raises(EngineError, match="not an upscaler architecture spandrel knows"):
        load_model(path, allow_pickle=False, device="cpu")
