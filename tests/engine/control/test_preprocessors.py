"""engine.control.preprocessors: the OpenCV modules compute the extension's maps (canny = cv2.Canny)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.control.preprocessors import (
    PREPROCESSORS,
    detect_map,
    hwc3,
    opencv_modules,
    preprocessor,
    resize_with_pad,
)
from engine.errors import EngineError


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth shapes with hard edges, so edge detectors find lines (not pure noise)."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 200, dtype=np.uint8)
    for _ in range(6):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.circle(image, (x, y), int(rng.integers(5, max(6, min(height, width) // 3))), colour, -1)
        cv2.rectangle(image, (x // 2, y // 2), (x, y), colour, 2)
    return image


@pytest.mark.parametrize(("low", "high"), [(100, 200), (50, 150), (1, 255)])
def test_canny_map_is_opencvs_at_the_same_thresholds(low: int, high: int) -> None:
    """At its processor resolution (short side) and a size on the 64 grid, canny is exactly cv2.Canny, as RGB."""
    image = _photo(128, 192)
    result = detect_map(preprocessor("canny"), image, 128, low, high)
    expected = cv2.Canny(image, low, high)
    assert result.shape == (128, 192, 3)
    assert np.array_equal(result[:, :, 0], expected)
    assert np.array_equal(result[:, :, 0], result[:, :, 2])
    assert expected.any()


def test_canny_other_sizes_run_on_the_resized_padded_image() -> None:
    """Elsewhere the extension resizes the short side to the resolution, edge-pads to 64 and crops back."""
    image = _photo(100, 150, seed=3)
    padded, remove_pad = resize_with_pad(image, 96)
    assert padded.shape[0] % 64 == 0 and padded.shape[1] % 64 == 0
    result = detect_map(preprocessor("canny"), image, 96, 100, 200)
    assert result.shape == (96, 144, 3)
    assert np.array_equal(result[:, :, 0], remove_pad(cv2.Canny(padded, 100, 200)))


def test_resize_with_pad_interpolation_follows_the_scale() -> None:
    """Cubic when growing, area when shrinking (the extension's rule); pad replicates the edge."""
    image = _photo(50, 70, seed=1)
    grown, crop = resize_with_pad(image, 100)
    assert np.array_equal(crop(grown), cv2.resize(image, (140, 100), interpolation=cv2.INTER_CUBIC))
    shrunk, crop = resize_with_pad(image, 25)
    assert np.array_equal(crop(shrunk), cv2.resize(image, (35, 25), interpolation=cv2.INTER_AREA))
    assert np.array_equal(grown[100:, :140], np.repeat(grown[99:100, :140], grown.shape[0] - 100, axis=0))


def test_invert_threshold_and_tile_resample() -> None:
    image = _photo(64, 64, seed=2)
    assert np.array_equal(detect_map(preprocessor("invert"), image, 512, 0.5, 0.5), 255 - image)
    binary = detect_map(preprocessor("threshold"), image, 64, 127, 0.5)
    assert set(np.unique(binary)) <= {0, 255}
    assert np.array_equal(binary[:, :, 0] == 255, image.min(axis=2) > 127)
    assert np.array_equal(detect_map(preprocessor("tile_resample"), image, 512, 1.0, 0.5), image)
    assert detect_map(preprocessor("tile_resample"), image, 512, 2.0, 0.5).shape == (32, 32, 3)


def test_scribble_lineart_and_blur_give_maps_of_the_resized_size() -> None:
    image = _photo(64, 96, seed=4)
    for name, a in (("scribble_xdog", 32), ("lineart_standard", 0.5), ("blur_gaussian", 9.0)):
        result = detect_map(preprocessor(name), image, 64, a, 0.5)
        assert result.shape == (64, 96, 3) and result.dtype == np.uint8, name
    assert set(np.unique(detect_map(preprocessor("scribble_xdog"), image, 64, 32, 0.5))) <= {0, 255}


def test_lookup_by_name_or_label_case_insensitive() -> None:
    """The extension accepts a module's label (what its UI writes) or its name (what its API takes)."""
    assert preprocessor("invert (from white bg & black line)").name == "invert"
    assert preprocessor("INVERT").name == "invert"
    assert preprocessor("depth_midas").name == "depth"
    assert preprocessor("lineart_realistic").name == "lineart"
    with pytest.raises(EngineError, match="unknown ControlNet preprocessor 'sobel'; valid: none, canny"):
        preprocessor("sobel")


def test_the_opencv_modules_and_their_defaults() -> None:
    assert opencv_modules() == [
        "none",
        "canny",
        "invert",
        "tile_resample",
        "threshold",
        "scribble_xdog",
        "blur_gaussian",
        "lineart_standard",
    ]
    canny = preprocessor("canny")
    assert (canny.default_a(), canny.default_b()) == (100, 200)
    assert (preprocessor("none").default_a(), preprocessor("none").default_b()) == (0.5, 0.5)
    assert len({p.name for p in PREPROCESSORS}) == len(PREPROCESSORS)
    with pytest.raises(EngineError, match="not computed with OpenCV"):
        detect_map(preprocessor("openpose"), _photo(64, 64), 512, 0.5, 0.5)


def test_hwc3_grey_and_alpha_over_white() -> None:
    grey = np.array([[10, 200]], dtype=np.uint8)
    assert hwc3(grey).shape == (1, 2, 3)
    rgba = np.array([[[0, 0, 0, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    assert hwc3(rgba).tolist() == [[[255, 255, 255], [0, 0, 0]]]


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(8, 80),
    width=st.integers(8, 80),
    resolution=st.integers(16, 96),
    module=st.sampled_from(opencv_modules()),
)
def test_every_opencv_module_returns_three_channel_uint8(height: int, width: int, resolution: int, module: str) -> None:
    """Whatever the sizes, an OpenCV module returns a uint8 RGB map and never raises."""
    found = preprocessor(module)
    result = detect_map(found, _photo(height, width), resolution, found.default_a(), found.default_b())
    assert result.ndim == 3 and result.shape[2] == 3 and result.dtype == np.uint8
