"""What the /imagine tests do again and again: send, wait for the images, read the job id off the buttons."""

from __future__ import annotations


async def with_images(s, interaction, timeout: float = 60) -> dict:
    """Send a command, button or modal; the message its images arrive in."""
    return await (await s.send_interaction(interaction)).wait_original_message(lambda m: m.get("attachments"),
                                                                                timeout=timeout)


def job_id_of(message: dict) -> int:
    """The job a result message shows: its first button's custom id is `sdbot:job:<id>:<action>`."""
    return int(message["components"][0]["components"][0]["custom_id"].split(":")[2])
