"""The order queued jobs start in: round robin by server, then by member. Shared by every backend.

Priority jobs (jobs resumed after a restart) go first, first come first served. With
`round_robin = false` the others follow first come first served. With `round_robin = true` (the default) the
queue is dealt in rounds: each round gives every server with jobs waiting one start, and inside a server, the
server's starts go to its members in turn (each member's jobs in the order they were sent). Whoever started a
job least recently goes first in a round (one never served before goes ahead of everyone served; between equals,
the one whose oldest waiting job came first), so a busy server cannot starve a quiet one, nor a busy member the
other members of their server.

A job's server is its `group` (the bot passes the guild id); a job without one (a direct message) is a server
of its own owner. The memory of who started last (`Served`) is bounded: the least recent entries are
forgotten first, which at worst puts a long-idle server at the front once.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Protocol, TypeVar


class Queueable(Protocol):
    owner: str
    group: str | None
    priority: bool
    seq: int


MAX_REMEMBERED = 10_000

K = TypeVar("K", bound=Hashable)


def server_of(job: Any) -> str:
    group = getattr(job, "group", None)
    return f"server:{group}" if group is not None else f"member:{job.owner}"


class Served:
    """Who started a job most recently, by server and by (server, member)."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self.limit = limit
        self._clock = itertools.count(1)
        self.servers: OrderedDict[str, int] = OrderedDict()
        self.members: OrderedDict[tuple[str, str], int] = OrderedDict()

    def note(self, job: Queueable) -> None:
        """`job` starts now (priority jobs do not take a turn)."""
        if job.priority:
            return
        now = next(self._clock)
        server = server_of(job)
        self._touch(self.servers, server, now)
        self._touch(self.members, (server, job.owner), now)

    def _touch(self, table: OrderedDict[K, int], key: K, now: int) -> None:
        """`key` was served at `now`: it moves to the most recent end; the least recent are forgotten first."""
        table.pop(key, None)
        table[key] = now
        while len(table) > self.limit:
            table.popitem(last=False)


def fair_order(queue, round_robin: bool, served: Served | None = None) -> list:
    """The queue in start order (see the module docstring)."""
    by_arrival = sorted(queue, key=lambda j: j.seq)
    first = [j for j in by_arrival if j.priority]
    rest = [j for j in by_arrival if not j.priority]
    if not round_robin:
        return first + rest
    served = served or Served()
    servers: dict[str, dict[str, list]] = {}
    for job in rest:
        servers.setdefault(server_of(job), {}).setdefault(job.owner, []).append(job)
    lines = []  # (last served, first arrival, the server's jobs in its members' turns)
    for server, members in servers.items():
        turns = sorted(members, key=lambda m: (served.members.get((server, m), 0), members[m][0].seq))
        jobs = _deal([members[m] for m in turns])
        lines.append((served.servers.get(server, 0), jobs[0].seq, jobs))
    lines.sort(key=lambda line: line[:2])
    return first + _deal([jobs for _, _, jobs in lines])


def _deal(queues: list[list]) -> list:
    """Round robin over `queues`: the first of each, then the second of each, ..."""
    return [job for round_ in itertools.zip_longest(*queues) for job in round_ if job is not None]
