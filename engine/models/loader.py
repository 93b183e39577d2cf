"""Finding and loading checkpoints and VAEs, offline and without executing any file (spec §2).

Checkpoints: diffusers folders (a `model_index.json`) or single `.safetensors` files (SD 1.x, 2.x, SDXL).
VAEs: single files in the LDM or the diffusers key layout, or diffusers folders, always built with the config of
the checkpoint they are used with (so an SDXL VAE keeps SDXL's scaling factor). Pickle formats are refused unless
`allow_pickle`, and then read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.config import EngineConfig
from engine.errors import EngineError
from engine.models.state_dict import PICKLE_SUFFIXES, SAFE_SUFFIXES, is_pickle, read_state_dict

log = logging.getLogger(__name__)

VAE_DIR_NAMES = ("VAE", "vae")


@dataclass(frozen=True)
class ModelFile:
    """A checkpoint or VAE on disk, with the name users see."""

    name: str
    path: Path

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()


def _is_vae_file(path: Path) -> bool:
    return ".vae." in path.name.lower()


def _weight_suffixes(allow_pickle: bool) -> tuple[str, ...]:
    return SAFE_SUFFIXES + (PICKLE_SUFFIXES if allow_pickle else ())


def _stem(path: Path) -> str:
    return path.name if path.is_dir() else path.name[: -len(path.suffix)]


class ModelLibrary:
    """What the models dir holds: checkpoint and VAE names, and how `auto`/`none`/names/paths resolve."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.root = Path(config.models_dir)

    def checkpoints(self) -> list[ModelFile]:
        found: list[ModelFile] = []
        for folder in (self.root, self.root / "Stable-diffusion", self.root / "checkpoints"):
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                if entry.is_dir() and (entry / "model_index.json").exists():
                    found.append(ModelFile(entry.name, entry))
                elif entry.is_file() and entry.suffix.lower() in _weight_suffixes(True) and not _is_vae_file(entry):
                    found.append(ModelFile(_stem(entry), entry))
        return found

    def vaes(self) -> list[ModelFile]:
        found: list[ModelFile] = []
        for dir_name in VAE_DIR_NAMES:
            folder = self.root / dir_name
            if not folder.is_dir() or any(f.path == folder for f in found):
                continue
            for entry in sorted(folder.rglob("*")):
                is_folder = entry.is_dir() and (entry / "config.json").exists() and _vae_weights_in(entry)
                if is_folder or entry.is_file() and entry.suffix.lower() in _weight_suffixes(True):
                    found.append(ModelFile(entry.name, entry))
        for ckpt in self.checkpoints():
            found.extend(self.sidecar_vaes(ckpt))
        return found

    def sidecar_vaes(self, checkpoint: ModelFile) -> list[ModelFile]:
        """The `<checkpoint>.vae.*` files beside a checkpoint, safetensors first, pickles (refused or not) too."""
        base = _stem(checkpoint.path) + ".vae"
        paths = [checkpoint.path.with_name(base + suffix) for suffix in _weight_suffixes(True)]
        return [ModelFile(path.name, path) for path in paths if path.exists()]

    def checkpoint(self, name: str) -> ModelFile:
        """A checkpoint by name (file stem or folder name, case-insensitive) or by path; '' = the default."""
        available = self.checkpoints()
        if not name:
            name = self.config.default_model
        if not name:
            if available:
                return available[0]
            raise EngineError(
                f"no checkpoint in {self.root}: install one there or set [engine] default_model "
                "(`sdbot run` and `sdbot render` write a tiny demo model when there is none)"
            )
        by_lower = {c.name.lower(): c for c in available}
        by_lower.update({c.path.name.lower(): c for c in available})
        if name.lower() in by_lower:
            return by_lower[name.lower()]
        path = Path(name).expanduser()
        if path.exists() and (path.is_file() or (path / "model_index.json").exists()):
            return ModelFile(_stem(path), path)
        names = ", ".join(c.name for c in available) or "none installed"
        raise EngineError(f"unknown model {name!r}; available models: {names}")

    def vae_for(self, setting: str, checkpoint: ModelFile) -> ModelFile | None:
        """The VAE a setting selects for a checkpoint; None = the checkpoint's own (baked-in) VAE."""
        key = setting.strip()
        if key.lower() == "none":
            return None
        if key.lower() == "auto":
            usable = [f for f in self.sidecar_vaes(checkpoint) if self.config.allow_pickle or not is_pickle(f.path)]
            return usable[0] if usable else None
        available = self.vaes()
        for vae in available:
            if key.lower() in (vae.name.lower(), _stem(vae.path).lower(), _stem(vae.path).lower() + ".vae"):
                return vae
        path = Path(key).expanduser()
        if path.exists():
            return ModelFile(path.name, path)
        names = ", ".join(["auto", "none"] + [v.name for v in available])
        raise EngineError(f"unknown VAE {setting!r}; valid: {names}")


