"""Two OS processes writing presets and jobs to one real PostgreSQL at once: nothing lost, nothing doubled.

A small run of benchmarks/pg_two_processes.py (the figures in docs/operations.md come from its full size).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_two_processes_lose_and_double_nothing(pg_server_url):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "pg_two_processes.py"),
            "--url",
            pg_server_url,
            "--tasks",
            "8",
            "--rounds",
            "3",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    figures = dict(line.split(": ", 1) for line in run.stdout.splitlines() if ": " in line)
    assert run.returncode == 0, run.stdout + run.stderr
    for name in (
        "presets_lost",
        "presets_doubled",
        "counter_lost_updates",
        "jobs_lost",
        "jobs_doubled",
        "jobs_started_twice",
        "jobs_never_started",
    ):
        assert figures[name] == "0", (name, run.stdout)
    assert figures["limit_user_presets"] == "20 (limit 20)"
