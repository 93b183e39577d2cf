"""The ControlNets in `<models_dir>/ControlNet/` (subfolders allowed): names, families, kinds and hashes.

What counts as a ControlNet, as sd-webui-controlnet recognises it (scripts/controlnet_model_guess.py):
- a single file in the original layout: `input_hint_block.*`, `zero_convs.*` keys, usually under `control_model.`
  (e.g. control_v11p_sd15_canny.safetensors); SDXL ones carry `label_emb.*`;
- a single file or a folder (config.json + weights) in the diffusers layout: `controlnet_cond_embedding.*`;
- a ControlNet Union (xinsir): the diffusers layout plus `control_add_embedding.*` and `task_embedding`.
The family (SD 1.x, SD 2.x, SDXL) is read from the weights' shapes in the safetensors header, never from the name,
except for pickle files, which are not opened to be listed (the extension's name rule then: sd15 / xl). Files that
are something else (a T2I-Adapter, an IP-Adapter, a Control-LoRA, a checkpoint) are listed as unusable with the
reason. A model's name is its file stem (a folder's name); the extension writes it in infotexts as
`name [hash]` with A1111's legacy 8-digit hash of the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from engine.config import EngineConfig
from engine.control.preprocessors import Preprocessor
from engine.errors import EngineError
from engine.models.state_dict import PICKLE_SUFFIXES, SAFE_SUFFIXES
from engine.networks.library import safetensors_header

CONTROLNET_DIR = "ControlNet"
ORIGINAL_PREFIX = "control_model."
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")

# The extension's aliases of control types in model names, and the types a ControlNet Union serves
# (scripts/supported_preprocessor.py `tag_to_filters`, scripts/enums.py `ControlNetUnionControlType.all_tags`).
_TAG_ALIASES = {"scribble": ("sketch",), "tile": ("blur",), "normalmap": ("normal",), "openpose": ("densepose",)}
_UNION_TAGS = ("openpose", "depth", "softedge", "scribble", "canny", "lineart", "mlsd", "normalmap", "tile")

_legacy_hashes: dict[tuple[str, int, float], str] = {}


def legacy_hash(path: Path) -> str:
    """A1111's old model hash (`sd_models.model_hash`): sha256 of the 64 KiB at offset 1 MiB, 8 hex digits."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime)
    if key not in _legacy_hashes:
        with path.open("rb") as fh:
            fh.seek(0x100000)
            _legacy_hashes[key] = hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]
    return _legacy_hashes[key]


@dataclass(frozen=True)
class ControlNetFile:
    """A ControlNet on disk. `family` is "sd1", "sd2", "sdxl" or "" (not known before loading); `kind` is
    "controlnet" or "union"; `problem` says why it cannot be used ("" when it can)."""

    name: str
    path: Path
    weights: Path
    family: str
    kind: str = "controlnet"
    problem: str = ""

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()

    @property
    def label(self) -> str:
        """The name as the extension writes it: `name [legacy hash]`."""
        return f"{self.name} [{legacy_hash(self.weights)}]"

    @property
    def family_label(self) -> str:
        return FAMILY_LABELS.get(self.family, "?")


def strip_hash(name: str) -> str:
    """`control_v11p_sd15_canny [d14c016b]` -> `control_v11p_sd15_canny`."""
    return re.sub(r"\s*\[[0-9a-fA-F]{8,10}\]\s*$", "", name.strip())


# ----------------------------------------------------------------------------------------------- recognising


def _strip_prefix(shapes: dict[str, list[int]]) -> dict[str, list[int]]:
    if any(k.startswith(ORIGINAL_PREFIX) for k in shapes):
        return {k[len(ORIGINAL_PREFIX) :]: v for k, v in shapes.items() if k.startswith(ORIGINAL_PREFIX)}
    return shapes


def _context_width(shapes: dict[str, list[int]]) -> int | None:
    for key, shape in shapes.items():
        if key.endswith("attn2.to_k.weight") and len(shape) == 2:
            return shape[1]
    return None


