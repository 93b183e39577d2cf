"""The grid image: A1111's layout (slots, padding, label placement, wrapping, Z side by side), checked on pixels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from engine.render.grid import Annotation, draw_annotations, font, image_grid, xyz_grid

W, H = 200, 100  # font size (200 + 100) // 25 = 12, line spacing 6


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (W, H)) -> Image.Image:
    return Image.new("RGB", size, colour)


COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


def ink(image: Image.Image, box: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """The bounding box (in `image` coordinates) of the dark pixels inside `box`."""
    region = np.asarray(image.crop(box).convert("L"))
    ys, xs = np.nonzero(region < 128)
    if not len(xs):
        return None
    return box[0] + xs.min(), box[1] + ys.min(), box[0] + xs.max() + 1, box[1] + ys.max() + 1


def text_height(text: str, size: int = 12) -> int:
    _, y0, _, y1 = ImageDraw.Draw(Image.new("RGB", (1, 1))).multiline_textbbox((0, 0), text, font=font(size))
    return int(y1 - y0)


def test_image_grid_slots_and_centring():
    images = [solid(COLOURS[0]), solid(COLOURS[1], (100, 60)), solid(COLOURS[2])]
    grid = image_grid(images, rows=2)
    assert grid.size == (2 * W, 2 * H)  # 3 images in 2 rows: 2 columns
    assert grid.getpixel((0, 0)) == COLOURS[0]
    assert grid.getpixel((W + 50, 20)) == COLOURS[1]  # the small image is centred in its slot: (50, 20) .. (150, 80)
    assert grid.getpixel((W + 10, 10)) == (255, 255, 255)
    assert grid.getpixel((10, H + 10)) == COLOURS[2]
    assert grid.getpixel((W + 10, H + 10)) == (255, 255, 255)  # the empty slot is background


def test_rows_are_capped_by_the_image_count():
    assert image_grid([solid(COLOURS[0])], rows=3).size == (W, H)


def test_padding_as_a1111_computes_it():
    grid = image_grid([solid(c) for c in COLOURS], rows=2)
    out = draw_annotations(
        grid,
        W,
        H,
        [[Annotation(f"Steps: {s}")] for s in (10, 20, 30)],
        [[Annotation("CFG Scale: 5.0")], [Annotation("CFG Scale: 7.0")]],
    )
    spacing = 12 // 2
    pad_top = text_height("Steps: 10") + spacing * 2
    pad_left = W * 3 // 4
    assert out.size == (3 * W + pad_left, 2 * H + pad_top)
    for i, colour in enumerate(COLOURS):
        col, row = i % 3, i // 3
        cell = out.crop((pad_left + W * col, pad_top + H * row, pad_left + W * (col + 1), pad_top + H * (row + 1)))
        assert cell.getcolors() == [(W * H, colour)]


def test_labels_are_centred_over_their_columns_and_rows():
    grid = image_grid([solid(c) for c in COLOURS[:4]], rows=2)
    out = draw_annotations(
        grid,
        W,
        H,
        [[Annotation("Steps: 10")], [Annotation("Steps: 20")]],
        [[Annotation("Euler")], [Annotation("Euler a")]],
    )
    pad_left, pad_top = W * 3 // 4, out.height - 2 * H
    for col in range(2):
        box = ink(out, (pad_left + W * col, 0, pad_left + W * (col + 1), pad_top))
        assert box is not None
        assert abs((box[0] + box[2]) / 2 - (pad_left + W * col + W / 2)) <= 2
    for row in range(2):
        box = ink(out, (0, pad_top + H * row, pad_left, pad_top + H * (row + 1)))
        assert box is not None
        assert abs((box[0] + box[2]) / 2 - pad_left / 2) <= 2
        assert pad_top + H * row < box[1] < box[3] < pad_top + H * (row + 1)
    assert ink(out, (0, 0, pad_left, pad_top)) is None  # the corner stays empty


def test_no_left_labels_no_left_column_and_no_top_labels_no_top_band():
    grid = image_grid([solid(c) for c in COLOURS[:2]], rows=1)
    out = draw_annotations(grid, W, H, [[Annotation("a")], [Annotation("b")]], [[Annotation("")]])
    assert out.width == 2 * W and out.height > H
    bare = draw_annotations(grid, W, H, [[Annotation("")], [Annotation("")]], [[Annotation("")]])
    assert bare.tobytes() == grid.tobytes()


def test_a_long_label_wraps_to_the_column_width():
    grid = image_grid([solid(COLOURS[0]), solid(COLOURS[1])], rows=1)
    short = draw_annotations(grid, W, H, [[Annotation("Prompt")], [Annotation("x")]], [[Annotation()]])
    long_text = "a very long prompt replacement that cannot fit in one line of the cell"
    wrapped = draw_annotations(grid, W, H, [[Annotation(long_text)], [Annotation("x")]], [[Annotation()]])
    assert wrapped.height > short.height + text_height("Prompt")  # several lines in the top band
    box = ink(wrapped, (0, 0, W, wrapped.height - H))
    assert box is not None and box[2] - box[0] <= W


def test_a_word_wider_than_the_column_is_drawn_smaller():
    narrow = W // 4
    grid = image_grid([solid(COLOURS[0], (narrow, H))], rows=1)
    word = "Supercalifragilisticexpialidocious"
    out = draw_annotations(grid, narrow, H, [[Annotation(word)]], [[Annotation()]])
    box = ink(out, (0, 0, out.width, out.height - H))
    assert box is not None and box[2] - box[0] <= narrow


def test_margin_between_cells():
    grid = image_grid([solid(c) for c in COLOURS[:4]], rows=2)
    out = draw_annotations(grid, W, H, [[Annotation("")]] * 2, [[Annotation("")]] * 2, margin=10)
    assert out.size == (2 * W + 10, 2 * H + 10)
    assert out.getpixel((W + 5, 5)) == (255, 255, 255)
    assert out.getpixel((W + 10, 0)) == COLOURS[1]


def test_label_count_must_match_the_grid():
    grid = image_grid([solid(c) for c in COLOURS[:2]], rows=1)
    with pytest.raises(ValueError, match="1 top and 1 left labels for a grid of 2 x 1 cells"):
        draw_annotations(grid, W, H, [[Annotation("a")]], [[Annotation()]])


def test_inactive_lines_are_grey_and_struck_through():
    grid = image_grid([solid((255, 255, 255))], rows=1)
    out = draw_annotations(grid, W, H, [[Annotation("off", active=False)]], [[Annotation()]])
    band = np.asarray(out.crop((0, 0, W, out.height - H)))
    assert (band == 153).all(axis=2).sum() > 4 * text_height("off")  # the strike line is grey, 4 px high
    assert ink(out, (0, 0, W, out.height - H)) is None  # nothing black


def test_xyz_without_z_is_the_annotated_xy_grid():
    cells = [solid(c) for c in COLOURS]
    plot = xyz_grid(cells, ["Steps: 1", "Steps: 2", "Steps: 3"], ["Euler", "Euler a"])
    assert len(plot.sub_grids) == 1
    assert plot.image.tobytes() == plot.sub_grids[0].tobytes()  # the empty Z title adds nothing
    expected = draw_annotations(
        image_grid(cells, rows=2),
        W,
        H,
        [[Annotation(t)] for t in ("Steps: 1", "Steps: 2", "Steps: 3")],
        [[Annotation("Euler")], [Annotation("Euler a")]],
    )
    assert plot.image.tobytes() == expected.tobytes()


def test_xyz_puts_z_sub_grids_side_by_side_with_their_titles():
    cells = [solid(c) for c in COLOURS[:4]]
    plot = xyz_grid(cells, ["Steps: 1", "Steps: 2"], [""], ["Seed: 1", "Seed: 2"])
    sub_w, sub_h = plot.sub_grids[0].size
    assert len(plot.sub_grids) == 2 and plot.sub_grids[1].size == (sub_w, sub_h)
    title_font = (sub_w + sub_h) // 25
    pad_top = text_height("Seed: 1", title_font) + title_font // 2 * 2
    assert plot.image.size == (2 * sub_w, sub_h + pad_top)
    for iz in range(2):
        pasted = plot.image.crop((sub_w * iz, pad_top, sub_w * (iz + 1), pad_top + sub_h))
        assert pasted.tobytes() == plot.sub_grids[iz].tobytes()
        box = ink(plot.image, (sub_w * iz, 0, sub_w * (iz + 1), pad_top))
        assert box is not None and abs((box[0] + box[2]) / 2 - (sub_w * iz + sub_w / 2)) <= 2
    # the second sub-grid holds cells 2 and 3 (index ix + iy*nx + iz*nx*ny)
    assert plot.sub_grids[1].getpixel((5, sub_h - 5)) == COLOURS[2]
    assert plot.sub_grids[1].getpixel((sub_w - 5, sub_h - 5)) == COLOURS[3]


def test_a_missing_cell_is_black():
    plot = xyz_grid([solid(COLOURS[0]), None], ["a", "b"], [""], legend=False)
    assert plot.image.getpixel((W + 5, 5)) == (0, 0, 0)
    assert plot.image.size == (2 * W, H)


def test_cell_count_must_match_the_axes():
    with pytest.raises(ValueError, match="3 cells for a 2 x 1 x 1 grid"):
        xyz_grid([solid(COLOURS[0])] * 3, ["a", "b"], [""])


words = st.lists(
    st.sampled_from(["Steps:", "20", "CFG", "Scale:", "7.5", "a", "photograph", "of", "DPM++"]), max_size=6
)


@settings(deadline=None, max_examples=40)
@given(
    cols=st.integers(1, 4),
    rows=st.integers(1, 3),
    size=st.tuples(st.integers(24, 120), st.integers(24, 120)),
    top=st.lists(words, min_size=4, max_size=4),
    left=st.lists(words, min_size=3, max_size=3),
    margin=st.integers(0, 12),
)
def test_every_layout_keeps_the_cells_and_pads_as_a1111(cols, rows, size, top, left, margin):
    w, h = size
    cells = [solid(COLOURS[i % len(COLOURS)], size) for i in range(cols * rows)]
    top_labels = [[Annotation(" ".join(t))] for t in top[:cols]]
    left_labels = [[Annotation(" ".join(t))] for t in left[:rows]]
    out = draw_annotations(image_grid(cells, rows), w, h, top_labels, left_labels, margin)
    pad_left = w * 3 // 4 if any(t for t in left[:rows]) else 0
    pad_top = out.height - rows * h - margin * (rows - 1)
    assert out.width == cols * w + pad_left + margin * (cols - 1)
    assert (pad_top == 0) == (not any(t for t in top[:cols]))
    for i in range(cols * rows):
        col, row = i % cols, i // cols
        x, y = pad_left + (w + margin) * col, pad_top + (h + margin) * row
        # a label too wide even in the smallest font may spill a pixel or two over the cell's edge, as in A1111
        inner = out.crop((x + 3, y + 3, x + w - 3, y + h - 3))
        assert inner.getcolors() == [((w - 6) * (h - 6), COLOURS[i % len(COLOURS)])]
