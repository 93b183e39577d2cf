"""Engine faults in the running bot: an exception, out of memory, a NaN decode, corrupt model files.

Each fails (with a message to its user) or recovers only the job concerned; the jobs around it are posted
once and the queue keeps moving. Faults are injected through the worker's `on_render` (a `FaultSwitch` given
to its constructor, called in the worker thread before each render) and, for the NaN, by making the VAE decode
return NaN for one prompt.
"""

from __future__ import annotations

import os
import shutil
import threading

import pytest_asyncio
import torch

from engine.backends.worker import OOM_MESSAGE
from tests.bot.harness import running_bot
from tests.reliability._helpers import DISCORD, ENGINE, FAST, assert_delivered_once, marker_of, recovered, wait_until

NAN = "the image came out as NaN (not a number) even in 32-bit; try another VAE"


@pytest_asyncio.fixture
async def faulty(tmp_path, tiny_sd15, monkeypatch):
    """Faults keyed by prompt: 'boom' raises, 'oom-once' runs out of memory on its first try, 'oom-always'
    on every try, 'nan-decode' decodes to NaN."""
    import engine.render.pipeline as pipeline

    poisoned = threading.local()
    decode = pipeline._vae_decode
    oomed: set[str] = set()

    def inject(attempt) -> None:
        jobs = dict(zip(attempt.job_ids, (r.prompt for r in attempt.requests)))
        poisoned.nan = any("nan-decode" in p for p in jobs.values())
        if any("boom" in p for p in jobs.values()):
            raise RuntimeError("injected fault")
        once = {j for j, p in jobs.items() if "oom-once" in p} - oomed
        if once or any("oom-always" in p for p in jobs.values()):
            oomed.update(once)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def nan_decode(vae, latents, exact=True):
        out = decode(vae, latents, exact)
        return out * float("nan") if getattr(poisoned, "nan", False) else out

    monkeypatch.setattr(pipeline, "_vae_decode", nan_decode)
    async with running_bot(tmp_path, tiny_sd15, engine=ENGINE, discord=DISCORD, faults=True) as running:
        await recovered(running)
        running.faults.inject = inject
        yield running


async def test_each_engine_fault_touches_only_its_job(faulty):
    s = faulty.standin
    models = faulty.config_path.parent / "models"
    # Named to sort after tiny-sd15: with `default_model = ""` the first checkpoint by name is the default.
    (models / "zz-broken.safetensors").write_bytes(os.urandom(4096))  # garbage where a checkpoint should be
    shutil.copytree(models / "tiny-sd15", models / "tiny-sd15-cut")  # a diffusers folder with a truncated UNet
    unet = next((models / "tiny-sd15-cut" / "unet").glob("*.safetensors"))
    unet.write_bytes(unet.read_bytes()[: unet.stat().st_size // 2])

    cases = {  # prompt -> expected failure text (None: delivered)
        "a cat": None,
        "boom": "internal error (RuntimeError: injected fault)",
        "oom-once": None,
        "oom-always": OOM_MESSAGE,
        "nan-decode": NAN,
        "a dog": None,
        "broken --model zz-broken": "zz-broken.safetensors is not a readable safetensors file",
        "cut --model tiny-sd15-cut": "model tiny-sd15-cut could not be loaded",
        "a bird": None,
    }
    users = ["tester", "alice", "guild-owner"]
    # All queued at once: faulty jobs share the queue (and batches) with good ones. Which jobs share a call must
    # not depend on how fast commands arrive, so the engine holds the first job ("a cat", alone) until every
    # other one is waiting: the batches are then the same on a busy machine as on an idle one.
    worker, inject = faulty.services.worker, faulty.faults.inject
    first_render, every_job_waits = threading.Event(), threading.Event()

    def held_until_all_wait(attempt) -> None:
        first_render.set()
        every_job_waits.wait(120)
        inject(attempt)

    faulty.faults.inject = held_until_all_wait
    sent = {}
    for i, prompt in enumerate(cases):
        sent[prompt] = await s.send_interaction(s.slash("imagine", {"prompt": f"{prompt} {FAST}"}, user=users[i % 3]))
        if i == 0:
            await wait_until(first_render.is_set, 60, "the first job's render")
    await wait_until(lambda: len(worker.queued()) == len(cases) - 1, 60, "every other job to be queued")
    every_job_waits.set()
    for prompt, expected in cases.items():
        ix = sent[prompt]
        final = await ix.wait_original_message(
            lambda m: bool(m.get("attachments")) or "failed" in m.get("content", ""), timeout=60
        )
        if expected is None:
            assert final.get("attachments"), (prompt, final["content"])
            assert_delivered_once(s, marker_of(final))
        else:
            assert "failed" in final["content"] and expected in final["content"], (prompt, final["content"])
            assert not final.get("attachments")
    stats = faulty.services.worker.stats
    assert stats.oom_retries >= 2 and stats.jobs_failed == 5
    faulty.faults.inject = None
    again = await s.send_interaction(s.slash("imagine", {"prompt": f"after {FAST}"}))  # the queue still moves
    assert await again.wait_original_message(lambda m: bool(m.get("attachments")), timeout=30)
    s.assert_no_invalid_requests()


async def test_engine_child_crashes_cost_a_restart_not_the_bot(tmp_path, tiny_sd15, monkeypatch):
    """`isolation = "process"`: the engine child killed with SIGKILL mid-job, and a child that aborts (a test hook
    calls os.abort(), as a segfaulting library would die), are restarted while the bot keeps answering; the job
    on the child runs once more, and a job that crashes it twice fails with a clear message."""
    import signal

    from engine.backends.process import CRASHED_TWICE, HOOK_ENV
    from tests.reliability._helpers import DISCORD, ENGINE, recovered, wait_until

    monkeypatch.setenv(HOOK_ENV, "tests.engine.backends.child_hooks:crash_on_prompt")
    monkeypatch.setenv("SDBOT_TEST_MARKERS", str(tmp_path))
    async with running_bot(tmp_path, tiny_sd15, engine={**ENGINE, "isolation": "process"}, discord=DISCORD) as bot:
        await recovered(bot)
        s, worker = bot.standin, bot.services.worker

        def images(ix):
            return ix.wait_original_message(lambda m: bool(m.get("attachments")), timeout=240)

        slow = await s.send_interaction(s.slash("imagine", {"prompt": "slow --size 128x128 --steps 60"}))
        await slow.wait_for(
            lambda r: r.method == "PATCH" and "rendering: " in ((r.json or {}).get("content") or ""), timeout=120
        )
        first = worker.child_pid
        os.kill(first, signal.SIGKILL)
        during = await s.send_interaction(s.slash("imagine", {"prompt": f"during {FAST}"}, user="alice"))
        await during.wait_original_message(lambda m: "queued" in m.get("content", ""), timeout=30)  # answered
        for ix in (slow, during):
            assert_delivered_once(s, marker_of(await images(ix)))
        await wait_until(lambda: worker.child_pid not in (None, first), 60, "a new engine child")

        always = await s.send_interaction(s.slash("imagine", {"prompt": f"abort-always {FAST}"}))
        failed = await always.wait_original_message(lambda m: "failed" in m.get("content", ""), timeout=240)
        assert CRASHED_TWICE in failed["content"] and not failed.get("attachments")
        once = await s.send_interaction(s.slash("imagine", {"prompt": f"abort-once {FAST}"}))
        assert_delivered_once(s, marker_of(await images(once)))
        assert worker.restarts >= 4 and bot.bot.is_ready()
        s.assert_no_invalid_requests()
