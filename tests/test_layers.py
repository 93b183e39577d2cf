"""Imports go one way: the engine knows nothing of Discord or SQL, the store nothing of Discord or the services, the
services nothing of Discord, the Discord areas nothing of the store."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RULES = {
    "engine": ("discord", "sqlalchemy", "alembic", "aiosqlite", "bot"),
    "bot/store": ("discord", "torch", "diffusers", "bot.exts", "bot.services"),
    # Services know no Discord: the Discord side plugs in through typed Protocols (JobListener, ReviewNotifier).
    # Areas importing each other's private modules: tests/bot/exts/test_areas.py.
    "bot/services": ("discord", "aiohttp", "bot.exts", "bot.app"),
    # The areas talk to services only: they get plain records (bot.services.records), never the store's rows.
    "bot/exts": ("bot.store", "sqlalchemy"),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(RULES))
def test_forbidden_imports(package):
    files = sorted((ROOT / package).rglob("*.py"))
    if package == "engine":
        assert files, "engine/ has no modules"
    bad = []
    for path in files:
        for name in imported_modules(path):
            if any(name == banned or name.startswith(banned + ".") for banned in RULES[package]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_imports(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("import discord.ui\nfrom sqlalchemy import select\nfrom . import y\n")
    assert imported_modules(sample) == {"discord.ui", "sqlalchemy"}
