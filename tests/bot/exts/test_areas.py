"""The command areas under bot/exts/ stay apart: none imports another's private modules (what they share lives in
bot/exts/common/). That they import no engine (the models folder is scanned by the catalog service, off the event
loop) is one of tests/test_layers.py's rules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EXTS = Path(__file__).resolve().parents[3] / "bot" / "exts"
AREAS = sorted(p.name for p in EXTS.iterdir() if p.is_dir() and (p / "__init__.py").exists())


def imports(path: Path) -> list[str]:
    """Every module an import names, `from a import b` read as both `a` and `a.b` (b may be a module)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return names


def foreign_private(area: str, name: str) -> bool:
    parts = name.split(".")
    return (
        len(parts) >= 4
        and parts[:2] == ["bot", "exts"]
        and parts[2] != area
        and parts[3].startswith("_")
        and parts[3] != "__init__"
    )


@pytest.mark.parametrize("area", AREAS)
def test_an_area_imports_no_other_areas_private_modules(area):
    bad = [
        f"{path.relative_to(EXTS)} imports {name}"
        for path in sorted((EXTS / area).rglob("*.py"))
        for name in imports(path)
        if foreign_private(area, name)
    ]
    assert not bad, "\n".join(bad)


def test_the_checks_see_what_they_look_for(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text(
        "from bot.exts.imagine import _format\nfrom bot.exts.imagine._cog import x\n"
        "from bot.exts.common.formatting import clip\n"
    )
    names = imports(sample)
    assert [n for n in names if foreign_private("info", n)] == [
        "bot.exts.imagine._format",
        "bot.exts.imagine._cog",
        "bot.exts.imagine._cog.x",
    ]
    assert not [n for n in names if foreign_private("imagine", n)]
    assert "bot.exts.common.formatting.clip" in names and "common" in AREAS
