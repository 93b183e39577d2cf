"""What the models dir holds in LoRAs, LyCORIS and embeddings: names, families, trigger words, hashes.

Folders as A1111 has them: `<models_dir>/Lora/` and `<models_dir>/LyCORIS/` (subfolders allowed) and
`<models_dir>/embeddings/`. A file's name is its stem. Nothing here reads tensors or unpickles anything: only
safetensors headers (metadata) and, for hashes, raw bytes.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from engine.config import EngineConfig
from engine.errors import EngineError
from engine.models.hashing import embedding_hash, network_hash
from engine.models.loader import ModelFile
from engine.models.state_dict import PICKLE_SUFFIXES, SAFE_SUFFIXES, is_pickle
from engine.networks.family import FAMILY_LABELS, file_family

log = logging.getLogger(__name__)

LORA_DIRS = ("Lora", "LyCORIS")
EMBEDDING_DIR = "embeddings"


@dataclass(frozen=True)
class NetworkFile(ModelFile):
    """A LoRA/LyCORIS or embedding file; `name` is what prompts use (the file stem)."""

    @property
    def is_pickle(self) -> bool:
        return is_pickle(self.path)


@dataclass(frozen=True)
class LoraInfo:
    """What `/models` shows for a LoRA: family ("SD 1.x", "SDXL" or "?") and trigger words."""

    file: NetworkFile
    family: str
    triggers: tuple[str, ...]


def _scan(folders: list[Path]) -> list[NetworkFile]:
    found: dict[str, NetworkFile] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            suffix = path.suffix.lower()
            if path.is_file() and suffix in SAFE_SUFFIXES + PICKLE_SUFFIXES:
                stem = path.name[: -len(suffix)]
                found.setdefault(stem.lower(), NetworkFile(stem, path))  # first folder, first path wins
    return sorted(found.values(), key=lambda f: f.name.lower())


def safetensors_header(path: Path) -> dict:
    """A safetensors file's JSON header (tensor names, dtypes, shapes, `__metadata__`); {} if unreadable."""
    if path.suffix.lower() not in SAFE_SUFFIXES:
        return {}
    try:
        with path.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if size > 100 * 1024 * 1024:
                return {}
            header = json.loads(fh.read(size))
    except (OSError, ValueError):
        return {}
    return header if isinstance(header, dict) else {}


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors header ({} for other files or a broken header)."""
    meta = safetensors_header(path).get("__metadata__")
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def safetensors_keys(path: Path) -> list[str]:
    return [k for k in safetensors_header(path) if k != "__metadata__"]


# Text-encoder widths of the real families, for listing embeddings without loading them.
_EMBEDDING_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x"}


def embedding_family(file: NetworkFile) -> str:
    """ "SDXL" (clip_l + clip_g), "SD 1.x" (768 wide), "SD 2.x" (1024) or "?", from the header alone."""
    header = {k: v for k, v in safetensors_header(file.path).items() if k != "__metadata__"}
    if "clip_l" in header and "clip_g" in header:
        return "SDXL"
    if len(header) == 1:
        info = next(iter(header.values()))
        shape = info.get("shape") if isinstance(info, dict) else None
        return _EMBEDDING_WIDTHS.get(shape[-1], "?") if shape else "?"
    return "?"


def trigger_words(metadata: dict[str, str], limit: int = 5) -> tuple[str, ...]:
    """Trigger words a trainer left in the file: modelspec's trigger phrase, else kohya's most frequent tags."""
    for key in ("modelspec.trigger_phrase", "ss_trigger_words", "trigger_words"):
        if metadata.get(key, "").strip():
            return tuple(w.strip() for w in metadata[key].split(",") if w.strip())[:limit]
    try:
        frequency = json.loads(metadata.get("ss_tag_frequency", "{}"))
    except ValueError:
        return ()
    counts: dict[str, int] = {}
    if isinstance(frequency, dict):
        for tags in frequency.values():
            if isinstance(tags, dict):
                for tag, n in tags.items():
                    if isinstance(n, int):
                        counts[tag.strip()] = counts.get(tag.strip(), 0) + n
    return tuple(sorted(counts, key=lambda t: (-counts[t], t)))[:limit]


class NetworkLibrary:
    """Lookups by name (case-insensitive) and by A1111 hash, with errors that list the closest names."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.root = Path(config.models_dir)

    def loras(self) -> list[NetworkFile]:
        return _scan([self.root / d for d in LORA_DIRS])

    def embeddings(self) -> list[NetworkFile]:
        return _scan([self.root / EMBEDDING_DIR])

    def lora(self, name: str) -> NetworkFile:
        return _by_name("LoRA", name, self.loras())

    def lora_info(self, file: NetworkFile) -> LoraInfo:
        meta = safetensors_metadata(file.path)
        family = FAMILY_LABELS.get(file_family(safetensors_keys(file.path), meta), "?") if not file.is_pickle else "?"
        return LoraInfo(file, family, trigger_words(meta))

    def lora_by_hash(self, short: str) -> NetworkFile | None:
        return _by_hash(self.loras(), short, network_hash)

    def embedding_by_hash(self, short: str) -> NetworkFile | None:
        return _by_hash(self.embeddings(), short, embedding_hash)


def _by_name(what: str, name: str, files: list[NetworkFile]) -> NetworkFile:
    wanted = name.strip().lower()
    for file in files:
        if file.name.lower() == wanted:
            return file
    names = [f.name for f in files]
    closest = difflib.get_close_matches(name, names, n=len(names), cutoff=0.0)[:10]
    listing = ", ".join(closest) if closest else f"none installed (put files in {'/'.join(LORA_DIRS)})"
    raise EngineError(f"unknown {what} {name!r}; available: {listing}")


def _by_hash(files: list[NetworkFile], short: str, hasher) -> NetworkFile | None:
    short = short.strip().lower()
    if not short:
        return None
    for file in files:
        try:
            if hasher(file.path).startswith(short) or short.startswith(hasher(file.path)):
                return file
        except OSError:
            continue
    return None
