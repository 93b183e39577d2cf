"""The queue's order: round robin by server, then by member; whoever started least recently goes first."""

from __future__ import annotations

from dataclasses import dataclass

from engine.backends.fairness import Served, fair_order


@dataclass(eq=False)
class J:
    owner: str
    group: str | None
    seq: int
    priority: bool = False

    def __repr__(self) -> str:
        return f"{self.group}/{self.owner}#{self.seq}"


def jobs(*spec: tuple[str, str | None, int]) -> list[J]:
    out: list[J] = []
    for owner, group, count in spec:
        out += [J(owner, group, len(out) + i) for i in range(count)]
    return out


def names(order: list[J]) -> list[str]:
    return [f"{j.group}/{j.owner}" for j in order]


def test_servers_alternate_and_members_take_turns_inside_a_server():
    queue = jobs(("a", "G1", 3), ("b", "G1", 1), ("c", "G2", 2))
    assert names(fair_order(queue, True)) == ["G1/a", "G2/c", "G1/b", "G2/c", "G1/a", "G1/a"]


def test_a_busy_server_cannot_starve_a_quiet_one_as_jobs_start():
    """Start jobs one by one as the worker does: the quiet server's job starts second, not after 50."""
    queue = jobs(*[(f"m{i}", "busy", 1) for i in range(50)])
    served = Served()
    started = []
    queue.append(J("q", "quiet", 100))
    for _ in range(3):
        head = fair_order(queue, True, served)[0]
        served.note(head)
        queue.remove(head)
        started.append(head.group)
    assert started == ["busy", "quiet", "busy"]


def test_a_server_served_last_waits_behind_a_newcomer():
    served = Served()
    queue = jobs(("a", "G1", 3))
    served.note(queue.pop(0))
    queue.append(J("z", "G2", 10))
    assert names(fair_order(queue, True, served)) == ["G2/z", "G1/a", "G1/a"]


def test_direct_messages_are_each_their_own_server_and_priority_goes_first():
    queue = jobs(("a", None, 2), ("b", None, 1)) + [J("mod", "G", 50, priority=True)]
    assert names(fair_order(queue, True)) == ["G/mod", "None/a", "None/b", "None/a"]
    assert names(fair_order(queue, False)) == ["G/mod", "None/a", "None/a", "None/b"]


def test_memory_is_bounded():
    served = Served(limit=3)
    for i in range(10):
        served.note(J(f"u{i}", f"g{i}", i))
    assert len(served.servers) == 3 and len(served.members) == 3
    assert list(served.servers) == ["server:g7", "server:g8", "server:g9"]
