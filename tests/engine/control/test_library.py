"""engine.control.library: ControlNets found in models/ControlNet with their family, kind, legacy hash and problems."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.config import EngineConfig
from engine.control.library import ControlNetLibrary, describe, legacy_hash, recognise, strip_hash
from engine.errors import EngineError


@pytest.fixture
def library(tmp_path: Path, tiny_controlnets: dict[str, Path]) -> ControlNetLibrary:
    """models/ControlNet with the tiny ControlNets, one in a subfolder, and a few files that are not ControlNets."""
    root = tmp_path / "models" / "ControlNet"
    (root / "sdxl").mkdir(parents=True)
    shutil.copy(tiny_controlnets["sd15-file"], root / "control_tiny_sd15_canny.safetensors")
    shutil.copytree(tiny_controlnets["sd15-folder"], root / "tiny-sd15-diffusers")
    shutil.copy(tiny_controlnets["sdxl-file"], root / "sdxl" / "tiny_xl_canny.safetensors")
    shutil.copytree(tiny_controlnets["sdxl-union"], root / "sdxl" / "tiny-xl-union")
    save_file({"lora_unet_down.lora_down.weight": torch.zeros(2, 2)}, str(root / "some_lora.safetensors"))
    save_file({"adapter.body.0.resnets.0.block1.weight": torch.zeros(2, 2)}, str(root / "t2iadapter.safetensors"))
    torch.save({"x": torch.zeros(1)}, root / "control_sd15_old.pth")
    return ControlNetLibrary(EngineConfig(models_dir=tmp_path / "models"))


def test_lists_files_folders_and_subfolders_with_families(library: ControlNetLibrary) -> None:
    found = {f.name: (f.family, f.kind, bool(f.problem)) for f in library.files()}
    assert found == {
        "control_sd15_old": ("sd1", "controlnet", False),  # a pickle: listed by the extension's name rule
        "control_tiny_sd15_canny": ("sd1", "controlnet", False),
        "some_lora": ("", "controlnet", True),
        "t2iadapter": ("", "controlnet", True),
        "tiny-sd15-diffusers": ("sd1", "controlnet", False),
        "tiny-xl-union": ("sdxl", "union", False),
        "tiny_xl_canny": ("sdxl", "controlnet", False),
    }
    problems = {f.name: f.problem for f in library.files() if f.problem}
    assert problems["some_lora"].startswith("a LoRA")
    assert problems["t2iadapter"].startswith("a T2I-Adapter")


def test_find_by_name_label_or_part(library: ControlNetLibrary) -> None:
    assert library.find("control_tiny_sd15_canny").name == "control_tiny_sd15_canny"
    assert library.find("CONTROL_TINY_SD15_CANNY [0badc0de]").name == "control_tiny_sd15_canny"  # hash not checked
    assert library.find("xl_canny").name == "tiny_xl_canny"
    assert library.find("tiny-sd15-diffusers").is_folder


def test_unknown_name_lists_the_usable_ones(library: ControlNetLibrary) -> None:
    with pytest.raises(EngineError) as err:
        library.find("control_v11p_sd15_openpose [cab727d4]")
    message = str(err.value)
    assert message.startswith("ControlNet model 'control_v11p_sd15_openpose' not found; available: ")
    assert "tiny_xl_canny" in message and "some_lora" not in message
    with pytest.raises(EngineError, match="ControlNet t2iadapter cannot be used: it is a T2I-Adapter, not a"):
        library.find("t2iadapter")


def test_an_empty_library(tmp_path: Path) -> None:
    library = ControlNetLibrary(EngineConfig(models_dir=tmp_path))
    assert library.files() == []
    with pytest.raises(EngineError, match="none installed"):
        library.find("x")


def test_legacy_hash_is_a1111s_old_model_hash(tmp_path: Path) -> None:
    """sha256 of the 64 KiB at 1 MiB, first 8 hex digits; a file under 1 MiB hashes nothing (e3b0c442)."""
    data = bytes(range(256)) * (3 * 4096)
    path = tmp_path / "big.safetensors"
    path.write_bytes(data)
    assert legacy_hash(path) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    small = tmp_path / "small.safetensors"
    small.write_bytes(b"x" * 100)
    assert legacy_hash(small) == "e3b0c442"


def test_label_is_name_and_hash(library: ControlNetLibrary) -> None:
    file = library.find("tiny-sd15-diffusers")
    assert file.label == f"tiny-sd15-diffusers [{legacy_hash(file.weights)}]"
    assert strip_hash(file.label) == "tiny-sd15-diffusers"
    assert strip_hash("name [not a hash]") == "name [not a hash]"


HINT = {"input_hint_block.0.weight": [16, 3, 3, 3]}
DIFFUSERS_HINT = {"controlnet_cond_embedding.conv_in.weight": [16, 3, 3, 3]}
TASKS = "task_embedding"
NO = "which sdbot cannot use"
TO_K = "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        ({"control_model." + k: v for k, v in {**HINT, TO_K: [320, 768]}.items()}, ("sd1", "controlnet", "")),
        ({**HINT, TO_K: [320, 1024]}, ("sd2", "controlnet", "")),
        ({**HINT, "label_emb.0.0.weight": [1280, 2816]}, ("sdxl", "controlnet", "")),
        ({**DIFFUSERS_HINT, "add_embedding.linear_1.weight": [1280, 2816]}, ("sdxl", "controlnet", "")),
        ({**DIFFUSERS_HINT, "add_embedding.linear_1.weight": [1, 1], TASKS: [8, 320]}, ("sdxl", "union", "")),
        ({**DIFFUSERS_HINT, TASKS: [8, 320]}, ("", "union", "a ControlNet Union for a model other than SDXL, " + NO)),
    ],
)  # fmt: skip
def test_recognise_families_from_shapes(shapes: dict, expected: tuple) -> None:
    assert recognise(shapes) == expected


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        (["input_hint_block.0.weight", "lora_controlnet"], "a Control-LoRA"),
        (["input_hint_block.0.weight", "difference"], "a 'difference' ControlNet"),
        (["image_proj.proj.weight", "ip_adapter.1.to_k_ip.weight"], "an IP-Adapter"),
        (["model.diffusion_model.input_blocks.0.0.weight"], "a Stable Diffusion checkpoint"),
        (["lllite_unet_foo.down.weight"], "a ControlNet-LLLite"),
        (["something.else"], "not a ControlNet"),
    ],
)
def test_other_files_say_what_they_are(keys: list[str], problem: str) -> None:
    assert recognise({k: [1] for k in keys})[2].startswith(problem)


def test_a_folder_without_weights_or_with_another_model(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    assert "describes a UNet2DConditionModel" in describe(folder).problem
    (folder / "config.json").write_text('{"_class_name": "ControlNetModel", "cross_attention_dim": 768}')
    assert describe(folder).problem == "the folder holds no diffusion_pytorch_model weights"


def _fake_controlnet(path: Path, sdxl: bool = False, union: bool = False) -> None:
    """A file recognised as a ControlNet of a family (only its header matters to the library)."""
    tensors = {"controlnet_cond_embedding.conv_in.weight": torch.zeros(1)}
    if sdxl:
        tensors["add_embedding.linear_1.weight"] = torch.zeros(1)
    else:
        tensors["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"] = torch.zeros(2, 768)
    if union:
        tensors["task_embedding"] = torch.zeros(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def test_default_model_for_a_module_as_the_extension_picks_it(tmp_path: Path) -> None:
    from engine.control.preprocessors import preprocessor

    root = tmp_path / "ControlNet"
    for name in ("control_sd15_canny", "control_v11p_sd15_canny", "control_v11p_sd15_scribble_sketch", "t2i_style"):
        _fake_controlnet(root / f"{name}.safetensors")
    _fake_controlnet(root / "diffusers_xl_canny_mid.safetensors", sdxl=True)
    _fake_controlnet(root / "xinsir_union_promax.safetensors", sdxl=True, union=True)
    library = ControlNetLibrary(EngineConfig(models_dir=tmp_path))
    assert library.default_for(preprocessor("canny"), "sd1").name == "control_v11p_sd15_canny"  # v1.1 first
    assert library.default_for(preprocessor("canny"), "sdxl").name == "diffusers_xl_canny_mid"
    assert library.default_for(preprocessor("depth_anything"), "sdxl").name == "xinsir_union_promax"
    assert library.default_for(preprocessor("invert"), "sd1").name == "control_v11p_sd15_canny"  # its first tag
    with pytest.raises(EngineError, match="no ControlNet in .* fits module depth_anything for SD 1.x"):
        library.default_for(preprocessor("depth_anything"), "sd1")
