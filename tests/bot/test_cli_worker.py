"""`sdbot worker` without a cluster: what it needs is said in one line."""

from __future__ import annotations

import pytest

from bot.cli import main


def test_worker_needs_a_ray_address(capsys, tmp_path, monkeypatch):
    """With no --ray-address and no [engine] ray_address it stops with exit status 2 and says how to start one."""
    monkeypatch.chdir(tmp_path)
    assert main(["worker", "--status"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("sdbot: error: sdbot worker needs a Ray cluster: pass --ray-address")
        and "ray start --head" in err
    )


def test_worker_options_are_checked(capsys):
    """A replica count below 1 is refused by the parser."""
    with pytest.raises(SystemExit) as exit_:
        main(["worker", "--ray-address", "auto", "--replicas", "0"])
    assert exit_.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
