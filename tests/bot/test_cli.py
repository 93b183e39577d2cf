"""The `sdbot` command line: exact interface, one-line errors, no tracebacks."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from engine.infotext import read_png_infotext


@pytest.fixture
def config(tmp_path: Path, models_dir: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[engine]\nmodels_dir = "{models_dir}"\n')
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_render_writes_pngs_and_prints_seeds(capsys, tmp_path, config):
    out = tmp_path / "out" / "cat.png"
    code, stdout, _ = run(
        capsys,
        "render",
        "a photo of a cat",
        "--negative",
        "blurry",
        "--steps",
        "3",
        "--cfg",
        "6",
        "--sampler",
        "Euler a",
        "--seed",
        "11",
        "--size",
        "64x64",
        "--clip-skip",
        "2",
        "--vae",
        "none",
        "--batch",
        "2",
        "--out",
        str(out),
        "--config",
        str(config),
    )
    assert code == 0
    files = [tmp_path / "out" / "cat-1.png", tmp_path / "out" / "cat-2.png"]
    assert stdout.splitlines() == [f"{files[0]}  seed 11", f"{files[1]}  seed 12"]
    assert "Clip skip: 2" in read_png_infotext(files[1].read_bytes())


def test_infotext_prints_json(capsys, tmp_path, config):
    out = tmp_path / "one.png"
    run(
        capsys,
        "render",
        "cat, (dog:1.2)",
        "--steps",
        "2",
        "--size",
        "64x64",
        "--seed",
        "5",
        "--out",
        str(out),
        "--config",
        str(config),
    )
    code, stdout, _ = run(capsys, "infotext", str(out))
    data = json.loads(stdout)
    assert code == 0 and data["Prompt"] == "cat, (dog:1.2)" and data["Seed"] == "5"
    assert "Negative prompt" not in data
    text = tmp_path / "info.txt"
    text.write_text('x\nNegative prompt: y\nSteps: 20, Sampler: DPM++ 2M Karras, Lora hashes: "a: 1, b: 2"')
    code, stdout, _ = run(capsys, "infotext", str(text))
    assert json.loads(stdout) == {
        "Prompt": "x",
        "Negative prompt": "y",
        "Steps": "20",
        "Sampler": "DPM++ 2M Karras",
        "Lora hashes": "a: 1, b: 2",
    }


def test_models_lists_checkpoints_vaes_and_samplers(capsys, config):
    code, stdout, _ = run(capsys, "models", "--config", str(config))
    assert code == 0
    assert "tiny-sd15" in stdout and "VAEs: auto, none" in stdout and "DPM++ 2M SDE" in stdout


def test_tiny_model_writes_a_diffusers_folder(capsys, tmp_path):
    code, stdout, _ = run(capsys, "tiny-model", str(tmp_path / "t"), "--family", "sd15")
    assert code == 0 and (tmp_path / "t" / "model_index.json").exists()
    code, _, err = run(capsys, "tiny-model", str(tmp_path / "t"))
    assert code == 2 and "not empty" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["render", "cat", "--size", "65x64"], "width must be a multiple of 8"),
        (["render", "cat", "--size", "big"], "size must look like WIDTHxHEIGHT"),
        (["render", "cat", "--sampler", "Nope"], "unknown sampler 'Nope'; valid samplers:"),
        (["render", "cat", "--steps", "0"], "steps must be from 1 to 150"),
        (["render", "cat", "--out", "x.jpg"], "--out must name a .png file"),
        (["render", "cat", "--model", "missing", "--steps", "1"], "unknown model 'missing'; available models:"),
        (["render", "cat", "--vae", "missing", "--steps", "1", "--size", "64x64"], "unknown VAE 'missing'"),
        (["infotext", "/nonexistent.png"], "cannot read /nonexistent.png"),
    ],
)
def test_user_errors_are_one_line_exit_2(capsys, config, args, message):
    code, _, err = run(capsys, *args, *(["--config", str(config)] if args[0] == "render" else []))
    assert code == 2
    assert err.startswith("sdbot: error: ") and message in err
    assert err.count("\n") == 1


def test_bad_config_is_one_line_from_a_real_process(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[engine]\nwhat = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "models", "--config", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == f"sdbot: error: {bad}: unknown key [engine] what; allowed keys are "
        "documented in config.example.toml"
    )
    assert "Traceback" not in proc.stderr


def test_run_without_a_token_says_how_to_set_it(capsys, config, monkeypatch):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    code, _, err = run(capsys, "run", "--config", str(config))
    assert code == 2 and err.count("\n") == 1
    assert "set the DISCORD_TOKEN environment variable" in err


def test_run_check_validates_config_database_and_models(capsys, tmp_path, config, monkeypatch):
    from bot.store import migrate

    db = tmp_path / "check.db"
    monkeypatch.setenv("SDBOT_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    code, out, _ = run(capsys, "run", "--check", "--config", str(config))
    assert code == 0 and not db.exists()  # a check writes nothing
    pending = len(migrate.pending(None))
    assert out.splitlines() == [
        f"config: ok ({config})",
        f"database: not created yet: {pending} migrations pending (sdbot db upgrade applies them)",
        "models: default tiny-sd15, 1 checkpoints, 0 VAEs",
        "engine: local, in a child process, on cpu (float32)",
    ]
    asyncio.run(_migrate_to(f"sqlite+aiosqlite:///{db}", "0002"))
    code, out, _ = run(capsys, "run", "--check", "--config", str(config))
    assert (
        code == 0
        and out.splitlines()[1] == f"database: {pending - 2} migrations pending (sdbot db upgrade applies them)"
    )
    assert asyncio.run(_revision(f"sqlite+aiosqlite:///{db}")) == "0002"  # not upgraded by the check
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "run", "--check", "--config", str(config))
    assert code == 0 and out.splitlines()[1] == "database: up to date"
    monkeypatch.setenv("SDBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}")
    code, _, err = run(capsys, "run", "--check", "--config", str(config))
    assert code == 2 and err.startswith("sdbot: error: ") and err.count("\n") == 1


async def _migrate_to(url: str, revision: str) -> None:
    from bot.store import migrate
    from bot.store.db import make_engine

    db = make_engine(url)
    try:
        await migrate.upgrade(db, revision)
    finally:
        await db.dispose()


async def _revision(url: str) -> str | None:
    from bot.store import migrate
    from bot.store.db import make_engine

    db = make_engine(url)
    try:
        return await migrate.current(db)
    finally:
        await db.dispose()


def test_run_check_in_an_empty_folder_creates_nothing_and_prints_one_line_per_part(tmp_path):
    from bot.store import migrate

    env = {k: v for k, v in os.environ.items() if k not in ("SDBOT_DATABASE_URL", "DISCORD_TOKEN")}
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "run", "--check"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert list(tmp_path.iterdir()) == []  # no sdbot.db, no journal, no models/ with a demo model
    assert proc.stdout.splitlines() == [
        "config: ok (embedded defaults)",
        f"database: not created yet: {len(migrate.pending(None))} migrations pending (sdbot db upgrade applies them)",
        f"models: no checkpoint in {tmp_path / 'models'} (the tiny demo model is written there at the first start)",
        "engine: local, in a child process, on cpu (float32)",
    ]
    assert proc.stderr == ""  # no Alembic INFO lines, nor any other log


def test_run_start_shows_alembic_steps_only_with_debug(tmp_path, models_dir):
    """`sdbot run` migrates at start; Alembic's INFO lines about it stay out of the log unless --debug."""
    from engine.tiny.classifier import write_tiny_classifier

    folder = write_tiny_classifier(tmp_path / "clf")
    (folder / "config.json").write_text("{")  # the start stops at the classifier, after the migration
    config = tmp_path / "config.toml"
    config.write_text(
        f'[engine]\nmodels_dir = "{models_dir}"\nisolation = "thread"\n'
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "run.db"}"\n'
        f'[moderation]\nimage_classifier = "{folder}"\n'
    )
    env = {**{k: v for k, v in os.environ.items() if k != "SDBOT_DATABASE_URL"}, "DISCORD_TOKEN": "unused"}
    quiet = subprocess.run(
        [sys.executable, "-m", "bot", "run", "--config", str(config)], env=env, capture_output=True, text=True
    )
    assert quiet.returncode == 2 and quiet.stderr.splitlines()[-1].startswith("sdbot: error: the image classifier")
    assert " alembic." not in quiet.stderr and "Running upgrade" not in quiet.stderr
    (tmp_path / "run.db").unlink()
    debug = subprocess.run(
        [sys.executable, "-m", "bot", "--debug", "run", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert "INFO alembic.runtime.migration: Running upgrade  -> 0001" in debug.stderr


# --- the image classifier ------------------------------------------------------------------------------------------


def _with_classifier(config: Path, folder: Path, **extra) -> Path:
    lines = [f'image_classifier = "{folder}"'] + [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    config.write_text(config.read_text() + "[moderation]\n" + "\n".join(lines) + "\n")
    return config


def test_classify_prints_each_images_scores(capsys, tmp_path, config):
    from PIL import Image

    from engine.tiny.classifier import write_tiny_classifier

    _with_classifier(config, write_tiny_classifier(tmp_path / "clf", nsfw_logit=1.0), flag_above=0.6, block_above=0.8)
    pictures = []
    for name in ("a.png", "b.jpg"):
        Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / name)
        pictures.append(str(tmp_path / name))
    code, out, _ = run(capsys, "classify", *pictures, "--config", str(config))
    assert code == 0
    header, *lines = out.splitlines()
    assert header == f"# {tmp_path / 'clf'}: unsafe = nsfw; flag above 0.60, block above 0.80"
    assert lines == [f"{p}: nsfw 0.731 · normal 0.269 -> unsafe 0.731: hold" for p in pictures]
    code, _, err = run(capsys, "classify", str(tmp_path / "nope.png"), "--config", str(config))
    assert code == 2 and err == f"sdbot: error: {tmp_path / 'nope.png'}: no such file\n"
    code, _, err = run(capsys, "classify", pictures[0], "--config", str(config.with_name("none.toml")))
    assert code == 2 and "config file not found" in err


def test_classify_without_a_classifier_says_how_to_set_one(capsys, tmp_path, config):
    code, _, err = run(capsys, "classify", str(tmp_path / "x.png"), "--config", str(config))
    assert code == 2 and err.count("\n") == 1 and "set [moderation] image_classifier" in err


def test_run_check_stops_with_one_line_on_a_missing_or_broken_classifier(capsys, tmp_path, config, monkeypatch):
    from engine.tiny.classifier import write_tiny_classifier

    monkeypatch.setenv("SDBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'check.db'}")
    folder = write_tiny_classifier(tmp_path / "clf")
    original = config.read_text()
    code, out, _ = run(capsys, "run", "--check", "--config", str(_with_classifier(config, folder)))
    assert code == 0 and f"image classifier: ok: {folder} (labels normal, nsfw; unsafe: nsfw)" in out
    (folder / "model.safetensors").write_bytes(b"broken")
    code, _, err = run(capsys, "run", "--check", "--config", str(config))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"sdbot: error: the image classifier {folder} could not be loaded: ")
    config.write_text(original)
    code, _, err = run(
        capsys,
        "run",
        "--check",
        "--config",
        str(_with_classifier(config, write_tiny_classifier(tmp_path / "c2"), unsafe_labels=["porn"])),
    )
    assert code == 2 and err.count("\n") == 1 and "unsafe_labels names porn" in err


def test_run_stops_at_start_with_one_line_on_a_broken_classifier(capsys, tmp_path, config, monkeypatch):
    from engine.tiny.classifier import write_tiny_classifier

    monkeypatch.setenv("SDBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'run.db'}")
    monkeypatch.setenv("DISCORD_TOKEN", "not-used: the start stops before Discord")
    folder = write_tiny_classifier(tmp_path / "clf")
    (folder / "config.json").write_text('{"architectures": ["ViTForImageClassification"], "model_type": "vit"')
    code, _, err = run(capsys, "run", "--config", str(_with_classifier(config, folder)))
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"sdbot: error: the image classifier {folder} has an unreadable config.json (")
    assert err.count("\n") == 1
