"""ControlNet through the whole engine: units in a GenerationRequest steer txt2img, img2img, Hires and batches."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.config import EngineConfig, Limits
from engine.control.library import legacy_hash
from engine.errors import EngineError
from engine.infotext import parse_infotext
from engine.render.pipeline import Engine, RenderResult
from engine.request import GenerationRequest

SIZE = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_sd15: Path, tiny_controlnets: dict[str, Path]) -> Path:
    """tiny-sd15 with its ControlNet as a diffusers folder and as a single file (same weights), an SDXL one."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_sd15, root / "tiny-sd15")
    (root / "ControlNet").mkdir()
    shutil.copytree(tiny_controlnets["sd15-folder"], root / "ControlNet" / "tiny-canny-folder")
    shutil.copy(tiny_controlnets["sd15-file"], root / "ControlNet" / "control_tiny_sd15_canny.safetensors")
    shutil.copy(tiny_controlnets["sdxl-file"], root / "ControlNet" / "tiny_xl_canny.safetensors")
    return root


@pytest.fixture(scope="module")
def engine(models: Path) -> Engine:
    return Engine(EngineConfig(models_dir=models))


@pytest.fixture(scope="module")
def pose(tmp_path_factory) -> str:
    """A control image: shapes with clear edges (canny finds lines in it)."""
    image = Image.new("RGB", (128, 96), (20, 20, 20))  # wider than the job: crop and fill differ
    pixels = np.array(image)
    pixels[10:60, 20:80] = (230, 200, 40)
    pixels[65:90, 5:50] = (40, 120, 250)
    path = tmp_path_factory.mktemp("control") / "pose.png"
    Image.fromarray(pixels).save(path)
    return str(path)


def _request(pose: str, *units: dict[str, Any], **fields: Any) -> GenerationRequest:
    controls = [{"model": "control_tiny_sd15_canny", "module": "canny", "image": pose, **u} for u in units]
    base = dict(prompt="a photo of a cat", steps=4, sampler="Euler", seed=3, width=SIZE, height=SIZE, vae="none")
    settings: Any = tuple(controls)  # mappings become units in the request
    return GenerationRequest(**{**base, **fields}, controls=settings)


def _pixels(result: RenderResult) -> list[np.ndarray]:
    return [np.asarray(image.image) for image in result.images]


def _same(a: RenderResult, b: RenderResult) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(_pixels(a), _pixels(b), strict=True))


def test_weight_zero_and_end_zero_are_pixel_equal_to_no_controlnet(engine: Engine, pose: str) -> None:
    plain = engine.render(_request(pose))
    assert _same(engine.render(_request(pose, {"weight": 0.0})), plain)
    assert _same(engine.render(_request(pose, {"guidance_end": 0.0})), plain)
    assert not _same(engine.render(_request(pose, {})), plain)


def test_single_file_and_diffusers_folder_render_the_same(engine: Engine, pose: str) -> None:
    single = engine.render(_request(pose, {}))
    folder = engine.render(_request(pose, {"model": "tiny-canny-folder"}))
    assert _same(single, folder)


def test_infotext_has_the_units_entries_and_reads_back(engine: Engine, pose: str, models: Path) -> None:
    result = engine.render(_request(pose, {"weight": 0.8, "control_mode": "prompt"}, {"module": "invert"}))
    info = parse_infotext(result.images[0].infotext)
    label = f"control_tiny_sd15_canny [{legacy_hash(models / 'ControlNet' / 'control_tiny_sd15_canny.safetensors')}]"
    assert info.params["ControlNet 0"] == (
        f"Module: canny, Model: {label}, Weight: 0.8, Resize Mode: Crop and Resize, Processor Res: 512, "
        "Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, "
        "Control Mode: My prompt is more important"
    )
    assert info.params["ControlNet 1"].startswith("Module: invert (from white bg & black line), ")
    assert "pose.png" not in result.images[0].infotext  # the control image is not part of an infotext


def test_modes_steps_and_resize_each_change_the_image(engine: Engine, pose: str) -> None:
    renders = [
        engine.render(_request(pose, {})),
        engine.render(_request(pose, {"control_mode": "control"})),
        engine.render(_request(pose, {"guidance_start": 0.5})),
        engine.render(_request(pose, {"resize_mode": "fill"})),
        engine.render(_request(pose, {"module": "none"})),
    ]
    for i, a in enumerate(renders):
        for b in renders[i + 1 :]:
            assert not _same(a, b)


