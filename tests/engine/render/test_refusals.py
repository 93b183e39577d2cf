"""Refused files (pickles while allow_pickle is off): listed with the reason, named in the error of a job that uses
one, and noted on a render that leaves one out (an embedding's name in the prompt, a sidecar VAE for `auto`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from engine.config import EngineConfig
from engine.errors import EngineError
from engine.models.state_dict import loadable
from engine.render.pipeline import Engine
from engine.render.refusals import refused_files
from engine.request import GenerationRequest
from engine.tiny.networks import write_embedding

REASON = "pickle format; set [engine] allow_pickle = true to allow it"


def req(prompt: str, **kw) -> GenerationRequest:
    return GenerationRequest(**{**dict(prompt=prompt, seed=3, width=64, height=64, steps=1, sampler="Euler"), **kw})


def pickle_file(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_sd15: Path) -> Path:
    """The tiny checkpoint with one pickle of each kind beside it, and a usable embedding."""
    root = tmp_path_factory.mktemp("refused")
    shutil.copytree(tiny_sd15, root / "tiny-sd15")
    text_width = 32
    pickle_file(root / "embeddings" / "EasyNegative.pt", {"emb": torch.zeros(1, text_width)})
    write_embedding(root / "embeddings" / "Usable.safetensors", torch.zeros(1, text_width))
    pickle_file(root / "Lora" / "old-style.pt", {"x": torch.zeros(1)})
    pickle_file(root / "VAE" / "old-vae.ckpt", {"x": torch.zeros(1)})
    pickle_file(root / "ESRGAN" / "4x-old.pth", {"x": torch.zeros(1)})
    pickle_file(root / "legacy.ckpt", {"state_dict": {}})
    return root


@pytest.fixture(scope="module")
def engine(models: Path) -> Engine:
    return Engine(EngineConfig(models_dir=models, default_model="tiny-sd15"))


def test_every_refused_file_is_listed_once_with_the_reason(models):
    refused = refused_files(EngineConfig(models_dir=models))
    assert sorted((f.kind, f.name) for f in refused) == [
        ("LoRA", "old-style"),
        ("VAE", "old-vae.ckpt"),
        ("checkpoint", "legacy"),
        ("embedding", "EasyNegative"),
        ("upscaler", "4x-old"),
    ]
    assert next(f for f in refused if f.kind == "embedding").line == f"refused: EasyNegative.pt ({REASON})"
    assert refused_files(EngineConfig(models_dir=models, allow_pickle=True)) == []


def test_listings_leave_refused_files_out(models):
    from engine.networks.library import NetworkLibrary
    from engine.render.upscalers import UpscalerLibrary

    networks = NetworkLibrary(EngineConfig(models_dir=models))
    assert [f.name for f in loadable(networks.embeddings(), False)] == ["Usable"]
    assert [f.name for f in loadable(networks.embeddings(), True)] == ["EasyNegative", "Usable"]
    assert "4x-old" not in UpscalerLibrary(models).names()
    assert "4x-old" in UpscalerLibrary(models, allow_pickle=True).names()


@pytest.mark.parametrize(
    "prompt, negative",
    [("a cat, EasyNegative", ""), ("a cat", "(easynegative:1.2), blurry"), ("a cat [EasyNegative]", "")],
)
def test_a_refused_embeddings_name_renders_with_one_note(engine, prompt, negative):
    result = engine.render(req(prompt, negative_prompt=negative))
    assert result.notes == (
        f"embedding EasyNegative was not used (its name stayed plain words): EasyNegative.pt is refused ({REASON})",
    )


@pytest.mark.parametrize("prompt", ["a cat", "a cat, EasyNegatives", "a cat, Usable"])
def test_no_note_when_no_refused_name_is_written(engine, prompt):
    assert engine.render(req(prompt)).notes == ()


def test_each_job_of_a_batched_call_gets_its_own_notes(engine):
    plain, refused = engine.render_batch([req("a cat"), req("a cat EasyNegative")])
    assert plain.notes == () and len(refused.notes) == 1


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(prompt="a cat <lora:old-style:0.8>"), f"old-style.pt is refused ({REASON})"),
        (dict(vae="old-vae.ckpt"), f"old-vae.ckpt is refused ({REASON})"),
        (dict(hires=2.0, hires_upscaler="4x-old"), f"4x-old.pth is refused ({REASON})"),
        (dict(model="legacy"), f"legacy.ckpt is refused ({REASON})"),
    ],
)
def test_a_job_that_names_a_refused_file_fails_saying_why(engine, kw, message):
    with pytest.raises(EngineError) as refused:
        engine.render(req(**{"prompt": "a cat", **kw}))
    assert str(refused.value) == message


def test_vae_auto_notes_a_refused_sidecar(tmp_path, tiny_sd15):
    shutil.copytree(tiny_sd15, tmp_path / "tiny-sd15")
    pickle_file(tmp_path / "tiny-sd15.vae.pt", {"x": torch.zeros(1)})
    result = Engine(EngineConfig(models_dir=tmp_path)).render(req("a cat"))
    assert result.vae is None
    assert result.notes == (f"VAE auto used the checkpoint's own VAE: tiny-sd15.vae.pt is refused ({REASON})",)
