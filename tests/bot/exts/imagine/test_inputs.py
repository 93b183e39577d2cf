"""Start images: the first image attachment of a message, refused by its declared size before any download,
checked by content and kept as a cleaned PNG named by its hash; downloaded again from its URL after a restart;
the size that follows from it; a job's kept start image. Real discord.py against the stand-in."""

from __future__ import annotations

import io
from pathlib import Path

import discord
import pytest
from PIL import Image

from bot.errors import UserError
from bot.exts.imagine import _inputs
from engine.config import Limits
from tests.discord_standin import DiscordStandIn


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), (10, 200, 30, 128)[: len(mode)]).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def standin_client():
    async with DiscordStandIn() as standin:
        client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.1)
        async with standin.run_client(client):
            yield standin, client


async def posted(standin, client, *files: tuple[str, bytes]) -> discord.Message:
    """A message in the stand-in's channel carrying `files`, as discord.py reads it back."""
    channel = client.get_channel(standin.channel.id)
    return await channel.send(files=[discord.File(io.BytesIO(data), filename=name) for name, data in files])


async def test_the_first_image_attachment_is_taken(standin_client):
    standin, client = standin_client
    message = await posted(standin, client, ("notes.txt", b"hello"), ("cat.PNG", png(8, 8)), ("dog.png", png(8, 8)))
    assert _inputs.first_image(message).filename == "cat.PNG"
    assert _inputs.first_image(await posted(standin, client, ("notes.txt", b"hello"))) is None


async def test_an_attachment_too_large_is_refused_before_it_is_downloaded(standin_client, tmp_path, monkeypatch):
    standin, client = standin_client
    (attachment,) = (await posted(standin, client, ("big.png", png(256, 256)))).attachments
    downloads = []
    monkeypatch.setattr(discord.Attachment, "read", lambda self, **kw: downloads.append(self))
    with pytest.raises(UserError, match=r"big.png is 0\.0 MiB; the limit for a start image is 0\.0 MiB"):
        await _inputs.save_attachment(attachment, tmp_path, Limits(max_input_bytes=attachment.size - 1))
    assert downloads == []


async def test_a_start_image_is_kept_cleaned_and_named_by_its_content(standin_client, tmp_path):
    standin, client = standin_client
    message = await posted(standin, client, ("a.png", png(40, 24, "RGBA")), ("b.png", png(40, 24, "RGBA")))
    first = await _inputs.save_attachment(message.attachments[0], tmp_path, Limits())
    again = await _inputs.save_attachment(message.attachments[1], tmp_path, Limits())
    assert (first.width, first.height, first.label) == (40, 24, "attachment a.png")
    assert first.path == again.path and first.path.parent == tmp_path  # the same picture is kept once
    with Image.open(first.path) as kept:
        assert kept.format == "PNG" and kept.mode == "RGB"  # alpha flattened: what the engine reads
    assert [p.suffix for p in tmp_path.iterdir()] == [".png"]  # no temporary file left


async def test_a_file_that_is_not_an_image_is_refused_in_one_line(standin_client, tmp_path):
    standin, client = standin_client
    (attachment,) = (await posted(standin, client, ("fake.png", b"not a picture at all"))).attachments
    with pytest.raises(UserError) as info:
        await _inputs.save_attachment(attachment, tmp_path, Limits())
    assert "fake.png" in str(info.value) and "\n" not in str(info.value)
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


async def test_after_a_restart_the_image_is_downloaded_again_from_its_url(standin_client, tmp_path):
    standin, client = standin_client
    (attachment,) = (await posted(standin, client, ("a.png", png(16, 16)))).attachments
    start = await _inputs.save_from_url(client.http, attachment.url, "a.png", tmp_path, Limits())
    assert (start.width, start.height) == (16, 16)
    del standin.attachments[attachment.id]  # Discord no longer has it
    with pytest.raises(UserError, match=r"its image \(a.png\) could not be downloaded again after the restart"):
        await _inputs.save_from_url(client.http, attachment.url, "a.png", tmp_path, Limits())


def test_the_size_follows_the_image_within_the_pixel_cap_unless_one_was_given(tmp_path):
    start = _inputs.StartImage(tmp_path / "x.png", 3000, 2000, "attachment x.png")
    sized = _inputs.with_start_image({"prompt": "a cat"}, start, Limits(max_pixels=512 * 512))
    assert sized["init_image"] == str(tmp_path / "x.png")
    assert sized["width"] / sized["height"] == pytest.approx(1.5, rel=0.02)
    assert sized["width"] * sized["height"] <= 512 * 512 and sized["width"] % 8 == sized["height"] % 8 == 0
    typed = _inputs.with_start_image({"width": 512, "height": 512}, start, Limits())
    assert (typed["width"], typed["height"]) == (512, 512)
    ratio = _inputs.with_start_image({"aspect_ratio": (1, 1)}, start, Limits())
    assert "width" not in ratio  # --ar decides the size later


def test_a_kept_start_image_is_read_back_or_said_to_be_gone(tmp_path: Path):
    path = tmp_path / "kept.png"
    path.write_bytes(png(24, 16))
    kept = _inputs.kept_start_image(str(path), "Vary (subtle) of job #3, image 1")
    assert (kept.width, kept.height, kept.label) == (24, 16, "Vary (subtle) of job #3, image 1")
    path.unlink()
    with pytest.raises(UserError, match=r"the start image \(attachment a.png\) is gone \(deleted\)"):
        _inputs.kept_start_image(str(path), "attachment a.png")
