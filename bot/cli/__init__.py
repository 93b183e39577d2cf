"""The `sdbot` console script: one entry point, a sub-command per job.

Each area adds its own sub-commands through `add_parsers(sub)` in its own module, so this file stays a
dispatcher. Errors a user can cause end as one line on stderr and exit status 2; `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bot.errors import UserError
from engine.errors import EngineError

# Modules that contribute sub-commands, each with `add_parsers(subparsers)`.
_COMMAND_MODULES = ("bot.cli.render", "bot.cli.xyz", "bot.cli.db", "bot.cli.run", "bot.cli.worker", "bot.cli.classify")


def _user_error_types() -> tuple[type[Exception], ...]:
    types: list[type[Exception]] = [UserError, EngineError]
    try:
        from bot.store.errors import StoreError
    except ImportError:  # the store package may not exist yet
        pass
    else:
        types.append(StoreError)
    return tuple(types)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="sdbot", description="Stable Diffusion Discord bot.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic logs every migration step at INFO; what matters is said by `db upgrade`, `run --check` and the
    # start's own lines, so its steps are shown only with --debug.
    logging.getLogger("alembic").setLevel(logging.NOTSET if args.debug else logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except _user_error_types() as exc:
        if args.debug:
            raise
        print(f"sdbot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
