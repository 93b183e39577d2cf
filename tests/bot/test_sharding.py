"""Sharding: `[discord] shards` runs discord.py's sharded client; each shard sees only its guilds.

Discord sends a guild's events on shard `(guild_id >> 22) % shard_count` (direct messages on shard 0); the stand-in
does the same (tests/discord_standin/gateway.py). Two shards in one process here; two processes, each with half
the shards, on one PostgreSQL in tests/reliability/test_shard_processes.py.
"""

from __future__ import annotations

import pytest

from bot.app import ShardedSdBot
from bot.config import parse_settings
from bot.errors import ConfigError
from tests.bot.harness import FAST, RunningBot, write_config
from tests.discord_standin import DiscordStandIn, StandInGuild, StandInUser
from tests.discord_standin.payloads import snowflake


def guild_on(shard: int, shard_count: int, name: str) -> StandInGuild:
    """A guild whose id puts it on `shard` (a fresh snowflake with its timestamp part nudged)."""
    flake = snowflake()
    high = flake >> 22
    high += (shard - high) % shard_count
    return StandInGuild(name=name, id=(high << 22) | (flake & ((1 << 22) - 1)), members=[StandInUser("tester")])


@pytest.mark.parametrize(
    "discord, shards, ids",
    [
        ({}, 1, []),
        ({"shards": "auto"}, "auto", []),
        ({"shards": 4, "shard_ids": "2-3"}, 4, [2, 3]),
        ({"shards": 4, "shard_ids": [1, 0]}, 4, [0, 1]),
    ],
)
def test_shard_settings(discord, shards, ids):
    settings = parse_settings({"discord": discord}, "config.toml").discord
    assert (settings.shards, settings.shard_ids, settings.sharded) == (shards, ids, bool(discord))


@pytest.mark.parametrize(
    "discord, message",
    [
        ({"shards": 0}, '[discord] shards: shards must be "auto" or a whole number from 1 to 65536, got 0'),
        ({"shards": "many"}, 'shards must be "auto" or a whole number'),
        ({"shards": "auto", "shard_ids": [0]}, 'shard_ids needs a number of shards (shards = N), not "auto"'),
        ({"shards": 2, "shard_ids": [2]}, "shard_ids must be distinct shard numbers from 0 to 1 (shards = 2), got [2]"),
        ({"shards": 4, "shard_ids": "3-1"}, "the range '3-1' runs backwards; write it FIRST-LAST"),
        ({"shards": 2, "shard_ids": "one"}, 'shard_ids must be a list of shard numbers ([0, 1]) or a range ("0-3")'),
    ],
)
def test_bad_shard_settings_are_one_clear_line(discord, message):
    with pytest.raises(ConfigError) as info:
        parse_settings({"discord": discord}, "config.toml")
    assert message in str(info.value) and "\n" not in str(info.value)


async def test_two_shards_in_one_process(tmp_path, tiny_sd15, models_dir):
    """shards = "auto": two shards from GET /gateway/bot, each IDENTIFYing with [id, 2] and getting only its
    guild; a command in either guild arrives on its own shard's connection and is answered with images, and
    one in a direct message on shard 0's."""
    guilds = [guild_on(0, 2, "even"), guild_on(1, 2, "odd")]
    async with DiscordStandIn(guilds, shards=2) as s:
        config = write_config(
            tmp_path,
            models_dir,
            s,
            engine={"threads": 1},
            discord={"shards": "auto", "guild_ids": [g.id for g in guilds]},
        )
        running = await RunningBot(s, config).start()
        try:
            bot = running.bot
            assert isinstance(bot, ShardedSdBot) and bot.shard_count == 2 and sorted(bot.shards) == [0, 1]
            assert {bot.get_guild(g.id).shard_id for g in guilds} == {0, 1}
            identified = {
                tuple(f.d["shard"]): f.connection for f in s.gateway_frames if f.direction == "received" and f.op == 2
            }
            assert set(identified) == {(0, 2), (1, 2)}
            for shard, guild in enumerate(guilds):
                created = [
                    f.d["id"]
                    for f in s.gateway_frames
                    if f.t == "GUILD_CREATE" and f.connection == identified[(shard, 2)]
                ]
                assert created == [str(guild.id)]
            for shard, guild in enumerate(guilds):
                ix = await s.send_interaction(
                    s.slash("imagine", {"prompt": f"a cat {FAST}"}, guild=guild, user=guild.members[0])
                )
                await ix.wait_original_message(lambda m: m.get("attachments"), timeout=60)
                sent = [f for f in s.gateway_frames if f.t == "INTERACTION_CREATE" and f.d["id"] == str(ix.id)]
                assert [f.connection for f in sent] == [identified[(shard, 2)]]
                assert bot.serves(guild.id)
            dm = await s.send_interaction(s.slash("queue", dm=True))  # direct messages come on shard 0
            await dm.wait_callback()
            sent = [f for f in s.gateway_frames if f.t == "INTERACTION_CREATE" and f.d["id"] == str(dm.id)]
            assert [f.connection for f in sent] == [identified[(0, 2)]] and bot.serves(None)
            s.assert_no_invalid_requests()
        finally:
            await running.stop()
