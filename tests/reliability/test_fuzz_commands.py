"""Every registered slash command (and the message menu, and autocomplete) with generated option values, sent
through the stand-in to the real bot.

Values respect what Discord itself enforces for each declared option (type, required, min/max, choices), so
everything else is the bot's job: each interaction must be acknowledged in time and answered, with no
traceback and no "something went wrong" (a fuzzed but well-typed value is the user's doing, so it deserves a
real message), every request Discord would accept, and no job left queued without the worker knowing of it.
At the end every job the fuzzing made must reach a final state: the queue is not stuck.

Renders are made tiny (64x64, 2 steps) whatever was asked, so jobs stay cheap while prompts, samplers, models
and VAEs still go through the engine. A few dozen cases in CI, many more with --slow.
"""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest_asyncio
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from engine.samplers import sampler_labels
from tests.bot.harness import RunningBot, write_config
from tests.discord_standin import DiscordStandIn, StandInGuild, StandInUser
from tests.discord_standin.payloads import StandInChannel, StandInRole
from tests.reliability._helpers import DISCORD, ENGINE, recovered, wait_until
from tests.reliability.test_fuzz_parsers import INFOTEXT, INLINE, SLOW, TEXT, VALID_EXPORT

CI_CASES = 200
BAD = ("Traceback (most recent call last)", "something went wrong")
ACTIVE = ("queued", "running")


@pytest_asyncio.fixture
async def fuzz_bot(tmp_path, tiny_sd15):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_sd15, models / "tiny-sd15")
    members = [StandInUser(f"user{i}") for i in range(10)]
    guild = StandInGuild(
        members=members,
        roles=[StandInRole("artists")],
        channels=[StandInChannel("general"), StandInChannel("art"), StandInChannel("reviews")],
    )
    async with DiscordStandIn([guild]) as standin:
        # fuzzing sends far more than a person could: rate limits out of the way
        config = write_config(
            tmp_path,
            models,
            standin,
            engine=ENGINE,
            discord=DISCORD,
            moderation={"user_rate": 10000, "guild_rate": 100000, "max_queued_per_guild": 100000},
        )
        running = await RunningBot(standin, config).start()
        running.errors = _Errors()
        logging.getLogger("bot").addHandler(running.errors)
        try:
            await recovered(running)
            _tiny_renders(running.services.worker.engine)
            yield running
            # The queue is not stuck: every job the fuzzing made ends (posted, failed, cancelled, held).
            db = config.parent / "sdbot.db"
            await wait_until(lambda: not _active_jobs(db), 120, "every fuzzed job to finish")
            assert not standin.internal_errors, standin.internal_errors
        finally:
            logging.getLogger("bot").removeHandler(running.errors)
            await running.stop()


