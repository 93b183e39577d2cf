"""`sdbot render` with LoRA tags and embeddings, `sdbot models` listing them: folders found through --config."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from engine.infotext import parse_infotext, read_png_infotext
from engine.tiny.models import build_tiny_pipeline
from engine.tiny.networks import write_embedding, write_network
from tests.bot.test_cli import run


@pytest.fixture
def config(tmp_path: Path, models_dir: Path) -> Path:
    pipe = build_tiny_pipeline()
    write_network(
        pipe,
        models_dir / "Lora" / "styles" / "ink.safetensors",
        seed=1,
        metadata={"ss_base_model_version": "sd_v1", "ss_tag_frequency": json.dumps({"a": {"inked": 3}})},
    )
    write_network(pipe, models_dir / "LyCORIS" / "hada.safetensors", "loha", seed=2)
    write_embedding(models_dir / "embeddings" / "EasyNeg.safetensors", torch.randn(2, 768))
    path = tmp_path / "config.toml"
    path.write_text(f'[engine]\nmodels_dir = "{models_dir}"\n')
    return path


def test_render_accepts_lora_tags_and_writes_their_hashes(capsys, tmp_path, config):
    out = tmp_path / "cat.png"
    code, stdout, _ = run(
        capsys,
        "render",
        "a cat <lora:ink:0.8> <lyco:hada:0.5:0.2>",
        "--steps",
        "2",
        "--size",
        "64x64",
        "--seed",
        "1",
        "--out",
        str(out),
        "--config",
        str(config),
    )
    assert code == 0 and "seed 1" in stdout
    info = parse_infotext(read_png_infotext(out))
    assert info.prompt == "a cat <lora:ink:0.8> <lyco:hada:0.5:0.2>"
    assert [name for name, _ in (p.split(": ") for p in info.params["Lora hashes"].split(", "))] == ["hada", "ink"]


def test_render_errors_are_one_line(capsys, config):
    code, _, err = run(
        capsys, "render", "a cat <lora:inc:1>", "--steps", "1", "--size", "64x64", "--config", str(config)
    )
    assert code == 2 and err == "sdbot: error: unknown LoRA 'inc'; available: ink, hada\n"
    code, _, err = run(capsys, "render", "a cat <lora:ink:x>", "--config", str(config))
    assert code == 2 and "the TE multiplier must be a number" in err and err.count("\n") == 1


def test_models_lists_loras_with_family_and_triggers_and_embeddings(capsys, config):
    code, stdout, _ = run(capsys, "models", "--config", str(config))
    assert code == 0
    assert "  ink  [SD 1.x/2.x]  triggers: inked  (" in stdout
    assert "  hada  [SD 1.x/2.x]  (" in stdout
    assert "  EasyNeg  [SD 1.x]  (" in stdout


# --- refused files (pickles while allow_pickle is off) ---------------------------------------------------------

REFUSAL = "pickle format; set [engine] allow_pickle = true to allow it"


@pytest.fixture
def refused(config: Path, models_dir: Path) -> Path:
    torch.save({"emb": torch.zeros(1, 32)}, models_dir / "embeddings" / "easynegative.pt")
    torch.save({"x": torch.zeros(1)}, models_dir / "Lora" / "old.pt")
    return config


def test_models_names_each_refused_file_and_why_and_lists_it_nowhere_else(capsys, refused):
    code, stdout, _ = run(capsys, "models", "--config", str(refused))
    assert code == 0
    lines = stdout.splitlines()
    assert lines[-2:] == [f"refused: old.pt ({REFUSAL})", f"refused: easynegative.pt ({REFUSAL})"]
    assert not [line for line in lines[:-2] if "easynegative" in line or re.search(r"\bold\b", line)]


def test_render_warns_in_one_line_about_a_refused_embedding_in_the_prompt(capsys, tmp_path, refused):
    args = ("--steps", "1", "--size", "64x64", "--out", str(tmp_path / "x.png"), "--config", str(refused))
    code, stdout, err = run(capsys, "render", "a cat, (EasyNegative:1.2)", *args)
    assert code == 0 and "seed" in stdout
    assert err == (
        "sdbot: warning: embedding easynegative was not used (its name stayed plain words): "
        f"easynegative.pt is refused ({REFUSAL})\n"
    )
    code, _, err = run(capsys, "render", "a cat <lora:old:1>", *args)
    assert code == 2 and err == f"sdbot: error: old.pt is refused ({REFUSAL})\n"