def checkpoint_family(file: ModelFile) -> str:
    """ "sdxl" or "sd" without loading the weights (a folder's model_index.json, a safetensors header); "sd" when
    it cannot tell (a pickle), which only costs SDXL its 64-pixel rounding of default sizes."""
    from safetensors import SafetensorError, safe_open

    from engine.models.ldm_keys import normalize_keys
    from engine.models.single_file import detect_family

    try:
        if file.is_folder:
            index = json.loads((file.path / "model_index.json").read_text())
            return "sdxl" if "XL" in str(index.get("_class_name", "")) else "sd"
        if file.path.suffix.lower() in SAFE_SUFFIXES:
            with safe_open(str(file.path), framework="pt") as handle:
                keys = dict.fromkeys(handle.keys())
            return "sdxl" if detect_family(normalize_keys(keys), file.name) == "sdxl" else "sd"
    except (OSError, ValueError, EngineError, SafetensorError):
        pass
    return "sd"


def _vae_weights_in(folder: Path) -> Path | None:
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        if (folder / name).exists():
            return folder / name
    return None


def file_hash(path: Path) -> str:
    """First 10 hex chars of the file's sha256 (A1111's model and VAE hash), cached by path, size and mtime."""
    from engine.models.hashing import sha256_hex

    if path.is_dir():
        weights = _vae_weights_in(path) or _vae_weights_in(path / "unet")
        if weights is None:
            return "0000000000"
        path = weights
    return sha256_hex(path)[:10]