def _not_a_controlnet(keys: list[str]) -> str:
    lowered = [k.lower() for k in keys]
    if "lora_controlnet" in keys:
        return "a Control-LoRA, which sdbot cannot use"
    if any(k.startswith(("image_proj.", "ip_adapter.")) for k in keys):
        return "an IP-Adapter, not a ControlNet"
    if any(k.startswith("adapter.") or k.startswith("body.0.") for k in keys):
        return "a T2I-Adapter, not a ControlNet"
    if any("lllite" in k for k in lowered):
        return "a ControlNet-LLLite, which sdbot cannot use"
    if any("motion_modules" in k for k in lowered):
        return "a SparseCtrl model, which sdbot cannot use"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "a Stable Diffusion checkpoint, not a ControlNet (it belongs in the models folder)"
    if any(".lora_down." in k or ".lora_up." in k or k.startswith("lora_") for k in lowered):
        return "a LoRA, not a ControlNet (it belongs in models/Lora)"
    return "not a ControlNet (no input_hint_block or controlnet_cond_embedding weights)"


def recognise(shapes: dict[str, list[int]]) -> tuple[str, str, str]:
    """(family, kind, problem) from a weights file's tensor names and shapes."""
    shapes = _strip_prefix(shapes)
    keys = list(shapes)
    if "input_hint_block.0.weight" in shapes:
        if "lora_controlnet" in shapes:
            return "", "controlnet", _not_a_controlnet(keys)
        if "difference" in shapes:
            return (
                "",
                "controlnet",
                "a 'difference' ControlNet (it adds a base model's weights), which sdbot cannot use",
            )
        if "label_emb.0.0.weight" in shapes:
            return "sdxl", "controlnet", ""
        return ("sd2" if _context_width(shapes) == 1024 else "sd1"), "controlnet", ""
    if "controlnet_cond_embedding.conv_in.weight" in shapes:
        kind = "union" if "task_embedding" in shapes else "controlnet"
        if "add_embedding.linear_1.weight" in shapes:
            return "sdxl", kind, ""
        if kind == "union":
            return "", kind, "a ControlNet Union for a model other than SDXL, which sdbot cannot use"
        return ("sd2" if _context_width(shapes) == 1024 else "sd1"), kind, ""
    return "", "", _not_a_controlnet(keys)


def _family_from_name(name: str) -> str:
    """The extension's guess from a name (scripts/enums.py `detect_from_model_name`), for unopened pickles."""
    lowered = name.lower()
    if any(f"sd{v}" in lowered for v in ("14", "15", "16")):
        return "sd1"
    if "sd21" in lowered or "2.1" in lowered:
        return "sd2"
    return "sdxl" if "xl" in lowered else ""


def _folder_family(folder: Path) -> tuple[str, str, str]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "", "", "its config.json is missing or unreadable"
    class_name = str(config.get("_class_name", ""))
    if "ControlNet" not in class_name:
        return "", "", f"its config.json describes a {class_name or 'model of unknown class'}, not a ControlNet"
    kind = "union" if "Union" in class_name else "controlnet"
    if config.get("addition_embed_type") == "text_time":
        return "sdxl", kind, ""
    if kind == "union":
        return "", kind, "a ControlNet Union for a model other than SDXL, which sdbot cannot use"
    return ("sd2" if config.get("cross_attention_dim") == 1024 else "sd1"), kind, ""


_described: dict[tuple, ControlNetFile] = {}


def describe(path: Path) -> ControlNetFile:
    """What the file or folder at `path` is, from its header or config only (no tensor is read); remembered per
    version of its files (sizes and modification times), since every job's units look their files up."""
    parts = [path / n for n in ("config.json", *WEIGHT_NAMES)] if path.is_dir() else [path]
    key = (str(path.resolve()), *((p.stat().st_size, p.stat().st_mtime) if p.exists() else None for p in parts))
    if key not in _described:
        _described[key] = _describe(path)
    return _described[key]


