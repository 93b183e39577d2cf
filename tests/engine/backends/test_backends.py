"""Choosing the backend; the Ray backend without Ray: the default stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from engine.backends.base import Backend
from engine.backends.factory import make_worker
from engine.backends.process import ProcessWorker
from engine.backends.ray_backend import RAY_MISSING, RayWorker
from engine.backends.worker import Worker
from engine.config import EngineConfig
from engine.errors import EngineError
from engine.request import GenerationRequest

ROOT = Path(__file__).resolve().parents[3]


def test_make_worker_picks_the_backend():
    """`backend = "local"` gives the engine in a child process (default) or the in-process worker (`isolation =
    "thread"`), `"ray"` the Ray worker; anything else is refused."""
    assert type(make_worker(EngineConfig(backend="local", threads=0))) is ProcessWorker
    assert type(make_worker(EngineConfig(backend="local", isolation="thread", threads=0))) is Worker
    with pytest.raises(ValueError, match="unknown engine isolation 'vm'"):
        make_worker(EngineConfig(isolation="vm"))
    assert type(make_worker(EngineConfig(backend="ray"))) is RayWorker
    with pytest.raises(ValueError, match="unknown engine backend 'k8s'"):
        make_worker(EngineConfig(backend="k8s"))


def test_the_local_backend_never_imports_ray():
    """Choosing and building either worker imports no Ray; only starting the Ray worker does."""
    code = (
        "import sys; from engine.backends.factory import make_worker; from engine.config import EngineConfig; "
        "make_worker(EngineConfig()); make_worker(EngineConfig(backend='ray')); "
        "import bot.cli; bot.cli.build_parser(); "
        "assert 'ray' not in sys.modules, 'ray was imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


async def test_without_ray_the_ray_backend_says_how_to_install_it(monkeypatch):
    """No Ray installed: `ready()` fails with the install command, and so does every later submit."""
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    worker = RayWorker(EngineConfig(backend="ray"))
    queued = worker.submit(GenerationRequest("a cat"), owner=1)
    with pytest.raises(EngineError, match=r"pip install 'sdbot\[ray\]'"):
        await worker.ready()
    with pytest.raises(EngineError, match=r"pip install 'sdbot\[ray\]'"):
        await queued
    with pytest.raises(EngineError) as err:
        worker.submit(GenerationRequest("a cat"), owner=1)
    assert str(err.value) == RAY_MISSING
    assert await worker.close() == []


@pytest.mark.parametrize(
    "settings",
    [dict(backend="local", isolation="thread"), dict(backend="local"), dict(backend="ray")],
    ids=["thread", "process", "ray"],
)
def test_every_backend_offers_the_whole_protocol(settings):
    """`make_worker` returns a `Backend`: every method with the protocol's parameters, and `in_process` saying
    whether `call` reaches the engine (only the thread worker's does)."""
    worker = make_worker(EngineConfig(threads=0, **settings))
    for name, member in vars(Backend).items():
        if name.startswith("_") or not callable(member):
            continue
        mine = getattr(worker, name)
        assert list(inspect.signature(mine).parameters) == list(inspect.signature(member).parameters)[1:], name
    assert worker.in_process is (settings.get("isolation") == "thread")
    assert isinstance(worker.config, EngineConfig)
