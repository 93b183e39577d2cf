"""Choosing the backend (issue 8) and the Ray backend's parts that need no Ray: the default stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.backends import make_worker
from engine.config import EngineConfig
from engine.errors import EngineError
from engine.pipeline import RenderedImage, RenderResult
from engine.process_backend import ProcessWorker
from engine.ray_backend import RAY_MISSING, RayWorker
from engine.wire import decode_result, encode_event
from engine.request import GenerationRequest
from engine.worker import Finished, Queued, Step, Worker

ROOT = Path(__file__).resolve().parents[2]


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
    code = ("import sys; from engine.backends import make_worker; from engine.config import EngineConfig; "
            "make_worker(EngineConfig()); make_worker(EngineConfig(backend='ray')); "
            "import bot.cli; bot.cli.build_parser(); "
            "assert 'ray' not in sys.modules, 'ray was imported'")
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


def test_results_cross_the_wire_as_their_png_bytes():
    """A finished job travels as PNG bytes and arrives with the same pixels, PNG, seeds and request."""
    rng = np.random.default_rng(0)
    images = [RenderedImage(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), 7 + i,
                            f"a cat\nSeed: {7 + i}", {"nsfw": 0.25 * i}) for i in range(2)]
    request = GenerationRequest("a cat", seed=7, batch_size=2, width=64, height=64)
    result = RenderResult(request, images, "tiny", None, 1.5, ("a note",))
    kind, data = encode_event(Finished(job_id="1", result=result))
    assert kind == "finished" and all(isinstance(png, bytes) for png, *_ in data["images"])
    back = decode_result(data)
    assert back.request == request and back.seed == 7 and back.notes == ("a note",) and back.model == "tiny"
    for got, want in zip(back.images, images):
        assert got.png() == want.png() and got.seed == want.seed and got.infotext == want.infotext
        assert got.scores == want.scores  # the image classifier's scores travel with their image
        assert np.array_equal(np.asarray(got.image), np.asarray(want.image))
    assert encode_event(Queued(job_id="1", position=2)) is None  # positions are the bot's
    assert encode_event(Step(job_id="1", step=3, total=20)) == ("step", 3, 20, None)