def _describe(path: Path) -> ControlNetFile:
    if path.is_dir():
        weights = next((path / n for n in WEIGHT_NAMES if (path / n).exists()), path / WEIGHT_NAMES[0])
        family, kind, problem = _folder_family(path)
        if not problem and not weights.exists():
            problem = "the folder holds no diffusion_pytorch_model weights"
        return ControlNetFile(path.name, path, weights, family, kind or "controlnet", problem)
    stem = path.name[: -len(path.suffix)]
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return ControlNetFile(stem, path, path, _family_from_name(stem))
    header = safetensors_header(path)
    shapes = {k: list(v.get("shape", [])) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    if not shapes:
        return ControlNetFile(stem, path, path, "", "controlnet", "not a readable safetensors file")
    family, kind, problem = recognise(shapes)
    return ControlNetFile(stem, path, path, family, kind or "controlnet", problem)


# ------------------------------------------------------------------------------------------------- the folder


class ControlNetLibrary:
    """The ControlNet folder's contents and name lookup (as the extension looks names up)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.root = Path(config.models_dir) / CONTROLNET_DIR

    def files(self) -> list[ControlNetFile]:
        """Every ControlNet file and diffusers folder, sorted by name; the first of two equal names wins."""
        found: dict[str, ControlNetFile] = {}
        if not self.root.is_dir():
            return []
        model_folders = {
            p.parent for p in self.root.rglob("config.json") if any((p.parent / n).exists() for n in WEIGHT_NAMES)
        }
        for path in sorted(self.root.rglob("*")):
            if path in model_folders:
                found.setdefault(path.name.lower(), describe(path))
            elif (
                path.is_file()
                and path.suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES
                and path.parent not in model_folders
            ):
                file = describe(path)
                found.setdefault(file.name.lower(), file)
        return sorted(found.values(), key=lambda f: f.name.lower())

    def default_for(self, module: Preprocessor, family: str) -> ControlNetFile:
        """The model the extension's UI would pick for `module` (scripts/global_state.py `select_control_type`):
        one of `family` (or unknown) whose name holds one of the module's tags or their aliases (a union model
        serves the types it knows), a "v1.1" one (11 in its name) first; EngineError when there is none."""
        files = [f for f in self.files() if not f.problem and f.family in (family, "")]
        for tag in module.tags:
            words = (tag, *_TAG_ALIASES.get(tag, ()), *(("union",) if tag in _UNION_TAGS else ()))
            found = [f for f in files if any(w in f.name.lower() for w in words)]
            if found:
                return next((f for f in found if "11" in f.name), found[0])
        what = f"a {'/'.join(module.tags)} ControlNet" if module.tags else "the ControlNet to use"
        raise EngineError(
            f"no ControlNet in {self.root} fits module {module.label} for {FAMILY_LABELS.get(family, family)}: "
            f"name {what} (control model)"
        )

    def import_notes(self, text: str) -> list[str]:
        """What an imported infotext's `ControlNet N` entries mean here (for `/preset import`): that the units'
        settings came along but never their control image, and each model that is missing or has another hash."""
        from engine.control.infotext import units_from_params
        from engine.infotext import parse_infotext

        try:
            units = units_from_params(parse_infotext(text).params)
        except EngineError:
            return []  # the import itself reports the unreadable entry
        if not units:
            return []
        notes = [
            f"ControlNet: {len(units)} unit(s) imported (module, model, weight, steps, mode); an infotext never "
            f"holds the control image: attach one (control_image:, or --cn with an image) when you use the preset"
        ]
        for index, unit in enumerate(units):
            if not unit.model:
                continue
            try:
                file = self.find(unit.model)
            except EngineError:
                notes.append(f"missing ControlNet model {unit.model} (ControlNet {index}; put it in {self.root})")
                continue
            wanted = re.search(r"\[([0-9a-fA-F]{8})\]\s*$", unit.model)
            if wanted and not file.problem and wanted.group(1).lower() != legacy_hash(file.weights):
                notes.append(f"ControlNet {index}: {file.label} here is another file than the image's {unit.model}")
        return notes

    def find(self, name: str) -> ControlNetFile:
        """A ControlNet by name, `name [hash]` (the hash is not checked), or the shortest name containing it;
        EngineError naming the installed ones when none matches."""
        wanted = strip_hash(name).lower()
        everything = self.files()
        for file in everything:
            if file.name.lower() == wanted:
                if file.problem:
                    raise EngineError(f"ControlNet {file.name} cannot be used: it is {file.problem}")
                return file
        files = [f for f in everything if not f.problem]
        containing = sorted((f for f in files if wanted and wanted in f.name.lower()), key=lambda f: len(f.name))
        if containing:
            return containing[0]
        names = ", ".join(f.name for f in files) or f"none installed (put them in {self.root})"
        raise EngineError(f"ControlNet model {strip_hash(name)!r} not found; available: {names}")
