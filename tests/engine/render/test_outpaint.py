"""Outpainting geometry: the L,T,R,B parser, where the image lies in the grown canvas at the job's size, the canvas
and its border mask, and the Zoom Out and Pan margins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from engine.errors import EngineError
from engine.render.outpaint import (
    MAX_MARGIN,
    canvas_and_mask,
    grown_size,
    image_box,
    pan_margins,
    parse_margins,
    zoom_out_margins,
)


@pytest.mark.parametrize(
    ("text", "margins"),
    [("0,0,256,0", (0, 0, 256, 0)), (" 64, 32 ,64,32 ", (64, 32, 64, 32)), ("1,2,3,4", (1, 2, 3, 4))],
)
def test_margins_parse(text, margins):
    assert parse_margins(text) == margins


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("256", "outpaint must be four whole numbers L,T,R,B"),
        ("0,0,256", "outpaint must be four whole numbers L,T,R,B"),
        ("-8,0,0,0", "outpaint must be four whole numbers L,T,R,B"),
        ("8.5,0,0,0", "outpaint must be four whole numbers L,T,R,B"),
        ("0,0,0,0", "outpaint 0,0,0,0 adds nothing"),
        (f"0,0,{MAX_MARGIN + 1},0", f"each outpaint margin must be from 0 to {MAX_MARGIN} pixels"),
    ],
)
def test_bad_margins_are_refused_in_one_line(text, message):
    with pytest.raises(EngineError, match=message) as err:
        parse_margins(text)
    assert "\n" not in str(err.value)


@given(st.tuples(*[st.integers(0, MAX_MARGIN)] * 4).filter(any))
def test_margins_round_trip(margins):
    assert parse_margins(",".join(map(str, margins))) == margins


@given(st.text(max_size=40))
def test_any_text_parses_or_says_what_is_allowed(text):
    try:
        margins = parse_margins(text)
    except EngineError as err:
        assert "outpaint" in str(err)
    else:
        assert len(margins) == 4 and any(margins)


@pytest.mark.parametrize(
    ("image", "margins", "size", "box"),
    [
        ((512, 512), (0, 0, 256, 0), (768, 512), (0, 0, 512, 512)),  # the canvas at its own size: unscaled
        ((512, 512), (128, 64, 0, 0), (640, 576), (128, 64, 640, 576)),
        ((512, 512), (256, 256, 256, 256), (512, 512), (128, 128, 384, 384)),  # Zoom Out 2x
        ((512, 512), (128, 128, 128, 128), (512, 512), (85, 85, 427, 427)),  # Zoom Out 1.5x
        ((512, 768), (256, 0, 0, 0), (640, 640), (213, 0, 640, 640)),  # Pan left, shrunk to a cap
    ],
)
def test_image_box_in_the_canvas_at_the_jobs_size(image, margins, size, box):
    assert image_box(image[0], image[1], margins, size) == box


def test_the_image_keeps_its_pixels_when_the_canvas_is_rendered_at_its_own_size():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), "RGB")
    margins = (16, 8, 32, 0)
    size = grown_size(96, 64, margins)
    canvas, mask = canvas_and_mask(image, margins, size)
    assert canvas.size == mask.size == size == (144, 72)
    assert np.array_equal(np.asarray(canvas)[8:72, 16:112], np.asarray(image))
    expected = np.full((72, 144), 255, dtype=np.uint8)
    expected[8:72, 16:112] = 0
    assert np.array_equal(np.asarray(mask), expected)
    assert np.asarray(canvas)[expected == 255].max() == 0  # the new border starts black


def test_a_smaller_job_shrinks_the_image_into_its_box_without_the_border():
    image = Image.new("RGB", (200, 200), (250, 250, 250))
    canvas, mask = canvas_and_mask(image, (100, 100, 100, 100), (200, 200))  # Zoom Out 2x on a 200x200 image
    inside = np.asarray(canvas)[50:150, 50:150]
    assert inside.min() == 250  # no black bled in from the border
    assert np.asarray(mask)[50:150, 50:150].max() == 0 and np.asarray(mask)[:50].min() == 255


@pytest.mark.parametrize(
    ("size", "factor", "margins"),
    [
        ((512, 512), 2.0, (256, 256, 256, 256)),
        ((512, 512), 1.5, (128, 128, 128, 128)),
        ((640, 384), 1.5, (160, 96, 160, 96)),
        ((100, 50), 1.5, (25, 12, 25, 13)),
    ],
)
def test_zoom_out_grows_every_side_to_factor_times_the_image(size, factor, margins):
    assert zoom_out_margins(size[0], size[1], factor) == margins
    assert grown_size(size[0], size[1], margins) == (round(size[0] * factor), round(size[1] * factor))


@pytest.mark.parametrize(
    ("direction", "margins"),
    [("left", (256, 0, 0, 0)), ("right", (0, 0, 256, 0)), ("up", (0, 384, 0, 0)), ("down", (0, 0, 0, 384))],
)
def test_pan_grows_one_side_by_half(direction, margins):
    assert pan_margins(512, 768, direction) == margins


def test_unknown_zoom_and_pan_are_refused():
    with pytest.raises(EngineError, match="zoom out must be one of 1.5, 2"):
        zoom_out_margins(512, 512, 3.0)
    with pytest.raises(EngineError, match="pan must be one of left, right, up, down"):
        pan_margins(512, 512, "north")
