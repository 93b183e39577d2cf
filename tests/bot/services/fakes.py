"""Stand-ins for the services' collaborators: a scripted engine backend, a recording job listener and review
notifier, and `make_services`, which wires the real services (`bot.runner.build_services`) around them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from PIL import Image

from bot.config import Config, parse_settings
from bot.runner import Core, DiscordSide, build_services
from bot.services import Services
from bot.store.journal import Journal
from engine import jobs as w
from engine.render.pipeline import RenderedImage, RenderResult


class Handle:
    """One job's events, fed by the test through the backend; iteration ends after a terminal event."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.events: asyncio.Queue[w.JobEvent] = asyncio.Queue()
        self.ended = False

    def __aiter__(self):
        return self

    async def __anext__(self) -> w.JobEvent:
        if self.ended:
            raise StopAsyncIteration
        event = await self.events.get()
        self.ended = event.terminal
        return event


class ScriptedBackend:
    """The engine as the job service sees it: records submissions; the test says what happens to each job."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, bool]] = []  # (job id, priority)
        self.requests: dict[str, object] = {}  # job id -> the request as the engine got it
        self.handles: dict[str, Handle] = {}
        self.refuse: Exception | None = None
        self.waiting: list[w.PendingJob] = []  # submitted, not started yet: the queue's order is submission order

    def submit(self, request, *, job_id: str, owner: str, priority: bool = False, group: str | None = None):
        if self.refuse is not None:
            raise self.refuse
        self.submitted.append((job_id, priority))
        self.requests[job_id] = request
        self.handles[job_id] = handle = Handle(job_id)
        self.waiting.append(w.PendingJob(job_id, str(owner), request, priority, group=group))
        return handle

    def queued(self) -> list[w.PendingJob]:
        return list(self.waiting)

    @property
    def ids(self) -> list[str]:
        return [job_id for job_id, _ in self.submitted]

    def emit(self, job_id: int, *events: w.JobEvent) -> None:
        for event in events:
            if isinstance(event, w.Started) or event.terminal:
                self.waiting = [p for p in self.waiting if p.job_id != str(job_id)]
            self.handles[str(job_id)].events.put_nowait(event)

    def render(self, job_id: int, request, images: int = 1) -> None:
        """The job starts and finishes with `images` small images."""
        rendered = [
            RenderedImage(Image.new("RGB", (8, 8), (i * 40, 0, 0)), 5 + i, "a cat\nSteps: 2") for i in range(images)
        ]
        result = RenderResult(request.replace(seed=5), rendered, "tiny", None, 0.01)
        self.emit(job_id, w.Started(job_id=str(job_id)), w.Finished(job_id=str(job_id), result=result))

    def cancel(self, job_id: str) -> bool:
        handle = self.handles.get(job_id)
        if handle is None or handle.ended:
            return False
        self.waiting = [p for p in self.waiting if p.job_id != job_id]
        handle.events.put_nowait(w.Cancelled(job_id=job_id, reason=w.CANCELLED))
        return True

    def position(self, job_id: str) -> int | None:
        ids = [p.job_id for p in self.waiting]
        return ids.index(job_id) + 1 if job_id in ids else None

    async def close(self, timeout: float | None = None) -> None:
        for job_id, handle in self.handles.items():
            if not handle.ended:
                handle.events.put_nowait(w.Cancelled(job_id=job_id, reason=w.SHUTDOWN_QUEUED))


class Listener:
    """A job's Discord side, recording what it was told; `fail_posts` scripts failures of `post`. Like Discord,
    it answers a post repeated with the same nonce with the first message instead of posting again."""

    def __init__(
        self,
        *,
        fail_posts: list[BaseException] | None = None,
        message_id: int | None = None,
        board: Posts | None = None,
    ) -> None:
        self.calls: list[str] = []
        self.notices: list[str] = []
        self.posts: list[int] = []  # job ids actually posted
        self.previews: list[Any] = []  # the previews it was given to show
        self.fail_posts = list(fail_posts or [])
        self.lost_post = False  # the next failure happens after the post reached the channel
        self.message_id = message_id  # the message that shows the job, as `queued` says
        self.board = board  # what Discord holds, where the job service may look
        self.nonces: dict[str, int] = board.nonces if board is not None else {}  # nonce -> its post's message

    async def queued(self, job_id, position):
        self.calls.append("queued")
        return self.message_id

    async def started(self, job_id):
        self.calls.append("started")

    async def step(self, job_id, step, total, preview):
        self.calls.append("step")
        if preview is not None:
            self.previews.append(preview)

    async def post(self, job, files, nonce) -> int:
        if nonce in self.nonces:
            return self.nonces[nonce]
        if self.fail_posts:
            error = self.fail_posts.pop(0)
            if self.lost_post:  # it reached the channel, the answer did not reach us
                self.posts.append(job.id)
                self.nonces[nonce] = 4242
                if self.board is not None:
                    self.board.made[job.id] = 4242
            raise error
        self.posts.append(job.id)
        self.calls.append("finished")
        self.nonces[nonce] = 1000 + job.id
        return 1000 + job.id

    async def failed(self, job_id, message):
        self.calls.append(f"failed: {message}")

    async def cancelled(self, job_id):
        self.calls.append("cancelled")

    async def interrupted(self, job_id):
        self.calls.append("interrupted")

    async def notice(self, job_id, text):
        self.notices.append(text)

    async def whisper(self, text) -> bool:
        return False


class Posts:
    """Where the job service looks for a post before repeating one: `made` is what Discord holds (job id ->
    its post's message id); `asked` counts the looks."""

    def __init__(self) -> None:
        self.made: dict[int, int] = {}
        self.nonces: dict[str, int] = {}  # recent posts' nonces, which Discord answers a repeat by
        self.asked: list[str] = []

    async def carries(self, job, message_id) -> bool:
        self.asked.append(f"message {message_id}")
        return self.made.get(job.id) == message_id

    async def search(self, job) -> int | None:
        self.asked.append("history")
        return self.made.get(job.id)


class Notifier:
    """The review queue's Discord side, recording what it showed and told."""

    def __init__(self) -> None:
        self.shown: list[int] = []
        self.decisions: list[tuple[int, str]] = []
        self.told: list[tuple[int, str, str]] = []
        self.listeners: list[Listener] = []

    async def show(self, item, job, files, channel_id):
        self.shown.append(item.id)
        return 5000 + item.id

    async def decided(self, item, job, channel_id):
        self.decisions.append((item.id, item.status))

    async def tell(self, job, text, listener, notify_by):
        self.told.append((job.user_id, text, notify_by))

    def listener_for(self, job) -> Listener:
        """For jobs whose command's listener is gone."""
        self.listeners.append(listener := Listener())
        return listener


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    data = {
        "discord": {"outputs_dir": str(tmp_path / "outputs"), **sections.get("discord", {})},
        "engine": {"models_dir": str(tmp_path / "models"), **sections.get("engine", {})},
        "moderation": {"user_rate": 1000, "guild_rate": 10000, **sections.get("moderation", {})},
        "database": {"journal_path": str(tmp_path / "journal.db")},
    }
    return Config(parse_settings(data, "test"), tmp_path, None)


def make_services(
    engine,
    sessions,
    tmp_path: Path,
    backend: ScriptedBackend | None = None,
    notifier: Notifier | None = None,
    listener_for=None,
    posts: Posts | None = None,
    **sections: dict[str, Any],
) -> Services:
    """The real services, wired as the bot wires them, around the stand-ins."""
    notifier = notifier or Notifier()
    core = Core(
        make_config(tmp_path, **sections),
        engine,
        sessions,
        backend or ScriptedBackend(),
        Journal(tmp_path / "journal.db"),
    )
    return build_services(core, DiscordSide(notifier, listener_for or notifier.listener_for, posts or Posts()))
