"""engine.control.maps and annotators: a unit's map from its module, resolution and the admin's annotator folder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.control.annotators import Annotators, depth_anything_map, depth_anything_size
from engine.control.maps import detected_map, fitted, processor_resolution
from engine.control.preprocessors import preprocessor
from engine.control.units import ControlUnit
from engine.errors import EngineError
from engine.tiny.controlnet import write_tiny_depth_model


def _image(height: int, width: int) -> np.ndarray:
    image = np.full((height, width, 3), 30, dtype=np.uint8)
    cv2.rectangle(image, (width // 4, height // 4), (3 * width // 4, 3 * height // 4), (220, 180, 40), -1)
    return image


@pytest.fixture(scope="module")
def annotator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An annotator folder with a tiny random Depth Anything model (transformers layout) as `depth_anything`."""
    root = tmp_path_factory.mktemp("annotators")
    write_tiny_depth_model(root / "depth_anything")
    return root


def test_an_opencv_unit_map_is_its_preprocessor_at_its_resolution() -> None:
    image = _image(200, 300)
    unit = ControlUnit(model="m", module="canny", processor_res=128)
    detected = detected_map(unit, image, 512, 512)
    assert detected.shape == (128, 192, 3)
    tensor = fitted(unit, detected, 512, 512)
    assert tuple(tensor.shape) == (1, 3, 512, 512)
    assert tuple(fitted(unit, detected, 1024, 768).shape) == (1, 3, 768, 1024)  # the Hires pass: same map


def test_pixel_perfect_resolution_follows_the_job() -> None:
    """With Pixel Perfect the processor resolution makes the map the job's size (the typed one is ignored)."""
    image = _image(300, 400)
    unit = ControlUnit(model="m", module="canny", pixel_perfect=True, processor_res=64)
    assert processor_resolution(unit, image, 768, 512) == 576  # Crop and Resize: max(512/300, 768/400) * 300
    assert processor_resolution(unit.replace(resize_mode="fill"), image, 768, 512) == 512
    assert processor_resolution(unit.replace(pixel_perfect=False), image, 768, 512) == 64


def test_weighted_modules_are_offered_only_with_their_folder(annotator_dir: Path) -> None:
    assert Annotators(None).offered() == []
    offered = Annotators(annotator_dir).offered()
    assert [p.name for p in offered] == ["depth_anything"]  # no depth_anything_v2 folder: not offered
    unit = ControlUnit(model="m", module="depth_anything_v2")
    with pytest.raises(EngineError, match=r"needs its weights in .*depth_anything_v2 \(a transformers"):
        detected_map(unit, _image(64, 64), 512, 512, Annotators(annotator_dir))
    with pytest.raises(EngineError, match=r"needs its weights in a folder named in \[engine\] control_annotators"):
        detected_map(unit, _image(64, 64), 512, 512)


def test_modules_sdbot_cannot_compute_say_so() -> None:
    with pytest.raises(EngineError, match="the openpose preprocessor is not available in sdbot; give an image"):
        detected_map(ControlUnit(model="m", module="openpose"), _image(64, 64), 512, 512)


def test_depth_anything_map_spans_the_full_range(annotator_dir: Path) -> None:
    """Min-max stretched to 0..255 at the padded-then-cropped size of the processor resolution."""
    annotators = Annotators(annotator_dir)
    unit = ControlUnit(model="m", module="depth_anything", processor_res=64)
    detected = detected_map(unit, _image(100, 150), 512, 512, annotators)
    assert detected.shape == (64, 96, 3) and detected.dtype == np.uint8
    assert np.array_equal(detected[:, :, 0], detected[:, :, 2])
    assert annotators.offered() == [preprocessor("depth_anything")]
    raw = depth_anything_map(annotators._model(preprocessor("depth_anything")), _image(64, 128))
    assert raw.shape == (64, 128) and (raw.min(), raw.max()) == (0, 255)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((512, 512), (518, 518)), ((512, 768), (518, 784)), ((64, 128), (518, 1036)), ((1000, 700), (742, 518))],
)
def test_depth_anything_input_size(size: tuple[int, int], expected: tuple[int, int]) -> None:
    """Short side at least 518, aspect kept, multiples of 14 (nearest, else the next one up)."""
    assert depth_anything_size(*size) == expected
