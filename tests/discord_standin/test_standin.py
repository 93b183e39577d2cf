"""The Discord stand-in against the real discord.py client: login, gateway, commands, interactions, faults."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest
import pytest_asyncio
from discord import app_commands
from discord.ext import commands

from bot.discord_endpoints import (
    DEFAULT_API_BASE_URL,
    DEFAULT_GATEWAY_URL,
    discord_endpoints,
    point_discord_at,
    restore_discord_endpoints,
)
from tests.discord_standin import DiscordStandIn, Routes, StandInGuild, image_size


def make_png(width: int = 16, height: int = 8, pad: int = 0) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(
        b"\x00" + b"".join(bytes([(x * 15) % 256, (y * 31) % 256, 200]) for x in range(width)) for y in range(height)
    )
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    if pad:
        png += chunk(b"tEXt", b"pad\x00" + b"x" * pad)
    return png


PNG = make_png()


class ResultView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=60)

    @discord.ui.button(label="Again", custom_id="again", style=discord.ButtonStyle.primary)
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.send_message(f"again by {interaction.user.name}", ephemeral=True)

    @discord.ui.button(label="Edit prompt", custom_id="edit-prompt")
    async def edit(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.send_modal(PromptModal())


class PromptModal(discord.ui.Modal, title="Edit prompt"):
    prompt = discord.ui.TextInput(label="Prompt", custom_id="prompt", max_length=500)

    def __init__(self) -> None:
        super().__init__(custom_id="prompt-modal", timeout=60)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"new prompt: {self.prompt.value}")


def make_bot(guild_id: int) -> commands.Bot:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)
    bot.seen = []  # the discord.Interaction objects the command got
    guild = discord.Object(id=guild_id)

    @bot.tree.command(name="imagine", description="Render an image", guild=guild)
    @app_commands.describe(prompt="What to draw", steps="Sampling steps")
    async def imagine(
        interaction: discord.Interaction, prompt: str, steps: app_commands.Range[int, 1, 150] = 20
    ) -> None:
        bot.seen.append(interaction)
        await interaction.response.defer(thinking=True)
        await interaction.followup.send(
            content=f"**{prompt}** ({steps} steps)", file=discord.File(io.BytesIO(PNG), "image.png"), view=ResultView()
        )

    @imagine.autocomplete("prompt")
    async def prompt_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=f"{current} {i}", value=f"{current} {i}") for i in range(25)]

    async def setup_hook() -> None:
        await bot.tree.sync(guild=guild)

    bot.setup_hook = setup_hook
    return bot


@pytest_asyncio.fixture
async def standin():
    async with DiscordStandIn(guilds=[StandInGuild("Render Farm")]) as s:
        yield s


@pytest_asyncio.fixture
async def running(standin):
    bot = make_bot(standin.guild.id)
    async with standin.run_client(bot):
        yield standin, bot
    assert not standin.internal_errors, standin.internal_errors
    assert discord.http.Route.BASE == DEFAULT_API_BASE_URL
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == DEFAULT_GATEWAY_URL


async def run_imagine(standin: DiscordStandIn, prompt: str = "a cat"):
    ix = await standin.send_interaction(standin.slash("imagine", {"prompt": prompt, "steps": 30}))
    await ix.wait_for(Routes.FOLLOWUP)
    return ix


# ------------------------------------------------------------------------------------------------ tests


def test_point_discord_at_and_restore():
    with discord_endpoints("http://127.0.0.1:1/api/v10", "ws://127.0.0.1:1/gateway"):
        assert discord.http.Route("GET", "/users/@me").url == "http://127.0.0.1:1/api/v10/users/@me"
        assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:1/gateway"
    assert discord.http.Route.BASE == DEFAULT_API_BASE_URL == "https://discord.com/api/v10"
    point_discord_at("http://127.0.0.1:2/api/v10/", "ws://127.0.0.1:2/gateway")
    assert discord.http.Route.BASE == "http://127.0.0.1:2/api/v10"
    restore_discord_endpoints()
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == DEFAULT_GATEWAY_URL
    with pytest.raises(ValueError):
        point_discord_at("http://x/api/v10", "http://x/gateway")


async def test_login_ready_and_guild_create(running):
    standin, bot = running
    assert bot.user.id == standin.bot_user.id and bot.user.bot
    assert bot.application_id == standin.application_id
    guild = bot.get_guild(standin.guild.id)
    assert guild is not None and guild.name == "Render Farm"
    assert guild.me is not None and guild.me.id == bot.user.id
    assert [c.name for c in guild.text_channels] == ["general"]
    assert guild.default_role.id == guild.id
    assert [r.key for r in standin.requests[:2]] == [Routes.GET_ME, Routes.GET_APPLICATION]
    conn = standin.gateway.connections[0]
    assert conn.query == {"v": "10", "encoding": "json", "compress": "zlib-stream"}
    sent = [f.t for f in standin.gateway_frames if f.direction == "sent" and f.op == 0]
    assert sent[:2] == ["READY", "GUILD_CREATE"]
    assert any(f.op == 1 and f.direction == "received" for f in standin.gateway_frames)  # heartbeat
    assert any(f.op == 11 and f.direction == "sent" for f in standin.gateway_frames)  # its ACK
    identify = next(f for f in standin.gateway_frames if f.op == 2)
    assert identify.d["token"] == standin.token and identify.d["intents"] == discord.Intents.default().value
    standin.assert_no_refused_requests()


async def test_command_sync_to_guild_is_accepted(running):
    standin, bot = running
    sync = standin.find_requests(Routes.SYNC_GUILD_COMMANDS)
    assert len(sync) == 1 and sync[0].status == 200 and not sync[0].errors
    (cmd,) = standin.registered_commands(standin.guild)
    assert cmd["name"] == "imagine" and cmd["guild_id"] == str(standin.guild.id)
    opts = {o["name"]: o for o in cmd["options"]}
    assert opts["prompt"]["type"] == 3 and opts["prompt"]["autocomplete"] is True
    assert opts["steps"]["type"] == 4 and opts["steps"]["max_value"] == 150
    assert standin.registered_commands() == []  # nothing global


async def test_slash_defers_and_follows_up_with_png(running):
    standin, bot = running
    payload = standin.slash("imagine", {"prompt": "a cat", "steps": 30})
    assert payload["data"]["guild_id"] == str(standin.guild.id)  # the registered guild command
    assert {o["name"]: o["type"] for o in payload["data"]["options"]} == {"prompt": 3, "steps": 4}
    ix = await standin.send_interaction(payload)
    cb = await ix.wait_callback()
    assert cb.json["type"] == 5
    assert cb.status == 200 and cb.query.get("with_response") in ("1", "true")
    assert 0 < ix.ack_latency < 2.0
    follow = await ix.wait_for(Routes.FOLLOWUP)
    assert follow.status == 200, follow.response
    assert follow.files[0].filename == "image.png" and follow.files[0].data == PNG
    assert follow.json["attachments"] == [{"id": 0, "filename": "image.png"}]  # discord.py sends int ids
    msg = await ix.wait_original_message()
    assert msg["id"] == follow.response["id"]  # the first follow-up replaced the "thinking" message
    assert msg["content"] == "**a cat** (30 steps)"
    (att,) = msg["attachments"]
    assert att["content_type"] == "image/png" and att["size"] == len(PNG) and (att["width"], att["height"]) == (16, 8)
    assert standin.attachment_bytes(att) == PNG
    async with aiohttp.ClientSession() as http, http.get(att["url"]) as resp:  # served, as Discord's CDN would
        assert resp.status == 200 and await resp.read() == PNG
    # discord.py parsed our answer: the interaction saw the message with its attachment
    sent = await bot.seen[0].original_response()
    assert sent.attachments[0].filename == "image.png" and await sent.attachments[0].read() == PNG
    assert [c.custom_id for c in sent.components[0].children] == ["again", "edit-prompt"]
    # a DM through the bot: recipient_id goes out as an int, which Discord accepts
    user = await bot.fetch_user(standin.user.id)
    await user.send("your image is ready")
    dm = await standin.wait_for(Routes.CREATE_MESSAGE)
    assert (
        dm.status == 200
        and standin.messages_in(standin.dm_channel(standin.user))[0]["content"] == "your image is ready"
    )
    assert image_size(PNG) == (16, 8)
    standin.assert_no_invalid_requests()
    standin.assert_no_refused_requests()


async def test_button_press(running):
    standin, bot = running
    await run_imagine(standin)
    press = standin.button("again")  # finds the message that carries the button
    assert press["message"]["components"][0]["components"][0]["custom_id"] == "again"
    ix = await standin.send_interaction(press)
    cb = await ix.wait_callback()
    assert cb.status == 200 and cb.json["type"] == 4
    assert cb.json["data"]["content"] == "again by tester" and cb.json["data"]["flags"] & 64
    assert ix.original_message["flags"] & 64
    standin.assert_no_invalid_requests()


async def test_modal_submit(running):
    standin, bot = running
    await run_imagine(standin)
    opener = await standin.send_interaction(standin.button("edit-prompt"))
    cb = await opener.wait_callback()
    assert cb.status == 200 and cb.json["type"] == 9 and cb.json["data"]["custom_id"] == "prompt-modal"
    submit = standin.modal_submit("prompt-modal", {"prompt": "a dog"})
    assert submit["message"]["id"] == opener.payload["message"]["id"]  # from a component: the message comes along
    ix = await standin.send_interaction(submit)
    cb = await ix.wait_callback()
    assert cb.status == 200 and cb.json["data"]["content"] == "new prompt: a dog"
    standin.assert_no_invalid_requests()


async def test_autocomplete_and_schema_limits(running):
    standin, bot = running
    ix = await standin.send_interaction(standin.autocomplete("imagine", {"prompt": "cat"}))
    cb = await ix.wait_callback()
    assert cb.status == 200 and cb.json["type"] == 8 and len(cb.json["data"]["choices"]) == 25
    assert ix.autocomplete_choices[0] == {"name": "cat 0", "value": "cat 0"}
    standin.assert_no_invalid_requests()

    # raw requests on an interaction the bot does not see, straight to the REST routes
    raw = standin.autocomplete("imagine", {"prompt": "dog"})
    handle = standin.register_interaction(raw)
    url = f"{standin.api_base_url}/interactions/{handle.id}/{handle.token}/callback?with_response=true"
    too_many = {"type": 8, "data": {"choices": [{"name": str(i), "value": str(i)} for i in range(26)]}}
    long_content = {"type": 4, "data": {"content": "x" * 2001}}
    long_id = {
        "type": 4,
        "data": {
            "content": "hi",
            "components": [{"type": 1, "components": [{"type": 2, "style": 1, "label": "go", "custom_id": "y" * 101}]}],
        },
    }
    async with aiohttp.ClientSession() as http:
        for body, path in (
            (too_many, ["data", "choices"]),
            (long_content, ["data", "content"]),
            (long_id, ["data", "components", "0", "components", "0", "custom_id"]),
        ):
            async with http.post(url, json=body) as resp:
                assert resp.status == 400 and resp.headers["Content-Type"] == "application/json"
                err = await resp.json()
            assert err["code"] == 50035 and err["message"] == "Invalid Form Body"
            node = err["errors"]
            for key in path:
                node = node[key]
            assert node["_errors"][0]["code"] in ("BASE_TYPE_MAX_LENGTH", "BASE_TYPE_BAD_LENGTH")
        assert not handle.acked
        ok = {"type": 8, "data": {"choices": [{"name": str(i), "value": str(i)} for i in range(25)]}}
        async with http.post(url, json=ok) as resp:
            assert resp.status == 200
    assert len(standin.invalid_requests) == 3
    with pytest.raises(AssertionError, match="Discord would have refused"):
        standin.assert_no_invalid_requests()


async def test_429_with_via_is_retried(running):
    standin, bot = running
    fault = standin.rate_limit_next(Routes.CALLBACK, retry_after=0.05)
    ix = await run_imagine(standin)
    statuses = [r.status for r in ix.callbacks]
    assert statuses == [429, 200] and fault.remaining == 0
    assert ix.callbacks[0].injected
    # without Via it looks like a Cloudflare ban: discord.py raises instead of retrying
    standin.rate_limit_next(Routes.GET_CHANNEL, via=False)
    with pytest.raises(discord.HTTPException) as exc:
        await bot.fetch_channel(standin.channel.id)
    assert exc.value.status == 429
    standin.fail_next(Routes.GET_CHANNEL, 503)
    with pytest.raises(discord.DiscordServerError):
        await bot.fetch_channel(standin.channel.id)
    assert (await bot.fetch_channel(standin.channel.id)).name == "general"
    standin.assert_no_invalid_requests()


async def test_gateway_disconnect_is_followed_by_resume(running):
    standin, bot = running
    mark = standin.gateway_mark()
    resumed = bot.loop.create_future()

    async def on_resumed() -> None:
        if not resumed.done():
            resumed.set_result(True)

    bot.add_listener(on_resumed)
    await standin.drop_gateway()  # close code 4000
    ix = await standin.send_interaction(standin.slash("imagine", {"prompt": "while away"}))  # queued
    resume = await standin.wait_for_gateway(op=6, direction="received", since=mark)
    assert resume.d["session_id"] == standin.gateway.current.session_id
    await standin.wait_for_gateway(t="RESUMED", since=mark)
    assert standin.gateway.connections[-1].path == "/gateway-resume"  # READY's resume_gateway_url
    assert standin.gateway.current.resumes == 1
    await resumed
    cb = await ix.wait_callback()  # the missed INTERACTION_CREATE was replayed and answered
    assert cb.status == 200
    assert (await ix.wait_for(Routes.FOLLOWUP)).status == 200
    replayed = [f for f in standin.gateway_frames[mark:] if f.t == "INTERACTION_CREATE"]
    assert len(replayed) == 1 and replayed[0].connection == standin.gateway.connections[-1].id
    assert sum(1 for f in standin.gateway_frames if f.op == 2) == 1  # no second IDENTIFY


async def test_expired_token_gives_404(running):
    standin, bot = running
    ix = await run_imagine(standin)
    interaction = bot.seen[0]
    ix.expire()
    with pytest.raises(discord.NotFound) as exc:
        await interaction.edit_original_response(content="too late")
    assert exc.value.code == 10015 and exc.value.status == 404
    with pytest.raises(discord.NotFound) as exc:
        await interaction.followup.send("too late")
    assert exc.value.code == 10015


async def test_upload_limit_gives_413(running):
    standin, bot = running
    ix = await run_imagine(standin)
    standin.set_upload_limit(standin.guild, 1024)
    with pytest.raises(discord.HTTPException) as exc:
        await bot.seen[0].followup.send(file=discord.File(io.BytesIO(make_png(pad=2000)), "big.png"))
    assert exc.value.status == 413 and exc.value.code == 40005
    assert len(ix.followups) == 0


def test_spec_is_found_in_the_repository_or_by_env_var(monkeypatch, tmp_path):
    from tests.discord_standin.validation import BUNDLED_SPEC, SPEC_ENV, Spec, find_spec, load_spec

    monkeypatch.delenv(SPEC_ENV, raising=False)
    default = find_spec()
    repo = Path(__file__).resolve().parents[2]
    assert default == BUNDLED_SPEC and default.is_file() and default.is_relative_to(repo)
    plain = tmp_path / "openapi.json"  # an uncompressed copy given by the override reads the same
    plain.write_text(json.dumps(load_spec(default)), encoding="utf-8")
    monkeypatch.setenv(SPEC_ENV, str(plain))
    assert find_spec() == plain
    assert load_spec(plain)["paths"].keys() == load_spec(default)["paths"].keys()
    monkeypatch.setenv(SPEC_ENV, str(default))
    assert Spec.get() is Spec.get(default)  # loaded and built once per process
    spec = Spec.get()
    assert spec.match("/users/@me", "GET") == ("/users/@me", {})
    assert spec.match("/webhooks/1/tok/messages/@original", "PATCH")[0].endswith("/messages/@original")
    ok = {"type": 4, "data": {"content": "hi", "attachments": [{"id": 0, "filename": "a.png"}]}}
    route = "/interactions/{interaction_id}/{interaction_token}/callback"
    assert spec.validate(route, "post", ok) == []
    for bad_id in (-1, True, 1.5, "x"):
        bad = {"type": 4, "data": {"content": "hi", "attachments": [{"id": bad_id, "filename": "a.png"}]}}
        assert spec.validate(route, "post", bad), bad_id
    monkeypatch.setenv(SPEC_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(FileNotFoundError):
        find_spec()


async def test_raw_rest_rules_without_a_bot(standin):
    """Auth, the 3 s answer deadline (here 0.05 s), unknown routes: the stand-in refuses as Discord does."""
    standin.interaction_ack_deadline = 0.05
    handle = standin.register_interaction(standin.slash("imagine", {"prompt": "x"}))
    url = f"{standin.api_base_url}/interactions/{handle.id}/{handle.token}/callback"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{standin.api_base_url}/users/@me") as resp:
            assert resp.status == 401 and (await resp.json())["message"] == "401: Unauthorized"
        auth = {"Authorization": f"Bot {standin.token}"}
        async with http.get(f"{standin.api_base_url}/users/@me", headers=auth) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
        async with http.get(f"{standin.api_base_url}/no/such/route", headers=auth) as resp:
            assert resp.status == 404
        handle.dispatched_at -= 1.0  # as if it was dispatched a second ago: its 0.05 s are over, without a sleep
        async with http.post(url, json={"type": 5}) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == 10062
    assert handle.missed_deadline and not handle.acked
    assert [r.status for r in standin.refused_requests] == [401, 404, 404]


async def test_enforce_nonce_answers_a_repeat_with_the_first_message(running):
    """Discord's idempotency for channel posts: a repeat of a nonce with `enforce_nonce` (discord.py sends it with
    every nonce) within the window returns the first message and creates none; other nonces, no enforcement,
    and repeats after the window create messages; a nonce over 25 characters is refused."""
    standin, bot = running
    channel = bot.get_channel(standin.channel.id)
    first = await channel.send("images", nonce="sdbot:7:1")
    again = await channel.send("images again", nonce="sdbot:7:1")
    assert again.id == first.id and again.content == "images"
    assert [m["content"] for m in standin.messages.values()] == ["images"]
    posts = [r for r in standin.requests if r.key == "POST /channels/{channel_id}/messages"]
    assert [r.deduplicated for r in posts] == [False, True]
    assert posts[1].json["enforce_nonce"] is True

    other = await channel.send("other", nonce="sdbot:7:2")
    assert other.id != first.id
    auth = {"Authorization": f"Bot {standin.token}"}
    url = f"{standin.api_base_url}/channels/{standin.channel.id}/messages"
    async with aiohttp.ClientSession() as http:
        for _ in range(2):  # without enforce_nonce the nonce is only echoed back
            async with http.post(url, json={"content": "plain", "nonce": "sdbot:7:1"}, headers=auth) as resp:
                assert resp.status == 200
        async with http.post(
            url, json={"content": "x", "nonce": "n" * 26, "enforce_nonce": True}, headers=auth
        ) as resp:
            assert resp.status == 400
    assert [m["content"] for m in standin.messages.values()] == ["images", "other", "plain", "plain"]

    standin.nonce_window_s = 0.0  # "the past few minutes" are over
    late = await channel.send("images late", nonce="sdbot:7:1")
    assert late.id != first.id
