"""Files refused while `[engine] allow_pickle` is off, named where people look instead of vanishing.

A pickle (.ckpt, .pt, .bin, .pth) can run code when it is loaded, so the engine loads none unless `allow_pickle`
is on (`engine.models.state_dict.load_pickle`). A refused file is named with the reason wherever it would otherwise just
not work:
- `sdbot models` and `/models` list each one (`refused_files`, one line each);
- a job that names a refused checkpoint, VAE, LoRA or upscaler fails with `engine.models.state_dict.refusal`'s line;
- a refused embedding's name is plain words to the prompt encoder, and `vae = auto` passes over a refused
  `<checkpoint>.vae.pt`: the image is made, with a note saying what was left out and why (`render_notes`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.config import EngineConfig
from engine.models.loader import ModelFile, ModelLibrary
from engine.models.state_dict import PICKLE_REFUSAL, is_pickle, refusal


@dataclass(frozen=True)
class RefusedFile:
    kind: str  # "checkpoint", "VAE", "LoRA", "embedding", "upscaler" or "ControlNet"
    name: str  # as prompts and options write it
    path: Path

    @property
    def line(self) -> str:
        """`refused: easynegative.pt (pickle format; set [engine] allow_pickle = true to allow it)`"""
        return f"refused: {self.path.name} ({PICKLE_REFUSAL})"


def refused_files(config: EngineConfig) -> list[RefusedFile]:
    """Every file under the models dir that the engine will not load, by kind (none with `allow_pickle`)."""
    if config.allow_pickle:
        return []
    from engine.control.library import ControlNetLibrary
    from engine.networks.library import NetworkLibrary
    from engine.render.upscalers import UpscalerLibrary

    models, networks = ModelLibrary(config), NetworkLibrary(config)
    found: list[tuple[str, ModelFile]] = [
        *(("checkpoint", f) for f in models.checkpoints()),
        *(("VAE", f) for f in models.vaes()),
        *(("LoRA", f) for f in networks.loras()),
        *(("embedding", f) for f in networks.embeddings()),
        *(("upscaler", ModelFile(f.name, f.path)) for f in UpscalerLibrary(config.models_dir).model_files()),
        *(("ControlNet", ModelFile(f.name, f.path)) for f in ControlNetLibrary(config).files()),
    ]
    return [RefusedFile(kind, f.name, f.path) for kind, f in found if is_pickle(f.path)]


def render_notes(
    config: EngineConfig, embeddings: Sequence[ModelFile], sidecars: Sequence[ModelFile], vae: str, *texts: str
) -> tuple[str, ...]:
    """What a job's render leaves out because its file is refused: each refused embedding whose name `texts` (the
    prompt and the negative prompt) write, matched as a word and case-insensitively like the embeddings' tokens,
    and a refused sidecar VAE that `vae = auto` would have taken (`sidecars`: the checkpoint's, usable first)."""
    if config.allow_pickle:
        return ()
    notes = [
        f"embedding {file.name} was not used (its name stayed plain words): {refusal(file.path)}"
        for file in embeddings
        if is_pickle(file.path) and any(_writes(text, file.name) for text in texts)
    ]
    if vae.strip().lower() == "auto" and sidecars and is_pickle(sidecars[0].path):
        notes.append(f"VAE auto used the checkpoint's own VAE: {refusal(sidecars[0].path)}")
    return tuple(notes)


def _writes(text: str, name: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE) is not None
