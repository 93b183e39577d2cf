"""The config file: validated at start, one line naming the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_config
from bot.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid_and_equals_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    example = load_config(EXAMPLE)
    defaults = load_config(None)
    assert example.settings == defaults.settings


def test_embedded_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SDBOT_DATABASE_URL", raising=False)
    config = load_config(None)
    assert config.source is None
    assert config.models_dir == tmp_path / "models"
    assert config.database_url == f"sqlite+aiosqlite:///{tmp_path / 'sdbot.db'}"
    assert config.engine_config().device == "auto"


def test_relative_paths_resolve_beside_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SDBOT_DATABASE_URL", raising=False)
    path = write(tmp_path, '[engine]\nmodels_dir = "m"\n')
    config = load_config(path)
    assert config.engine_config().models_dir == tmp_path / "m"
    assert config.database_url.endswith(str(tmp_path / "sdbot.db"))


def test_environment_overrides_the_database_url(tmp_path, monkeypatch):
    monkeypatch.setenv("SDBOT_DATABASE_URL", "sqlite+aiosqlite:///x.db")
    assert load_config(write(tmp_path, '[database]\nurl = "sqlite+aiosqlite:///y.db"\n')).database_url.endswith("x.db")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[engine]\nmax_stepz = 3\n", "unknown key [engine] max_stepz"),
        ("[enginee]\n", "unknown key enginee"),
        ('[engine]\ndevice = "tpu"\n', "[engine] device must be one of 'auto', 'cpu' or 'cuda', got 'tpu'"),
        ('[engine]\ndtype = "fp8"\n', "[engine] dtype must be one of"),
        ("[engine]\nmax_steps = 0\n", "[engine] max_steps: input should be greater than or equal to 1, got 0"),
        ("[engine]\nbatch_window_ms = -1\n", "[engine] batch_window_ms: input should be greater than or equal to 0"),
        ("[engine]\nbatch_window_ms = 5000\n", "[engine] batch_window_ms: input should be less than or equal to 1000"),
        ("[engine]\nray_batch_wait_s = 0.01\n", "unknown key [engine] ray_batch_wait_s"),
        ('[engine]\nvae_cache_size = "many"\n', "[engine] vae_cache_size: input should be a valid integer"),
        ("[engine\n", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "config.toml"))
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_ray_backend_keys_reach_the_engine(tmp_path):
    """`backend = "ray"` and the ray_* keys become the engine's RayConfig; a bad backend names what is allowed."""
    config = load_config(
        write(
            tmp_path,
            '[engine]\nbackend = "ray"\nray_address = "head:6379"\nray_replicas = 3\n'
            "ray_num_gpus = 0.5\nray_max_retries = 1\n",
        )
    )
    engine = config.engine_config()
    assert engine.backend == "ray"
    assert (engine.ray.address, engine.ray.replicas, engine.ray.num_gpus, engine.ray.max_retries) == (
        "head:6379",
        3,
        0.5,
        1,
    )
    with pytest.raises(ConfigError, match="backend must be one of 'local' or 'ray', got 'k8s'"):
        load_config(write(tmp_path, '[engine]\nbackend = "k8s"\n'))


def test_the_gather_window_reaches_the_engine(tmp_path):
    assert load_config(write(tmp_path, "[engine]\nbatch_window_ms = 0\n")).engine_config().batch_window_ms == 0
    assert load_config(write(tmp_path, "[engine]\nbatch_window_ms = 80\n")).engine_config().batch_window_ms == 80
