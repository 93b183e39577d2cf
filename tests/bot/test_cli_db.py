"""`sdbot db upgrade | check | url`, run in-process through `bot.cli.main`: exit codes and one-line errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import load_config
from bot.errors import ConfigError
from bot.store import migrate


@pytest.fixture(autouse=True)
def _no_env_url(monkeypatch):
    monkeypatch.delenv("SDBOT_DATABASE_URL", raising=False)


def _config(tmp_path: Path, url: str | None = None) -> str:
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "{url}"\n' if url is not None else "")
    return str(path)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_url_defaults_to_sdbot_db_beside_the_config(tmp_path, capsys):
    assert main(["db", "url", "--config", _config(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"sqlite+aiosqlite:///{tmp_path / 'sdbot.db'}"


def test_url_hides_the_password_and_the_environment_wins(tmp_path, capsys, monkeypatch):
    config = _config(tmp_path, "sqlite+aiosqlite:///from-file.db")
    monkeypatch.setenv("SDBOT_DATABASE_URL", "postgresql+asyncpg://bot:hunter2@db.example/sdbot")
    assert main(["db", "url", "--config", config]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "postgresql+asyncpg://bot:***@db.example/sdbot" and "hunter2" not in out


def test_upgrade_then_check(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["db", "upgrade", "--config", config]) == 0
    assert f"upgraded from an empty database to revision {migrate.head()}" in capsys.readouterr().out
    assert main(["db", "upgrade", "--config", config]) == 0
    assert f"already at revision {migrate.head()}" in capsys.readouterr().out
    assert main(["db", "check", "--config", config]) == 0
    assert "models and migrations match" in capsys.readouterr().out
    assert (tmp_path / "sdbot.db").is_file()


def test_check_exits_1_when_they_differ(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["db", "upgrade", "--config", config]) == 0
    with sqlite3.connect(tmp_path / "sdbot.db") as conn:
        conn.execute("CREATE TABLE stray (id INTEGER PRIMARY KEY)")
    capsys.readouterr()
    assert main(["db", "check", "--config", config]) == 1
    assert _one_error_line(capsys) == "sdbot: db check: models and migrations differ (1): remove table stray"


def test_check_exits_1_before_upgrade(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["db", "check", "--config", config]) == 1
    assert "does not exist; run `sdbot db upgrade`" in _one_error_line(capsys)
    assert not (tmp_path / "sdbot.db").exists()  # checking created nothing
    sqlite3.connect(tmp_path / "sdbot.db").close()  # an empty file: not at head
    assert main(["db", "check", "--config", config]) == 1
    assert f"the database is at revision (none), the migrations' head is {migrate.head()}" in _one_error_line(capsys)


@pytest.mark.parametrize("action", ["upgrade", "check", "url"])
def test_url_to_a_missing_directory_is_one_line(tmp_path, capsys, action):
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    code = main(["db", action, "--config", _config(tmp_path, f"sqlite+aiosqlite:///{missing}")])
    if action == "url":
        assert code == 0  # printing the URL does not open it
        return
    assert code == 2
    assert _one_error_line(capsys) == (
        f"sdbot: error: cannot open database sqlite+aiosqlite:///{missing}: directory {missing.parent} does not exist"
    )


def test_malformed_url_is_one_line(tmp_path, capsys):
    assert main(["db", "url", "--config", _config(tmp_path, "not a url")]) == 2
    assert _one_error_line(capsys).startswith("sdbot: error: database URL 'not a url' is not valid")


def test_unreachable_server_is_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("asyncpg")
    monkeypatch.setenv("SDBOT_DATABASE_URL", "postgresql+asyncpg://bot:hunter2@127.0.0.1:1/sdbot")
    assert main(["db", "upgrade", "--config", _config(tmp_path)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("sdbot: error: cannot open database postgresql+asyncpg://bot:***@127.0.0.1:1/sdbot: ")
    assert "hunter2" not in line


def test_missing_config_file_is_one_line(tmp_path, capsys):
    assert main(["db", "upgrade", "--config", str(tmp_path / "nope.toml")]) == 2
    assert _one_error_line(capsys).endswith("config file not found")


def test_preset_limit_setting(tmp_path):
    """`[database] max_presets_per_user`: 50 by default, 1 to 1000."""
    path = tmp_path / "c.toml"
    path.write_text("")
    assert load_config(path).settings.database.max_presets_per_user == 50
    path.write_text("[database]\nmax_presets_per_user = 7\n")
    assert load_config(path).settings.database.max_presets_per_user == 7
    path.write_text("[database]\nmax_presets_per_user = 0\n")
    with pytest.raises(ConfigError, match="max_presets_per_user"):
        load_config(path)


def test_head_matches_the_cli(tmp_path, capsys):
    assert main(["db", "upgrade", "--config", _config(tmp_path)]) == 0
    assert f"revision {migrate.head()}" in capsys.readouterr().out