def load_vae(file: ModelFile, base_config: dict[str, Any], allow_pickle: bool):
    """An AutoencoderKL with `base_config` (the checkpoint's VAE config) and the file's weights."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    if file.is_folder:
        weights = _vae_weights_in(file.path)
        if weights is None:
            raise EngineError(f"VAE folder {file.name} holds no safetensors weights")
        state = read_state_dict(weights, allow_pickle)
    else:
        state = read_state_dict(file.path, allow_pickle)
    state = _strip_prefix(state, ("first_stage_model.", "vae."))
    if not any(k.startswith("encoder.down_blocks.") or k.startswith("decoder.up_blocks.") for k in state):
        if not any(k.startswith("decoder.up.") for k in state):
            raise EngineError(f"{file.name} is not a VAE (no encoder/decoder weights found)")
        state = convert_ldm_vae_checkpoint(state, dict(base_config))
    channels = base_config["latent_channels"]
    conv_in = state.get("decoder.conv_in.weight")
    if conv_in is not None and conv_in.shape[1] != channels:
        raise EngineError(
            f"VAE {file.name} works on {conv_in.shape[1]}-channel latents; this checkpoint needs {channels}"
        )
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(dict(base_config))
    try:
        vae.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise EngineError(f"VAE {file.name} does not fit this checkpoint's VAE ({_first_line(exc)})") from None
    return vae.eval()


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200]


def _strip_prefix(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def resolve_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise EngineError("device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(setting)


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[setting]


@dataclass
class LoadedCheckpoint:
    """A checkpoint ready to render: its pipeline (with the baked-in VAE), family and hash."""

    file: ModelFile
    pipe: Any
    family: str  # "sd" or "sdxl"
    hash: str
    own_vae: Any

    @property
    def vae_config(self) -> dict[str, Any]:
        return dict(self.own_vae.config)


def load_checkpoint(file: ModelFile, device: torch.device, dtype: torch.dtype, allow_pickle: bool) -> LoadedCheckpoint:
    from diffusers import DiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    started = time.perf_counter()
    if file.is_folder:
        try:
            pipe = DiffusionPipeline.from_pretrained(
                str(file.path),
                local_files_only=True,
                dtype=dtype,
                safety_checker=None,
                requires_safety_checker=False,
            )
        except (OSError, ValueError) as exc:
            raise EngineError(f"model {file.name} could not be loaded ({_first_line(exc)})") from None
    else:
        from engine.models.single_file import load_single_file_pipeline

        pipe = load_single_file_pipeline(file.path, dtype, allow_pickle)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    family = "sdxl" if isinstance(pipe, StableDiffusionXLPipeline) else "sd"
    loaded = LoadedCheckpoint(file, pipe, family, file_hash(file.path), pipe.vae)
    log.info("loaded checkpoint %s (%s) in %.2f s", file.name, family, time.perf_counter() - started)
    return loaded


class ModelCache:
    """Warm checkpoints and VAEs: LRU caches so a repeated model or VAE costs no disk read."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.library = ModelLibrary(config)
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self._checkpoints: OrderedDict[Path, LoadedCheckpoint] = OrderedDict()
        self._vaes: OrderedDict[tuple[Path, Path], Any] = OrderedDict()
        self.disk_loads = 0  # counted for tests: a cache hit does not touch the disk

    def checkpoint(self, name: str) -> LoadedCheckpoint:
        file = self.library.checkpoint(name)
        key = file.path.resolve()
        if key in self._checkpoints:
            self._checkpoints.move_to_end(key)
            return self._checkpoints[key]
        while len(self._checkpoints) >= self.config.checkpoint_cache_size:
            old_key, old = self._checkpoints.popitem(last=False)
            self._vaes = OrderedDict((k, v) for k, v in self._vaes.items() if k[0] != old_key)
            log.info("unloaded checkpoint %s", old.file.name)
            del old
            self.free_memory()
        loaded = load_checkpoint(file, self.device, self.dtype, self.config.allow_pickle)
        self.disk_loads += 1
        self._checkpoints[key] = loaded
        return loaded

    def vae(self, setting: str, ckpt: LoadedCheckpoint) -> tuple[Any, ModelFile | None]:
        """The VAE module to decode with and the file it came from (None: the checkpoint's own)."""
        file = self.library.vae_for(setting, ckpt.file)
        if file is None:
            return ckpt.own_vae, None
        key = (ckpt.file.path.resolve(), file.path.resolve())
        if key in self._vaes:
            self._vaes.move_to_end(key)
            return self._vaes[key], file
        vae = load_vae(file, ckpt.vae_config, self.config.allow_pickle).to(self.device, self.dtype)
        self.disk_loads += 1
        if self.config.vae_cache_size > 0:
            self._vaes[key] = vae
            while len(self._vaes) > self.config.vae_cache_size:
                self._vaes.popitem(last=False)
        return vae, file

    def preload(self, name: str = "", vae: str = "auto") -> str:
        """Load a checkpoint (default: the default one) and the VAE `vae` selects for it; returns its name."""
        ckpt = self.checkpoint(name)
        self.vae(vae, ckpt)
        return ckpt.file.name

    def loaded(self) -> list[Path]:
        """The (resolved) paths of the checkpoints in memory, least recently used first."""
        return list(self._checkpoints)

    def clear(self) -> None:
        """Drop every cached model (after an out-of-memory error)."""
        self._vaes.clear()
        self._checkpoints.clear()
        self.free_memory()

    def free_memory(self) -> None:
        import gc

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
