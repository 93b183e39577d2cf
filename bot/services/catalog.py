"""`ModelCatalog`: the names of what is installed (checkpoints, VAEs, LoRAs, embeddings, upscalers, ControlNets and
the ControlNet preprocessors offered, wildcards), for autocomplete and /models.

Why a service: autocomplete runs on every keystroke, and scanning the models folder (and reading each LoRA's header
for /models) each time would put disk work on the event loop at typing speed. The catalog rescans in a thread at most
every `max_age_s` seconds, or at once on `refresh()` (/models refresh:true after adding files), and hands out a
frozen snapshot of plain data in between.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.config import EngineConfig


@dataclass(frozen=True)
class Lora:
    name: str
    family: str  # "SD 1.x", "SDXL" or "?"
    triggers: tuple[str, ...]


@dataclass(frozen=True)
class ControlNet:
    name: str
    family: str  # "SD 1.x", "SD 2.x", "SDXL" or "?" (a pickle, known when loaded)
    union: bool = False
    problem: str = ""  # why the file cannot be used ("a T2I-Adapter, not a ControlNet"); "" when it can


@dataclass(frozen=True)
class Catalog:
    """What was installed at the last scan; names as prompts and options write them."""

    checkpoints: tuple[str, ...] = ()
    vaes: tuple[str, ...] = ()
    loras: tuple[Lora, ...] = ()
    embeddings: tuple[tuple[str, str], ...] = ()  # (name, family)
    upscalers: tuple[str, ...] = ()
    controlnets: tuple[ControlNet, ...] = ()
    preprocessors: tuple[str, ...] = ()  # the ControlNet modules this server offers
    refused: tuple[str, ...] = ()  # one line per file the engine will not load, saying why (not in the lists above)
    wildcards: tuple[str, ...] = ()  # dynamic prompts' `__name__` files, `sub/name` in subfolders


def scan(config: EngineConfig) -> Catalog:
    """One scan of the models folder (disk reads: call it off the event loop)."""
    from engine.control.annotators import Annotators
    from engine.control.library import ControlNetLibrary
    from engine.control.preprocessors import opencv_modules
    from engine.models.loader import ModelLibrary
    from engine.models.state_dict import loadable
    from engine.networks.library import NetworkLibrary, embedding_family
    from engine.render.dynamic_prompts import WILDCARDS_DIR, DynamicPrompts
    from engine.render.refusals import refused_files
    from engine.render.upscalers import UpscalerLibrary

    models, networks, allow = ModelLibrary(config), NetworkLibrary(config), config.allow_pickle
    loras = []
    for file in loadable(networks.loras(), allow):
        info = networks.lora_info(file)
        loras.append(Lora(file.name, info.family, tuple(info.triggers)))
    return Catalog(
        checkpoints=tuple(c.name for c in loadable(models.checkpoints(), allow)),
        vaes=tuple(v.name for v in loadable(models.vaes(), allow)),
        loras=tuple(loras),
        embeddings=tuple((f.name, embedding_family(f)) for f in loadable(networks.embeddings(), allow)),
        upscalers=tuple(UpscalerLibrary(config.models_dir, allow_pickle=allow).names()),
        refused=tuple(f.line for f in refused_files(config)),
        controlnets=tuple(
            ControlNet(f.name, f.family_label, f.kind == "union", f.problem)
            for f in loadable(ControlNetLibrary(config).files(), allow)
        ),
        preprocessors=(*opencv_modules(), *(p.name for p in Annotators(config.control_annotators).offered())),
        wildcards=tuple(DynamicPrompts(config.models_dir / WILDCARDS_DIR).wildcard_names()),
    )


def checkpoint_family_of(config: EngineConfig, model: str) -> str:
    """ "sdxl" or "sd" for a checkpoint name ("" = the default) without loading it (disk reads: off the event
    loop); "sd" for a name that is not installed, which the engine refuses at render with the names it knows."""
    from engine.errors import EngineError
    from engine.models.loader import ModelLibrary, checkpoint_family

    try:
        return checkpoint_family(ModelLibrary(config).checkpoint(model))
    except EngineError:
        return "sd"


class ModelCatalog:
    def __init__(
        self, config: EngineConfig, *, max_age_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.max_age_s = max_age_s
        self._clock = clock
        self._snapshot: Catalog | None = None
        self._scanned_at = 0.0
        self._lock = asyncio.Lock()

    async def current(self) -> Catalog:
        """The last scan, rescanned first when older than `max_age_s` (or never made)."""
        if self._snapshot is not None and self._clock() - self._scanned_at < self.max_age_s:
            return self._snapshot
        return await self.refresh(only_if_stale=True)

    async def family_of(self, model: str) -> str:
        """A checkpoint's family, read in a thread (`checkpoint_family_of`): what img2img's default size rounds
        to depends on it."""
        return await asyncio.to_thread(checkpoint_family_of, self.config, model)

    async def refresh(self, *, only_if_stale: bool = False) -> Catalog:
        """Scan now; with `only_if_stale`, unless a scan that finished while this one waited is fresh enough."""
        async with self._lock:
            fresh = self._snapshot is not None and self._clock() - self._scanned_at < self.max_age_s
            if not (only_if_stale and fresh):
                self._snapshot = await asyncio.to_thread(scan, self.config)
                self._scanned_at = self._clock()
            assert self._snapshot is not None
            return self._snapshot
