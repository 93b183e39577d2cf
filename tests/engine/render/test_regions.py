"""Vary (Region) regions: 3x3 grid cells and boxes in percent, parsed and drawn as a mask."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import EngineError
from engine.render.regions import parse_region, pixel_box, region_mask

THIRD = 1 / 3


@pytest.mark.parametrize(
    ("text", "boxes"),
    [
        ("a1", ((0, 0, THIRD, THIRD),)),
        ("c3", ((2 * THIRD, 2 * THIRD, 1, 1),)),
        ("B2", ((THIRD, THIRD, 2 * THIRD, 2 * THIRD),)),
        (" a1 b1 ", ((0, 0, THIRD, THIRD), (THIRD, 0, 2 * THIRD, THIRD))),
        ("a1,a2, a1", ((0, 0, THIRD, THIRD), (0, THIRD, THIRD, 2 * THIRD))),  # each cell once
        ("25,25,75,75", ((0.25, 0.25, 0.75, 0.75),)),
        ("10%, 20% ,30.5%,40", ((0.1, 0.2, 0.305, 0.4),)),
        ("0,0,100,100", ((0, 0, 1, 1),)),
    ],
)
def test_regions_parse(text, boxes):
    parsed = parse_region(text)
    assert len(parsed) == len(boxes)
    for got, want in zip(parsed, boxes):
        assert got == pytest.approx(want)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "a region is cells of a 3x3 grid such as `a1 b2`"),
        ("d1", "a region is cells of a 3x3 grid"),
        ("a4", "a region is cells of a 3x3 grid"),
        ("a1 25,25,75,75", "a region is cells of a 3x3 grid"),
        ("75,25,25,75", "a box in percent needs 0 <= x0 < x1 <= 100"),
        ("0,0,101,50", "a box in percent needs 0 <= x0 < x1 <= 100"),
        ("10,10,10,20", "a box in percent needs"),
    ],
)
def test_bad_regions_say_both_forms_in_one_line(text, message):
    with pytest.raises(EngineError, match=message) as err:
        parse_region(text)
    assert "\n" not in str(err.value)


@given(st.lists(st.sampled_from([c + r for c in "abc" for r in "123"]), min_size=1, max_size=9), st.data())
def test_any_cells_parse_to_their_ninths(cells, data):
    separator = data.draw(st.sampled_from([" ", ",", ", ", "  "]))
    text = separator.join(cell.upper() if data.draw(st.booleans()) else cell for cell in cells)
    boxes = parse_region(text)
    assert len(boxes) == len(set(cells))
    for box in boxes:
        assert all(round(edge * 3, 9) in (0, 1, 2, 3) for edge in box)
        assert box[2] - box[0] == pytest.approx(THIRD) and box[3] - box[1] == pytest.approx(THIRD)


@given(st.text(max_size=30))
def test_any_text_parses_or_says_what_is_allowed(text):
    try:
        boxes = parse_region(text)
    except EngineError as err:
        assert "region" in str(err) or "box in percent" in str(err)
    else:
        assert boxes and all(0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 for x0, y0, x1, y1 in boxes)


def test_cells_become_a_mask_of_the_image():
    mask = np.asarray(region_mask(parse_region("b2 c3"), 300, 300))
    expected = np.zeros((300, 300), dtype=np.uint8)
    expected[100:200, 100:200] = 255
    expected[200:300, 200:300] = 255
    assert np.array_equal(mask, expected)


def test_a_box_in_percent_becomes_a_mask():
    mask = np.asarray(region_mask(parse_region("25,50,75,100"), 512, 256))
    assert mask[128:256, 128:384].min() == 255
    assert mask.sum() == 255 * 128 * 256


@given(st.floats(0, 1), st.floats(0, 1), st.integers(1, 64), st.integers(1, 64))
def test_a_pixel_box_is_never_empty_and_stays_inside(a, b, width, height):
    x0, x1 = sorted((a, b))
    if x0 == x1:
        return
    px0, py0, px1, py1 = pixel_box((x0, x0, x1, x1), width, height)
    assert 0 <= px0 < px1 <= width and 0 <= py0 < py1 <= height
