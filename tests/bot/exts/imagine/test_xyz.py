"""/xyz end to end (the real bot against the Discord stand-in, real renders on the tiny model): the grid with its
labels and infotext, progress in cells, a cell opened from the menu as an ordinary result pixel-equal to its single
render, range forms, refusals, other members' jobs interleaving with a grid, and a restart in the middle."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from bot.store.models import Job
from engine.infotext import parse_infotext, read_png_infotext
from tests.bot.exts.helpers import with_images
from tests.bot.exts.imagine.test_cog import error_text
from tests.bot.exts.info.test_cog import reply
from tests.bot.harness import FAST, running_bot


def grid_job_of(message: dict) -> int:
    """The grid's job id: its menus' custom ids are `sdbot:cell:<id>:<part>`."""
    return int(message["components"][0]["components"][0]["custom_id"].split(":")[2])


def menu_of(message: dict) -> dict:
    return message["components"][0]["components"][0]


def image_of(s, message: dict, i: int = 0) -> bytes:
    return s.attachment_bytes(message["attachments"][i])


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


async def statuses(h) -> dict[int, tuple[str, object]]:
    async with h.services.sessions() as s:
        rows = (await s.execute(select(Job).order_by(Job.id))).scalars()
        return {j.id: (j.status, j.started_at, j.user_id) for j in rows}


async def test_xyz_posts_the_grid_and_opens_a_cell_as_an_ordinary_result(harness):
    s = harness.standin
    ix = await s.send_interaction(
        s.slash("xyz", {"prompt": f"a cat --seed 5 {FAST}", "x": "Steps: 1-2", "y": "CFG Scale: 5-7 (+2)"})
    )
    grid = await ix.wait_original_message(lambda m: m.get("attachments"), timeout=60)
    assert "4-cell grid is ready" in grid["content"]
    params = parse_infotext(read_png_infotext(image_of(s, grid))).params
    assert (params["Script"], params["X Type"], params["X Values"]) == ("X/Y/Z plot", "Steps", "1-2")
    assert (params["Y Type"], params["Y Values"], params["Seed"]) == ("CFG Scale", "5-7 (+2)", "5")
    width, height = Image.open(io.BytesIO(image_of(s, grid))).size
    assert width == 2 * 64 + 64 * 3 // 4 and height > 2 * 64  # two columns, the row labels' column, the top labels
    menu = menu_of(grid)
    assert [o["label"] for o in menu["options"]] == [
        "1. Steps: 1, CFG Scale: 5.0",
        "2. Steps: 2, CFG Scale: 5.0",
        "3. Steps: 1, CFG Scale: 7.0",
        "4. Steps: 2, CFG Scale: 7.0",
    ]
    embed = grid["embeds"][0]
    axes = next(f for f in embed["fields"] if f["name"] == "X/Y/Z plot")["value"]
    assert axes == "X: Steps: 1-2\nY: CFG Scale: 5-7 (+2)"
    progress = [r.json.get("content", "") for r in ix.requests if r.method == "PATCH" and r.json]
    assert "queued: next up" in progress[0] and "position" not in " ".join(progress)  # the grid's first cell
    # the menu opens cell 4 as an ordinary result, with its own buttons
    cell = await with_images(s, s.select(menu["custom_id"], ["3"], grid))
    assert cell["content"].startswith(f"🔎 Cell 4 of grid #{grid_job_of(grid)}: Steps: 2, CFG Scale: 7.0")
    ids = [c["custom_id"] for row in cell["components"] for c in row["components"]]
    assert any(i.endswith(":reroll") for i in ids) and any(i.endswith(":upscale") for i in ids)
    # ... the same image as the single render with its settings
    single = await with_images(s, s.slash("imagine", {"prompt": f"a cat --seed 5 {FAST}", "steps": 2, "cfg": 7.0}))
    assert np.array_equal(pixels(image_of(s, cell)), pixels(image_of(s, single)))
    assert read_png_infotext(image_of(s, cell)) == read_png_infotext(image_of(s, single))
    s.assert_no_invalid_requests()


async def test_z_makes_one_grid_per_value_side_by_side(harness):
    s = harness.standin
    grid = await with_images(
        s, s.slash("xyz", {"prompt": f"a cat {FAST}", "x": "Seed: 1, 2", "z": 'Sampler: Euler,"DPM++ 2M Karras"'})
    )
    assert len(grid["attachments"]) == 3  # the grid, then each Z value's sub-grid
    main, first = (Image.open(io.BytesIO(image_of(s, grid, i))) for i in (0, 1))
    assert main.width == 2 * first.width
    params = parse_infotext(read_png_infotext(image_of(s, grid))).params
    assert params["Z Type"] == "Sampler" and params["Fixed X Values"] == "1, 2"
    s.assert_no_invalid_requests()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"x": "Seed: 1-30"}, "this grid has 30 cells (30); the most this bot renders in one grid is 25"),
        ({"x": "Colour: red"}, "unknown axis type 'Colour'"),
        ({"x": "Steps: 1-3 [x]"}, "Steps: '1-3 [x]' is not a whole number"),
        ({"x": "Prompt S/R: dog, fox"}, "Prompt S/R did not find dog in prompt or negative prompt."),
        ({"x": "Steps: 1, 400"}, "the cell Steps: 400: steps must be from 1 to 150"),
    ],
)
async def test_refusals_are_one_private_line_and_nothing_runs(harness, options, message):
    s = harness.standin
    ix = await s.send_interaction(s.slash("xyz", {"prompt": f"a cat {FAST}", **options}))
    assert message in await error_text(ix)
    assert not [m for m in s.messages.values() if m.get("attachments")]
    assert await statuses(harness) == {}
    s.assert_no_invalid_requests()


async def test_the_axis_autocomplete_offers_the_types(harness):
    s = harness.standin
    ix = await s.send_interaction(s.autocomplete("xyz", {"prompt": "x", "x": "cf"}))
    await ix.wait_callback()
    assert [c["value"] for c in ix.callbacks[0].json["data"]["choices"]] == ["CFG Scale: "]


async def test_other_members_jobs_interleave_with_a_grid(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15, step_s=0.03) as h:
        s = h.standin
        grid_ix = await s.send_interaction(
            s.slash("xyz", {"prompt": "a cat --size 64x64 --steps 4", "x": "Steps: 1-6"}, user="alice")
        )
        await grid_ix.wait_callback()
        alice = str(s.guild.members[1].id)
        for _ in range(1000):  # the grid's cells wait in the queue before the other member asks
            if sum(1 for p in h.services.worker.queued() if p.owner == alice) >= 3:
                break
            await asyncio.sleep(0.01)
        others = [
            # a size no cell has: the worker cannot batch these with a cell
            await s.send_interaction(s.slash("imagine", {"prompt": f"a dog {FAST} --size 64x128"}, user="tester"))
            for i in range(2)
        ]
        grid = await grid_ix.wait_original_message(lambda m: m.get("attachments"), timeout=120)
        for ix in others:
            await ix.wait_original_message(lambda m: m.get("attachments"), timeout=120)
        jobs = await statuses(h)
        del jobs[grid_job_of(grid)]  # the grid's own job is not rendered: its cells are
        started = sorted((j[1], j[2], job_id) for job_id, j in jobs.items())
        owners = [str(owner) for _, owner, _ in started]
        cells = [i for i, owner in enumerate(owners) if owner == alice]
        tester = [i for i, owner in enumerate(owners) if owner != alice]
        assert len(cells) == 6 and len(tester) == 2
        # round robin by member: the tester's jobs start between the grid's cells, not after those waiting before
        # them (first come first served, or cells put first, would start three or four cells before them)
        assert tester[-1] < cells[-1] and tester[0] < cells[2], owners
        s.assert_no_invalid_requests()


async def test_a_restart_in_the_middle_of_a_grid_resumes_it_and_posts_it_once(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15, step_s=0.05) as h:
        s = h.standin
        ix = await s.send_interaction(
            s.slash("xyz", {"prompt": "a cat --size 64x64 --steps 4 --seed 3", "x": "Steps: 1-4", "y": "Seed: 1, 2"})
        )
        await ix.wait_for(lambda r: r.method == "PATCH" and "cells" in (r.json or {}).get("content", ""), timeout=60)
        await h.restart()
        grids = []

        def posted() -> bool:
            grids[:] = [m for m in s.messages.values() if m.get("attachments") and "grid is ready" in m["content"]]
            return bool(grids)

        await s.wait_for(lambda r: posted(), timeout=120)
        for _ in range(500):  # the post is recorded right after it is made
            jobs = await statuses(h)
            if all(status == "posted" for status, _, _ in jobs.values()):
                break
            await asyncio.sleep(0.01)
        assert all(status == "posted" for status, _, _ in jobs.values()), jobs
        assert len(grids) == 1 and "resumed after a restart" in grids[0]["content"]
        assert [o["label"] for o in menu_of(grids[0])["options"]][-1] == "8. Steps: 4, Seed: 2"
        s.assert_no_invalid_requests()


async def test_queue_shows_the_grid_once_and_its_cancel_cancels_the_grid(tmp_path, tiny_sd15):
    async with running_bot(tmp_path, tiny_sd15, step_s=0.2) as h:
        s = h.standin
        ix = await s.send_interaction(s.slash("xyz", {"prompt": "a cat --size 64x64 --steps 20", "x": "Seed: 1-6"}))
        await ix.wait_for(lambda r: r.method == "PATCH", timeout=30)
        listed = await reply(s, s.slash("queue"))
        (line,) = listed["content"].splitlines()  # the grid, not its six cells
        grid_id = int(line.split(" ")[0].lstrip("#"))
        done = await reply(s, s.button(f"sdbot:cancel:{grid_id}", message=listed))
        assert done["content"] == f"✖️ job #{grid_id} cancelled"
        await ix.wait_original_message(lambda m: "was cancelled" in m["content"], timeout=30)
        for _ in range(500):
            jobs = await statuses(h)
            if all(status == "cancelled" for status, _, _ in jobs.values()):
                break
            await asyncio.sleep(0.02)
        assert {status for status, _, _ in jobs.values()} == {"cancelled"}, jobs
        s.assert_no_invalid_requests()


async def test_dynamic_prompts_and_wildcards_on_discord(harness):
    s = harness.standin
    wildcards = harness.services.config.models_dir / "wildcards"
    wildcards.mkdir()
    (wildcards / "pets.txt").write_text("cat\ndog\n", encoding="utf-8")
    data = await reply(s, s.slash("models", {"refresh": True}))
    fields = {f["name"]: f["value"] for f in data["embeds"][0]["fields"]}
    assert fields["Wildcards: __NAME__ in a prompt picks one of its lines"] == "__pets__"
    message = await with_images(s, s.slash("imagine", {"prompt": f"a {{red|blue}} __pets__ --seed 4 --batch 2 {FAST}"}))
    infos = [parse_infotext(read_png_infotext(image_of(s, message, i))) for i in range(2)]
    assert all(i.prompt.split()[1] in ("red", "blue") and i.prompt.split()[2] in ("cat", "dog") for i in infos)
    assert infos[0].params["Template"] == "a {red|blue} __pets__"
    alone = await with_images(s, s.slash("imagine", {"prompt": f"a {{red|blue}} __pets__ --seed 5 {FAST}"}))
    assert np.array_equal(pixels(image_of(s, alone)), pixels(image_of(s, message, 1)))  # image 2 of the batch
    s.assert_no_invalid_requests()


async def test_an_image_starts_every_cell_as_in_imagine(harness):
    s = harness.standin
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 40, 40)).save(buf, format="PNG")
    attachment = s.upload_attachment("start.png", buf.getvalue(), content_type="image/png")
    grid = await with_images(
        s,
        s.slash("xyz", {"prompt": "a cat --steps 2 --seed 3", "x": "Denoising: 0.3, 0.9", "image": attachment}),
    )
    cell = await with_images(s, s.select(menu_of(grid)["custom_id"], ["1"], grid))
    params = parse_infotext(read_png_infotext(image_of(s, cell))).params
    assert params["Denoising strength"] == "0.9" and params["Size"] == "96x64"  # the image's size, as /imagine
    s.assert_no_invalid_requests()


async def test_a_grid_command_cut_off_by_a_restart_runs_after_it(tmp_path, tiny_sd15, monkeypatch):
    """Stopped between the acknowledgement and the grid's rows (here: its start image's download hangs): the journal
    keeps the command with its axes, and the next start makes the grid."""
    import importlib

    hang = asyncio.Event()

    async def never_downloads(*args, **kwargs):
        await hang.wait()

    async with running_bot(tmp_path, tiny_sd15) as h:
        s = h.standin
        monkeypatch.setattr(importlib.import_module("bot.exts.imagine._inputs"), "save_attachment", never_downloads)
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (40, 200, 40)).save(buf, format="PNG")
        start = s.upload_attachment("start.png", buf.getvalue(), content_type="image/png")
        ix = await s.send_interaction(
            s.slash("xyz", {"prompt": "a cat --steps 2", "x": "Denoising: 0.2, 0.8", "image": start})
        )
        await ix.wait_callback()  # deferred ("thinking…"), nothing saved yet
        assert await statuses(h) == {}
        await h.restart()
        grid = await ix.wait_original_message(lambda m: m.get("attachments"), timeout=60)
        assert "2-cell grid is ready" in grid["content"] and "resumed after a restart" in grid["content"]
        params = parse_infotext(read_png_infotext(image_of(s, grid))).params
        assert (params["X Type"], params["X Values"]) == ("Denoising", "0.2, 0.8")
        s.assert_no_invalid_requests()
