"""A job's message text: the progress lines (queue position, a step bar) and the final line, within Discord's
2000 characters."""

from __future__ import annotations

import pytest

from bot.exts.imagine._format import CONTENT_LIMIT, final_content, progress_line


@pytest.mark.parametrize(
    ("state", "kwargs", "expected"),
    [
        ("queued", {"position": 1}, "⏳ Job #7 queued: next up"),
        ("queued", {"position": 0}, "⏳ Job #7 queued: next up"),
        ("queued", {}, "⏳ Job #7 queued: next up"),
        ("queued", {"position": 4}, "⏳ Job #7 queued: position 4"),
        ("started", {}, "🎨 Job #7 rendering…"),
        ("step", {"step": 0, "total": 20}, "🎨 Job #7 rendering: 0/20 `░░░░░░░░░░`"),
        ("step", {"step": 5, "total": 20}, "🎨 Job #7 rendering: 5/20 `██░░░░░░░░`"),  # 2.5 rounds to even
        ("step", {"step": 20, "total": 20}, "🎨 Job #7 rendering: 20/20 `██████████`"),
        ("step", {"step": 3, "total": 0}, "Job #7: step"),  # no total known: no bar
        ("resumed", {}, "🔁 Job #7 resumed after a restart"),
        ("interrupted", {}, "Job #7: interrupted"),
    ],
)
def test_progress_lines(state, kwargs, expected):
    assert progress_line(7, state, **kwargs) == expected


def test_the_final_line_mentions_counts_and_notes():
    assert final_content(3, None, [], 1) == "✅ Job #3: your image is ready"
    assert final_content(3, "<@1>", (), 4) == "<@1> ✅ Job #3: your 4 images are ready"
    assert final_content(3, None, ["easynegative left out", "sent smaller"], 1) == (
        "✅ Job #3: your image is ready\n-# easynegative left out\n-# sent smaller"
    )


def test_the_final_line_fits_a_message():
    text = final_content(3, "<@1>", ["n" * 5000], 1)
    assert len(text) == CONTENT_LIMIT and text.endswith("…")