def test_a_batched_image_equals_its_solo_run(engine: Engine, pose: str) -> None:
    batch = engine.render(_request(pose, {}, batch_size=2))
    second = engine.render(_request(pose, {}, seed=4))
    assert np.array_equal(_pixels(batch)[1], _pixels(second)[0])


def test_img2img_and_hires_second_pass_are_steered(engine: Engine, pose: str) -> None:
    calls = _count_controlnet_calls(engine, _request(pose, {}, hires=2.0, hires_steps=3))
    assert calls == 4 + 3  # both passes, as the extension does by default
    img2img = dict(init_image=pose, strength=0.5)
    assert not _same(engine.render(_request(pose, {}, **img2img)), engine.render(_request(pose, **img2img)))
    assert _count_controlnet_calls(engine, _request(pose, {}, **img2img)) == 3  # A1111 runs int(0.5 * 4) + 1


def _count_controlnet_calls(engine: Engine, request: GenerationRequest) -> int:
    ckpt = engine.models.checkpoint("")
    file = engine.controls.library.find("control_tiny_sd15_canny")
    model = engine.controls.cache.get(file, dict(ckpt.pipe.unet.config), str(ckpt.file.path.resolve()), "")
    calls, original = [0], model.forward

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    model.forward = counting
    try:
        engine.render(request)
    finally:
        del model.forward
    return calls[0]


def test_changing_units_never_reloads_the_checkpoint(engine: Engine, pose: str) -> None:
    engine.render(_request(pose))
    loads = engine.models.disk_loads
    for unit in ({}, {"model": "tiny-canny-folder"}, {"weight": 0.3, "module": "threshold"}):
        engine.render(_request(pose, unit))
    assert engine.models.disk_loads == loads


def test_lora_and_units_together(engine: Engine, pose: str, models: Path) -> None:
    from engine.tiny.networks import write_network

    (models / "Lora").mkdir(exist_ok=True)
    write_network(engine.models.checkpoint("").pipe, models / "Lora" / "detail.safetensors")
    with_lora = dict(prompt="a photo of a cat <lora:detail:1>")
    steered = engine.render(_request(pose, {}, **with_lora))
    assert not _same(steered, engine.render(_request(pose, **with_lora)))
    assert "Lora hashes" in steered.images[0].infotext and "ControlNet 0" in steered.images[0].infotext


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        ({"model": "control_v11p_sd15_openpose"}, "ControlNet model 'control_v11p_sd15_openpose' not found; available"),
        ({"model": "tiny_xl_canny"}, "ControlNet tiny_xl_canny is for SDXL; the checkpoint tiny-sd15 is SD 1.x"),
        ({"module": "openpose"}, "the openpose preprocessor is not available in sdbot"),
    ],
)
def test_unusable_units_fail_in_one_line(engine: Engine, pose: str, unit: dict, message: str) -> None:
    with pytest.raises(EngineError) as err:
        engine.render(_request(pose, unit))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_bad_control_image_is_one_line(engine: Engine, pose: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(EngineError, match=r"ControlNet unit 1's image \(broken.png\) is not a PNG, JPEG or WebP"):
        engine.render(_request(str(broken), {}))


def test_units_are_checked_in_the_request() -> None:
    with pytest.raises(EngineError, match="at most 1 ControlNet units per job"):
        _request("/x.png", {}, {}, limits=Limits(max_controlnet_units=1))
    with pytest.raises(EngineError, match="ControlNet is turned off on this server"):
        _request("/x.png", {}, limits=Limits(max_controlnet_units=0))
    with pytest.raises(EngineError, match="has no control image: give one"):
        _request("", {})


def test_units_are_part_of_the_batch_key_and_travel_as_bytes(pose: str) -> None:
    """Jobs batch only with the same units; `portable` carries each control image's bytes, results drop them."""
    one, other = _request(pose, {}), _request(pose, {"weight": 0.5})
    assert one.batch_key() == _request(pose, {}).batch_key() and one.batch_key() != other.batch_key()
    portable = one.portable()
    assert portable.controls[0].image_data == Path(pose).read_bytes()
    assert portable == one  # the bytes in transit do not make another request
    assert portable.without_image_data().controls[0].image_data == b""


def test_sdxl_checkpoint_with_its_controlnet(tmp_path: Path, tiny_sdxl: Path, tiny_controlnets, pose: str) -> None:
    root = tmp_path / "models"
    shutil.copytree(tiny_sdxl, root / "tiny-sdxl")
    (root / "ControlNet").mkdir()
    shutil.copy(tiny_controlnets["sdxl-file"], root / "ControlNet" / "tiny_xl_canny.safetensors")
    shutil.copytree(tiny_controlnets["sdxl-union"], root / "ControlNet" / "tiny-xl-union")
    engine = Engine(EngineConfig(models_dir=root))
    plain = engine.render(_request(pose))
    for model in ("tiny_xl_canny", "tiny-xl-union"):
        steered = engine.render(_request(pose, {"model": model}))
        assert not _same(steered, plain)
        assert _same(engine.render(_request(pose, {"model": model, "weight": 0.0})), plain)


@pytest.fixture(scope="module")
def inpainting(tmp_path_factory, tiny_sd15: Path, tiny_controlnets) -> tuple[Engine, dict[str, str]]:
    """An engine with the tiny SD 1.x checkpoint, its inpainting twin (9-channel UNet) and the tiny ControlNet;
    a start image, a mask and a wide image with its mask for "Only masked"."""
    from engine.tiny.models import write_tiny_model

    root = tmp_path_factory.mktemp("inpaint-control")
    shutil.copytree(tiny_sd15, root / "models" / "sd15")
    write_tiny_model(root / "models" / "sd15-inpainting", inpainting=True)
    (root / "models" / "ControlNet").mkdir()
    shutil.copy(tiny_controlnets["sd15-file"], root / "models" / "ControlNet" / "control_tiny_sd15_canny.safetensors")
    rng = np.random.default_rng(5)
    files = {}
    for name, size in (("init", (SIZE, SIZE)), ("wide", (96, SIZE))):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / f"{name}.png")
        mask = Image.new("L", size, 0)
        mask.paste(255, (16, 16, 48, 48))
        mask.save(root / f"{name}-mask.png")
        files[name], files[f"{name}-mask"] = str(root / f"{name}.png"), str(root / f"{name}-mask.png")
    return Engine(EngineConfig(models_dir=root / "models")), files


