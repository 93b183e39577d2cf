"""ModelCatalog: autocomplete and /models read a snapshot that is rescanned at most every max_age_s, or on refresh."""

from __future__ import annotations

from pathlib import Path

from bot.services.catalog import ModelCatalog
from engine.config import EngineConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


async def test_the_catalog_rescans_only_when_stale_or_asked(tmp_path):
    touch(tmp_path / "Stable-diffusion" / "anime.safetensors")
    touch(tmp_path / "Lora" / "detail.safetensors")
    clock = Clock()
    catalog = ModelCatalog(EngineConfig(models_dir=tmp_path), max_age_s=30, clock=clock)

    first = await catalog.current()
    assert first.checkpoints == ("anime",)
    assert [lora.name for lora in first.loras] == ["detail"] and first.loras[0].family
    assert {"Latent", "Lanczos"} <= set(first.upscalers)

    touch(tmp_path / "Stable-diffusion" / "photo.safetensors")
    clock.now += 29
    assert await catalog.current() is first  # keystrokes within max_age_s: no disk work
    clock.now += 2
    assert (await catalog.current()).checkpoints == ("anime", "photo")

    touch(tmp_path / "Lora" / "style.safetensors")
    assert [lora.name for lora in (await catalog.current()).loras] == ["detail"]
    assert [lora.name for lora in (await catalog.refresh()).loras] == ["detail", "style"]  # /models refresh:true


async def test_the_catalog_lists_the_wildcards(tmp_path):
    touch(tmp_path / "wildcards" / "colors.txt")
    touch(tmp_path / "wildcards" / "people" / "jobs.txt")
    catalog = ModelCatalog(EngineConfig(models_dir=tmp_path))
    assert (await catalog.current()).wildcards == ("colors", "people/jobs")
    assert (await ModelCatalog(EngineConfig(models_dir=tmp_path / "empty")).current()).wildcards == ()
