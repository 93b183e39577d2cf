"""Live previews: A1111's "Approx cheap" latent -> RGB map, and TAESD decoders found in the models dir."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import EngineError
from engine.render.previews import (
    APPROX_CHEAP,
    Previewer,
    approx_cheap,
    cheap_preview,
    find_taesd,
    load_taesd_decoder,
    original_to_diffusers,
    to_image,
)

SD_ROWS = [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]]
SDXL_ROWS = [
    [0.3448, 0.4168, 0.4395],
    [-0.1953, -0.0290, 0.0250],
    [0.1074, 0.0886, -0.0163],
    [-0.3730, -0.2499, -0.2088],
]


@pytest.mark.parametrize("family, rows", [("sd", SD_ROWS), ("sdxl", SDXL_ROWS)])
def test_approx_cheap_is_a1111s_matrix(family, rows):
    assert [list(r) for r in APPROX_CHEAP[family].matrix] == rows
    assert APPROX_CHEAP[family].bias == (0.0, 0.0, 0.0)  # A1111 adds none
    for channel in range(4):
        latents = torch.zeros(1, 4, 2, 3)
        latents[0, channel] = 1.0
        rgb = approx_cheap(latents, family)
        assert rgb.shape == (1, 3, 2, 3)
        assert torch.allclose(rgb[0, :, 1, 2], torch.tensor(rows[channel]))


def test_approx_cheap_matches_a1111s_einsum():
    latents = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(0))
    expected = torch.einsum("...lxy,lr -> ...rxy", latents, torch.tensor(SD_ROWS))
    assert torch.allclose(approx_cheap(latents), expected)
    assert torch.allclose(approx_cheap(latents[0]), expected[0])  # unbatched works too


def test_to_image_maps_like_a1111():
    rgb = torch.tensor([-2.0, 0.0, 1.0]).view(3, 1, 1).expand(3, 2, 2)
    image = to_image(rgb)
    assert image.size == (2, 2) and image.mode == "RGB"
    assert tuple(np.asarray(image)[0, 0]) == (0, 127, 255)  # clamp((x + 1) / 2, 0, 1) * 255, truncated


def test_cheap_preview_is_the_first_image_at_latent_size():
    latents = torch.zeros(3, 4, 8, 16)
    latents[0, 0] = 10.0  # a white first image (10 x row 0 > 1 everywhere), the others grey
    image = cheap_preview(latents)
    assert image.size == (16, 8)
    assert tuple(np.asarray(image)[0, 0]) == (255, 255, 255)
    assert cheap_preview(latents[1]).getpixel((0, 0)) == (127, 127, 127)


def test_no_cheap_preview_for_other_latents():
    with pytest.raises(EngineError, match="16-channel"):
        approx_cheap(torch.zeros(1, 16, 4, 4))


# --- TAESD -------------------------------------------------------------------------------------------------


def small_taesd():
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    ).eval()


def default_decoder():
    from engine.render.previews import _default_decoder

    torch.manual_seed(1)
    decoder = _default_decoder().eval()
    with torch.no_grad():
        for p in decoder.parameters():
            p.mul_(3.0)  # random weights that do not wash out to a flat grey
    return decoder


def write_original(decoder, path: Path) -> Path:
    """A decoder in the original TAESD layout: nn.Sequential(Clamp(), conv, ...), so indices shift up by one."""
    from safetensors.torch import save_file

    state = {}
    for key, value in decoder.state_dict().items():
        index, _, rest = key.removeprefix("layers.").partition(".")
        state[f"{int(index) + 1}.{rest}"] = value.contiguous()
    save_file(state, str(path))
    return path


def expected_image(decoder, latents) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(to_image(decoder(latents[:1])[0]))


def test_find_taesd_paths(tmp_path):
    root = tmp_path / "VAE-taesd"
    assert find_taesd(tmp_path, "sd") is None
    root.mkdir()
    (root / "taesd_decoder.pth").write_bytes(b"pickle")
    assert find_taesd(tmp_path, "sd") is None  # pickles only when allowed
    assert find_taesd(tmp_path, "sd", allow_pickle=True) == root / "taesd_decoder.pth"
    (root / "taesdxl_decoder.safetensors").write_bytes(b"x")
    assert find_taesd(tmp_path, "sdxl") == root / "taesdxl_decoder.safetensors"
    (root / "taesd").mkdir()
    (root / "taesd" / "config.json").write_text("{}")
    assert find_taesd(tmp_path, "sd") == root / "taesd"  # a diffusers folder wins
    assert find_taesd(tmp_path, "flux") is None


def test_taesd_diffusers_folder_gives_full_size_previews(tmp_path):
    taesd = small_taesd()
    taesd.save_pretrained(tmp_path / "VAE-taesd" / "taesd", safe_serialization=True)
    previewer = Previewer(tmp_path)
    assert previewer.method("sd") == "taesd" and previewer.method("sdxl") == "approx-cheap"
    latents = torch.randn(2, 4, 8, 6, generator=torch.Generator().manual_seed(3))
    image = previewer.preview(latents, "sd")
    assert image.size == (48, 64)  # 8x the latent
    assert np.array_equal(np.asarray(image), expected_image(taesd.decoder, latents))
    assert previewer.preview(latents, "sdxl").size == (6, 8)  # no taesdxl: Approx cheap


def test_taesd_original_decoder_file(tmp_path):
    decoder = default_decoder()
    (tmp_path / "VAE-taesd").mkdir()
    write_original(decoder, tmp_path / "VAE-taesd" / "taesdxl_decoder.safetensors")
    previewer = Previewer(tmp_path)
    assert previewer.method("sdxl") == "taesd"
    latents = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    image = previewer.preview(latents, "sdxl")
    assert image.size == (32, 32)
    assert np.array_equal(np.asarray(image), expected_image(decoder, latents))


def test_original_keys_are_renumbered():
    assert list(original_to_diffusers({"1.weight": torch.zeros(1), "3.conv.0.bias": torch.zeros(1)})) == [
        "layers.0.weight",
        "layers.2.conv.0.bias",
    ]
    with pytest.raises(EngineError, match="not a TAESD decoder weight"):
        original_to_diffusers({"encoder.0.weight": torch.zeros(1)})


def test_unusable_taesd_falls_back_to_approx_cheap(tmp_path, caplog):
    (tmp_path / "VAE-taesd").mkdir()
    (tmp_path / "VAE-taesd" / "taesd_decoder.safetensors").write_bytes(b"not weights")
    caplog.set_level(logging.WARNING, logger="engine.render.previews")
    previewer = Previewer(tmp_path)
    image = previewer.preview(torch.zeros(1, 4, 8, 8), "sd")
    assert image.size == (8, 8) and previewer.method("sd") == "approx-cheap"
    assert any("fall back to Approx cheap" in r.getMessage() for r in caplog.records)


def test_a_wrong_decoder_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"1.weight": torch.zeros(3, 3)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(EngineError, match="is not a TAESD decoder"):
        load_taesd_decoder(tmp_path / "x.safetensors")


async def test_worker_previews_use_taesd_from_the_models_dir(tmp_path):
    from engine.backends.worker import Step, Worker
    from engine.config import EngineConfig
    from engine.request import GenerationRequest
    from engine.tiny.models import write_tiny_model

    write_tiny_model(tmp_path / "tiny")
    taesd = small_taesd()
    taesd.save_pretrained(tmp_path / "VAE-taesd" / "taesd", safe_serialization=True)
    threads = torch.get_num_threads()
    try:
        config = EngineConfig(models_dir=tmp_path, preview_every=2, threads=1)
        async with Worker(config) as worker:
            handle = worker.submit(GenerationRequest("a cat", steps=4, width=64, height=96, seed=1), owner=1)
            sizes = {}
            async for event in handle:
                if isinstance(event, Step):
                    sizes[event.step] = event.preview.size if event.preview is not None else None
            await handle
    finally:
        torch.set_num_threads(threads)
    assert sizes[1] is None and sizes[3] is None
    assert {sizes[2], sizes[4]} <= {(64, 96), None} and sizes[4] == (64, 96)  # the newest preview is kept


async def test_a_model_whose_vae_scales_by_2_gets_approx_cheap_previews(tmp_path, tiny_vae2):
    """TAESD decodes SD's 8x latents to 8x their size; on a VAE that scales by 2 it would show 4x the image."""
    import shutil

    from engine.backends.worker import Step, Worker
    from engine.config import EngineConfig
    from engine.request import GenerationRequest

    shutil.copytree(tiny_vae2, tmp_path / "tiny-vae2")
    small_taesd().save_pretrained(tmp_path / "VAE-taesd" / "taesd", safe_serialization=True)
    async with Worker(EngineConfig(models_dir=tmp_path, preview_every=1)) as worker:
        handle = worker.submit(GenerationRequest("a cat", steps=2, width=64, height=96, seed=1), owner=1)
        sizes = {e.preview.size async for e in handle if isinstance(e, Step) and e.preview is not None}
        await handle
    assert sizes == {(32, 48)}  # Approx cheap: the latent's size