@pytest.mark.parametrize("model", ["sd15", "sd15-inpainting"])
@pytest.mark.parametrize("area", ["whole", "masked"])
def test_inpainting_with_controlnet(inpainting, pose: str, model: str, area: str) -> None:
    """Inpaint (a 4- or 9-channel checkpoint, the whole picture or only the masked region) steered by a unit; weight
    0 renders exactly the plain inpaint."""
    engine, files = inpainting
    image = "wide" if area == "masked" else "init"
    job = dict(model=model, init_image=files[image], mask=files[f"{image}-mask"], inpaint_area=area, strength=0.8)
    plain = engine.render(_request(pose, **job))
    steered = engine.render(_request(pose, {}, **job))
    assert not _same(steered, plain)
    assert _same(engine.render(_request(pose, {"weight": 0.0}, **job)), plain)
    assert "ControlNet 0" in steered.images[0].infotext


def test_only_masked_crops_the_control_image_like_the_job(pose: str, tmp_path: Path) -> None:
    """The control image is resized to the image's size, cropped to the rendered region, then filled to the job's
    size (sd-webui-controlnet's `try_crop_image_with_a1111_mask`)."""
    from engine.render.control_units import control_image

    marked = np.zeros((64, 96, 3), dtype=np.uint8)
    marked[:, 48:] = 255  # the right half white
    path = tmp_path / "marked.png"
    Image.fromarray(marked).save(path)

    class Prepared:
        paste_to = (48, 0, 48, 64)  # the right half of a 96x64 image
        layer = Image.new("RGBA", (96, 64))

    class Masked:
        prepared = Prepared()

    unit = GenerationRequest(prompt="x", width=64, height=64, controls=({"image": str(path)},)).controls[0]
    request = GenerationRequest(prompt="x", width=64, height=64, controls=(unit,))
    cropped = control_image(unit, request, 1, Masked())  # type: ignore[arg-type]
    assert cropped.shape == (64, 64, 3) and cropped.min() > 200  # only the white half is left
