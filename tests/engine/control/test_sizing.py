"""engine.control.sizing: maps fitted to the job's size with the extension's three resize modes and rules."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.control.sizing import (
    CROP_AND_RESIZE,
    JUST_RESIZE,
    RESIZE_AND_FILL,
    RESIZE_MODES,
    fit_map,
    latent_aligned,
    map_to_tensor,
    pixel_perfect_resolution,
    thin_edges,
)


def _gradient(height: int, width: int) -> np.ndarray:
    """A smooth map with many colours (cubic/area interpolation applies)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], axis=2).astype(
        np.uint8
    )


def test_just_resize_stretches_to_the_size() -> None:
    source = _gradient(40, 80)
    result = fit_map(source, JUST_RESIZE, 64, 64)
    assert result.shape == (64, 64, 3)
    assert np.array_equal(result, cv2.resize(source, (64, 64), interpolation=cv2.INTER_CUBIC))


def test_crop_and_resize_fills_the_frame_and_crops_the_centre() -> None:
    """A wide map for a square job: scaled by the larger factor, the centre columns kept."""
    source = _gradient(32, 64)
    result = fit_map(source, CROP_AND_RESIZE, 64, 64)
    scaled = cv2.resize(source, (128, 64), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(result, scaled[:, 32:96])


def test_resize_and_fill_pads_with_the_median_border_colour() -> None:
    """A wide map for a square job: scaled by the smaller factor, centred, the rest the border's median colour."""
    source = np.full((32, 64, 3), 90, dtype=np.uint8)
    source[10:20, 10:50] = 250
    result = fit_map(source, RESIZE_AND_FILL, 64, 64)
    assert result.shape == (64, 64, 3)
    assert (result[:16] == 90).all() and (result[48:] == 90).all()
    assert (result[16:48] == 250).any()


def test_few_colour_maps_use_nearest_neighbour() -> None:
    """2 < colours < 200 (segmentation-like maps): nearest, so no new colours appear."""
    source = np.zeros((16, 16, 3), dtype=np.uint8)
    source[:8, :8] = (255, 0, 0)
    source[8:, 8:] = (0, 255, 0)
    result = fit_map(source, JUST_RESIZE, 48, 48)
    assert np.array_equal(result, cv2.resize(source, (48, 48), interpolation=cv2.INTER_NEAREST))


def test_binary_edge_maps_stay_binary_and_thin() -> None:
    """An edge map grown 4x stays black and white, with lines thinned back to about one pixel."""
    source = np.zeros((32, 32, 3), dtype=np.uint8)
    source[16, 4:28] = 255
    source[4:28, 8] = 255
    result = fit_map(source, JUST_RESIZE, 128, 128)
    assert set(np.unique(result)) <= {0, 255}
    assert np.array_equal(result[:, :, 0], result[:, :, 1])
    column = result[:, 64, 0]  # crosses the horizontal line once
    assert 1 <= np.count_nonzero(column) <= 2


def test_thin_edges_removes_thickness() -> None:
    thick = np.zeros((20, 20), dtype=np.uint8)
    thick[8:12, 2:18] = 255
    thin = thin_edges(thick, prune=False)
    assert 0 < np.count_nonzero(thin) < np.count_nonzero(thick)
    assert max(np.count_nonzero(thin[:, c]) for c in range(5, 15)) == 1


@pytest.mark.parametrize(
    ("image", "target", "mode", "expected"),
    [
        ((512, 512), (768, 512), CROP_AND_RESIZE, 768),
        ((512, 512), (768, 512), RESIZE_AND_FILL, 512),
        ((600, 800), (512, 512), CROP_AND_RESIZE, 512),
        ((600, 800), (512, 512), RESIZE_AND_FILL, 384),
        ((1024, 768), (512, 512), JUST_RESIZE, 512),
    ],
)
def test_pixel_perfect_resolution(image: tuple[int, int], target: tuple[int, int], mode: str, expected: int) -> None:
    """round(max(h/H, w/W) * min(H, W)), min(...) for Resize and Fill (external_code.pixel_perfect_resolution)."""
    assert pixel_perfect_resolution(*image, *target, mode) == expected


def test_map_tensor_is_rgb_in_unit_range() -> None:
    tensor = map_to_tensor(np.array([[[255, 0, 51]]], dtype=np.uint8))
    assert tuple(tensor.shape) == (1, 3, 1, 1)
    assert tensor.flatten().tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert latent_aligned(517) == 512


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(4, 90),
    width=st.integers(4, 90),
    target_h=st.integers(8, 96),
    target_w=st.integers(8, 96),
    mode=st.sampled_from(RESIZE_MODES),
    binary=st.booleans(),
)
def test_every_mode_gives_exactly_the_target_size(
    height: int, width: int, target_h: int, target_w: int, mode: str, binary: bool
) -> None:
    source = _gradient(height, width)
    if binary:
        source = np.where(source > 127, 255, 0).astype(np.uint8)
    assert fit_map(source, mode, target_h, target_w).shape == (target_h, target_w, 3)
