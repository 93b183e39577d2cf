"""Imports go one way (docs/architecture.md): the engine knows nothing of the bot, Discord or SQL, and its packages
import downwards; the store nothing of the rest of `bot/` but its leaves; the services no Discord, areas, app, runner
or CLI; the Discord areas no store, no SQL and no engine. Every import counts, inside functions and under
`TYPE_CHECKING` too."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Rule:
    """Modules under `path` import none of `banned` (a name and everything below it), except `allowed`."""

    banned: tuple[str, ...]
    allowed: tuple[str, ...] = ()

    def forbids(self, name: str) -> bool:
        return _under(name, self.banned) and not _under(name, self.allowed)


RULES = {
    "engine": Rule(("bot", "discord", "sqlalchemy", "alembic", "aiosqlite", "asyncpg")),
    # Inside the engine, as each package's docstring says: model files below networks, below rendering, below the
    # backends; the tiny test models above them all.
    "engine/models": Rule(("engine.networks", "engine.render", "engine.backends", "engine.tiny")),
    "engine/networks": Rule(("engine.render", "engine.backends", "engine.tiny")),
    "engine/control": Rule(("engine.render", "engine.backends", "engine.tiny")),
    "engine/render": Rule(("engine.backends", "engine.tiny")),
    # The store's only way into the rest of `bot/` is a leaf that imports nothing of `bot` itself.
    "bot/store": Rule(("bot", "discord", "torch", "diffusers"), allowed=("bot.store", "bot.option_spec")),
    # Services know no Discord: the Discord side plugs in through typed Protocols (JobListener, ReviewNotifier).
    "bot/services": Rule(("discord", "aiohttp", "bot.exts", "bot.app", "bot.runner", "bot.cli")),
    # The areas talk to services only: plain records (bot.services.records), never the store's rows; what they
    # show of the engine comes through the services or the option vocabulary (bot.option_spec).
    # Areas importing each other's private modules: tests/bot/exts/test_areas.py.
    "bot/exts": Rule(("bot.store", "sqlalchemy", "engine")),
    # The option vocabulary is the leaf the store and the areas share.
    "bot/option_spec.py": Rule(("bot",)),
}


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str = "", is_package: bool = False) -> set[str]:
    """Every module `source` imports, anywhere in it; `from x import y` also counts as `x.y` (y may be a module),
    and relative imports are resolved against `module`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base:
                names.add(base)
            names.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names if alias.name != "*")
    return names


def violations(root: Path, rules: dict[str, Rule] = RULES) -> list[str]:
    """'path imports name' for every forbidden import under `root`."""
    found = []
    for place, rule in rules.items():
        target = root / place
        files = [target] if target.is_file() else sorted(target.rglob("*.py"))
        for path in files:
            module = module_name(path, root)
            names = imported_modules(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
            found += [f"{path.relative_to(root)} imports {name}" for name in sorted(names) if rule.forbids(name)]
    return found


@pytest.mark.parametrize("place", sorted(RULES))
def test_imports_go_one_way(place):
    target = ROOT / place
    assert target.is_file() or any(target.rglob("*.py")), f"{place} has no modules"
    bad = violations(ROOT, {place: RULES[place]})
    assert not bad, "\n".join(bad)


# One planted violation per rule, each written the way it would slip in: inside a function, under
# TYPE_CHECKING, or relative.
PLANTED = [
    ("engine/render/x.py", "def f():\n    from bot.config import Config\n", "bot.config"),
    ("engine/x.py", "import discord\n", "discord"),
    (
        "engine/models/x.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sqlalchemy.orm\n",
        "sqlalchemy.orm",
    ),
    ("engine/backends/x.py", "def f():\n    import asyncpg\n", "asyncpg"),
    ("engine/models/x.py", "def f():\n    from engine.tiny.models import write_tiny_model\n", "engine.tiny.models"),
    ("engine/networks/x.py", "from engine.render.pipeline import Engine\n", "engine.render.pipeline"),
    ("engine/render/x.py", "from ..backends import worker\n", "engine.backends"),
    ("bot/store/x.py", "from bot.services.records import JobRecord\n", "bot.services.records"),
    ("bot/store/x.py", "def f():\n    from bot import errors\n", "bot.errors"),
    ("bot/store/x.py", "from ..options import parse_inline\n", "bot.options"),
    ("bot/store/x.py", "import discord.ui\n", "discord.ui"),
    ("bot/services/x.py", "import discord\n", "discord"),
    ("bot/services/x.py", "def f():\n    from bot.app import SdBot\n", "bot.app"),
    ("bot/services/x.py", "from bot.runner import Core\n", "bot.runner"),
    ("bot/services/x.py", "from bot.cli import main\n", "bot.cli"),
    ("bot/services/x.py", "from bot.exts.imagine import recovery_listener\n", "bot.exts.imagine"),
    ("bot/exts/a/x.py", "def f():\n    from engine.samplers import sampler_names\n", "engine.samplers"),
    ("bot/exts/a/x.py", "from engine import errors\n", "engine"),
    ("bot/exts/a/x.py", "from bot.store.jobs import get\n", "bot.store.jobs"),
    ("bot/exts/a/x.py", "from sqlalchemy import select\n", "sqlalchemy"),
    ("bot/option_spec.py", "def f():\n    from bot.errors import UserError\n", "bot.errors"),
]


@pytest.mark.parametrize(("place", "source", "name"), PLANTED)
def test_a_planted_violation_is_reported(tmp_path, place, source, name):
    for folder in ("engine/models", "engine/networks", "engine/render", "bot/store", "bot/services", "bot/exts"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    (tmp_path / "bot/option_spec.py").write_text("from engine.samplers import sampler_names\n")
    assert violations(tmp_path) == []  # the clean tree passes: the violation below is what the checker sees
    path = tmp_path / place
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    assert f"{place} imports {name}" in violations(tmp_path)


def test_allowed_imports_are_not_reported(tmp_path):
    (tmp_path / "bot/store").mkdir(parents=True)
    (tmp_path / "bot/store/x.py").write_text(
        "from bot.store.models import Job\nfrom bot.option_spec import STORED_KINDS\nfrom . import db\n"
        "from engine.request import GenerationRequest\n"
    )
    (tmp_path / "bot/exts/a").mkdir(parents=True)
    (tmp_path / "bot/exts/a/x.py").write_text("from bot.option_spec import sampler_names\nfrom bot.services import x\n")
    assert violations(tmp_path) == []


def test_the_checker_sees_imports():
    source = "import discord.ui\nfrom sqlalchemy import select\nfrom . import y\nfrom ..z import w\n"
    assert imported_modules(source, "bot.store.x") == {
        "discord.ui",
        "sqlalchemy",
        "sqlalchemy.select",
        "bot.store",
        "bot.store.y",
        "bot.z",
        "bot.z.w",
    }
