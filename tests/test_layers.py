"""Imports go one way: the engine knows nothing of Discord or SQL, the store nothing of Discord."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RULES = {
    "engine": ("discord", "sqlalchemy", "alembic", "aiosqlite", "bot"),
    "bot/store": ("discord", "torch", "diffusers", "bot.exts", "bot.services"),
    "bot/services": ("discord", "aiohttp", "bot.exts", "bot.app"),
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports; `from package import name` counts `package.name` as well (it may be one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names if alias.name.startswith("_"))
    return names


def cross_area_private_imports(exts: Path, root: Path = ROOT) -> list[str]:
    """Imports by one area of `bot/exts/` of another area's private modules (`bot.exts.<other>._name`)."""
    bad = []
    for path in sorted(exts.rglob("*.py")):
        parts = path.relative_to(exts).parts
        if len(parts) < 2:
            continue
        area = parts[0]
        for name in sorted(imported_modules(path)):
            pieces = name.split(".")
            if pieces[:2] == ["bot", "exts"] and len(pieces) > 3 and pieces[2] != area and \
                    pieces[3].startswith("_"):
                bad.append(f"{path.relative_to(root)} imports {name}")
    return bad


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
    sample.write_text("import discord.ui\nfrom sqlalchemy import select\nfrom . import y\nfrom bot.exts.a import _b\n")
    assert imported_modules(sample) == {"discord.ui", "sqlalchemy", "bot.exts.a", "bot.exts.a._b"}


def test_areas_do_not_import_each_others_private_modules():
    bad = cross_area_private_imports(ROOT / "bot" / "exts")
    if bad:
        pytest.xfail("i12c (issue 12, item 3) moves what the areas share to public modules:\n" + "\n".join(bad))


def test_the_area_checker_sees_private_imports(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.py").write_text("from bot.exts.b._y import z\nfrom bot.exts.b import _w\n"
                                         "from bot.exts.a._v import u\nfrom bot.exts.b import public\n")
    assert cross_area_private_imports(tmp_path, tmp_path) == ["a/x.py imports bot.exts.b._w",
                                                              "a/x.py imports bot.exts.b._y"]
