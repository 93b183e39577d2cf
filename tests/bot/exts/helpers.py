"""What the command areas' tests do again and again: send, wait for the images or the private answer, read the
job id off the buttons."""

from __future__ import annotations


async def with_images(s, interaction, timeout: float = 60) -> dict:
    """Send a command, button or modal; the message its images arrive in."""
    return await (await s.send_interaction(interaction)).wait_original_message(
        lambda m: m.get("attachments"), timeout=timeout
    )


def job_id_of(message: dict) -> int:
    """The job a result message shows: its first button's custom id is `sdbot:job:<id>:<action>`."""
    return int(message["components"][0]["components"][0]["custom_id"].split(":")[2])


async def ephemeral_text(ix, timeout: float = 10) -> str:
    """What only the user sees: an immediate ephemeral reply (type 4), or the text replacing an ephemeral
    "thinking…" (type 5: commands are acknowledged before any database work)."""
    await ix.wait_callback()
    body = ix.callbacks[0].json
    assert body["data"]["flags"] & 64, body
    if body["type"] == 4:
        return body["data"]["content"]
    assert body["type"] == 5, body
    message = await ix.wait_original_message(timeout=timeout)
    assert message["flags"] & 64
    return message["content"]