class _Errors(logging.Handler):
    """Errors the bot logs (an unexpected exception behind "something went wrong" comes with its traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter().format(record))


def _tiny_renders(engine) -> None:
    render_batch = engine.render_batch

    def tiny(requests, *args, **kwargs):
        small = [
            r.replace(width=64, height=64, steps=min(r.steps, 2), batch_size=min(r.batch_size, 2)) for r in requests
        ]
        return render_batch(small, *args, **kwargs)

    engine.render_batch = tiny


def _active_jobs(db) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM jobs WHERE status IN ('queued', 'running')")]


# --- option values, by declared option --------------------------------------------------------------------------

KNOWN = ["tiny-sd15", "auto", "none", "512x768", "64x64", "huge", "clear", "portrait", "a", "-", "_"]
WORDS = st.lists(
    st.one_of(
        st.sampled_from(
            ["a cat", "(masterpiece:1.2)", "[blurry]", "BREAK", "castle", "\\(x\\)", "ß∂ƒ", "🐱", "nsfw?", "(((deep)))"]
        ),
        st.text(max_size=12),
    ),
    min_size=1,
    max_size=6,
).map(" ".join)
GOOD_OPTION = st.one_of(
    st.integers(-1, 2**32).map(lambda n: f"--seed {n}"),
    st.integers(1, 150).map(lambda n: f"--steps {n}"),
    st.floats(1, 30).map(lambda f: f"--cfg {f:.2f}"),
    st.sampled_from(["--ar 2:3", "--ar 16:9", "--ar 1:1"]),
    st.sampled_from(sampler_labels()).map(lambda n: f"--sampler {n}"),
    st.integers(1, 3).map(lambda n: f"--clip-skip {n}"),
    st.integers(1, 4).map(lambda n: f"--batch {n}"),
    st.just("--no text, blur"),
    st.just("--vae auto"),
)
GOOD_PROMPT = st.tuples(WORDS, st.lists(GOOD_OPTION, max_size=4)).map(lambda t: " ".join([t[0], *t[1]]))
NAMES = st.sampled_from(["portrait", "anime", "Fast_1", "x"])
LIKELY = {
    "size": st.sampled_from(["512x512", "512x768", "64x64", "1024x1024", "640 x 640"]),
    "sampler": st.sampled_from(sampler_labels()),
    "vae": st.sampled_from(["auto", "none"]),
    "model": st.just("tiny-sd15"),
    "preset": NAMES,
    "name": NAMES,
    "old": NAMES,
    "new": NAMES,
    "options": st.lists(GOOD_OPTION, min_size=1, max_size=4).map(" ".join),
    "id": st.integers(1, 40).map(str),
    "duration": st.sampled_from(["1h", "30m", "2d", "forever", "soon"]),
}


def string_values(option: dict) -> st.SearchStrategy[str]:
    if option.get("choices"):
        return st.sampled_from([c["value"] for c in option["choices"]])
    lo, hi = option.get("min_length", 0), min(option.get("max_length", 6000), 6000)
    lo = max(lo, 1 if option.get("required") else 0)
    junk = st.one_of(TEXT, INLINE, INFOTEXT, st.sampled_from(KNOWN + sampler_labels()), st.text(max_size=hi))
    likely = LIKELY.get(option["name"], GOOD_PROMPT)
    pool = st.one_of(likely, likely, likely, junk)  # mostly plausible, so commands get past the first check too
    # Discord refuses a value outside the declared length, so the bot never sees one
    return pool.map(lambda v: (v + "x" * lo)[: max(lo, len(v))][:hi])


def option_values(option: dict, standin: DiscordStandIn, draw) -> object:
    kind = option["type"]
    if kind == 3:
        return draw(string_values(option))
    if kind in (4, 10):
        lo, hi = option.get("min_value", -(2**53)), option.get("max_value", 2**53)
        if kind == 4:
            return draw(st.integers(int(lo), int(hi)))
        return draw(st.floats(float(lo), float(hi), allow_nan=False, allow_infinity=False))
    if kind == 5:
        return draw(st.booleans())
    guild = standin.guild
    if kind == 6:
        return draw(st.sampled_from(guild.members))
    if kind == 7:
        return draw(st.sampled_from(guild.text_channels))
    if kind == 8:
        return draw(st.sampled_from(guild.roles))
    if kind == 11:
        name, data = draw(
            st.one_of(
                st.tuples(st.just("presets.json"), VALID_EXPORT.map(str.encode)),
                st.tuples(st.just("x.txt"), st.binary(max_size=200)),
                st.tuples(st.just("image.png"), st.binary(max_size=200).map(lambda b: b"\x89PNG\r\n\x1a\n" + b)),
                st.tuples(st.just("real.png"), st.just(_png_with_infotext())),
            )
        )
        return standin.upload_attachment(name, data)
    raise AssertionError(f"option type {kind} is not fuzzed yet: add it")


def _png_with_infotext() -> bytes:
    from PIL import Image

    from engine.infotext import png_bytes

    return png_bytes(
        Image.new("RGB", (8, 8)),
        "a cat\nNegative prompt: blur\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512",
    )


def leaves(command: dict) -> list[tuple[str, list[dict]]]:
    """("cmd sub", options) for every invocable path of a registered chat command."""
    subs = [o for o in command.get("options") or [] if o["type"] in (1, 2)]
    if not subs:
        return [(command["name"], command.get("options") or [])]
    out = []
    for sub in subs:
        for path, options in leaves({"name": sub["name"], "options": sub.get("options") or []}):
            out.append((f"{command['name']} {path}", options))
    return out


@st.composite
def interactions(draw, standin: DiscordStandIn):
    commands = standin.registered_commands(standin.guild)
    chat = [leaf for c in commands if c.get("type", 1) == 1 for leaf in leaves(c)]
    menus = [c["name"] for c in commands if c.get("type") == 3]
    user = draw(st.sampled_from(standin.guild.members))
    channel = draw(st.sampled_from(standin.guild.text_channels))
    kind = draw(st.sampled_from(["slash"] * 6 + ["autocomplete"] + (["menu"] if menus else [])))
    if kind == "menu":
        # Every draw is made whatever the stand-in holds (hypothesis needs the same draws for the same choices)
        menu, which = draw(st.sampled_from(menus)), draw(st.integers(0, 10**6))
        messages = [m for m in standin.messages.values() if not m.get("flags", 0) & 64]
        event("menu")
        if not messages:
            return standin.slash("queue", {}, user=user, channel=channel)
        return standin.message_command(menu, messages[which % len(messages)], user=user)
    if kind == "autocomplete":
        options_with = [(p, o) for p, os in chat for o in os if o.get("autocomplete")]
        path, focused = draw(st.sampled_from(options_with))
        declared = next(os for p, os in chat if p == path)
        values = {
            o["name"]: option_values(o, standin, draw) for o in declared if o.get("required") and o is not focused
        }
        values[focused["name"]] = draw(string_values({**focused, "required": False}))
        event(f"autocomplete /{path} {focused['name']}")
        return standin.autocomplete(path, values, focused=focused["name"], user=user, channel=channel)
    weighted = chat + [leaf for leaf in chat if leaf[0] == "imagine"] * 6  # the command people use most
    path, declared = draw(st.sampled_from(weighted))
    values = {
        o["name"]: option_values(o, standin, draw)
        for o in declared
        if o.get("required") or draw(st.integers(0, 3)) == 0
    }
    event(f"/{path}")
    return standin.slash(path, values, user=user, channel=channel)


def _text_of(request) -> str:
    return json.dumps(request.json) if request.json is not None else ""


# No shrinking and no replays from the example database: the bot's state (presets, bans, modes) changes with
# every case, so a replay is not the same case; the failing case is reported as it was generated.
@settings(
    max_examples=settings.default.max_examples if SLOW else CI_CASES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
@given(data=st.data())
async def test_every_command_answers_fuzzed_options_clearly(fuzz_bot, data):
    s = fuzz_bot.standin
    payload = data.draw(interactions(s))
    ix = await s.send_interaction(payload)
    callback = await ix.wait_callback(timeout=5)
    assert callback.status in (200, 204) and not ix.missed_deadline, callback.describe()
    if ix.response_type == 5:  # deferred: wait for the answer (a follow-up, or the edit of the original)
        await ix.wait_for(lambda r: r.method in ("POST", "PATCH") and r.route.startswith("/webhooks/"), timeout=20)
    answer = " ".join(_text_of(r) for r in ix.requests)
    if ix.command_name == "imagine" and ix.type == 2:
        event("/imagine -> a job" if "Job #" in answer else "/imagine -> refused")
    for request in ix.requests:
        text = _text_of(request)
        assert not any(bad in text for bad in BAD), (payload["data"], text[:2000], fuzz_bot.errors.lines[-3:])
        assert request.status is None or request.status < 400 or request.injected, request.describe()
    s.assert_no_invalid_requests()
    assert not s.internal_errors, s.internal_errors
    # no job is queued or running in the database without the service following it
    db = fuzz_bot.config_path.parent / "sdbot.db"
    followed = set(fuzz_bot.services.jobs._jobs)
    assert set(_active_jobs(db)) <= followed, (_active_jobs(db), followed)
