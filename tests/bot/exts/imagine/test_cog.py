"""/imagine end to end: the real bot (`sdbot run`'s code path) against the Discord stand-in."""

from __future__ import annotations

import pytest

from engine.infotext import parse_infotext, read_png_infotext
from tests.bot.harness import FAST


def params_of(standin, message) -> dict[str, str]:
    data = standin.attachment_bytes(message["attachments"][0])
    return parse_infotext(read_png_infotext(data)).params


async def test_imagine_with_typed_and_inline_options(harness):
    s = harness.standin
    ix = await s.send_interaction(s.slash("imagine", {"prompt": f"a cat --seed 5 --cfg 6 {FAST}", "cfg": 8.0,
                                                      "clip_skip": 2}))
    await ix.wait_callback()
    assert ix.callbacks[0].json["type"] == 5  # deferred: acknowledged at once
    message = await ix.wait_original_message(lambda m: m.get("attachments"), timeout=30)
    params = params_of(s, message)
    assert params["Seed"] == "5" and params["Size"] == "64x64" and params["Steps"] == "2"
    assert params["CFG scale"] == "8"  # typed wins over inline
    assert params["Clip skip"] == "2"
    embed = message["embeds"][0]
    cfg = next(f for f in embed["fields"] if f["name"] == "CFG scale")
    assert cfg["value"].startswith("8")
    assert [c["custom_id"] for row in message["components"] for c in row["components"]][0].startswith("sdbot:job:")
    s.assert_no_invalid_requests()
