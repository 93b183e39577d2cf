"""The preset service on a real database: a command's options resolved through the server's defaults, the
member's presets and what they typed (with where each value came from), the server's allowed models, `--ar`, and
the preset operations (the default, the limit, the file, an infotext with its networks relinked)."""

from __future__ import annotations

import json

import pytest

from bot.errors import UserError
from bot.services.presets import PresetService
from bot.store import guilds as guild_store
from bot.store.errors import PresetLimit, PresetNotFound
from engine.config import Limits
from engine.errors import EngineError

GUILD = 900
ALICE, BOB = 111, 112


@pytest.fixture
def service(any_sessions) -> PresetService:
    return PresetService(any_sessions, max_per_user=3)


async def configure(sessions, **changes) -> None:
    async with sessions.begin() as s:
        await guild_store.update(s, GUILD, **changes)


async def test_each_layer_wins_over_the_one_below_and_says_so(service, any_sessions):
    await configure(any_sessions, defaults={"steps": 30, "cfg_scale": 5.0, "width": 640})
    await service.save(ALICE, "base", {"steps": 25, "sampler": "Euler a"})
    await service.set_default(ALICE, "base")
    await service.save(ALICE, "tall", {"steps": 12, "height": 768})
    result = await service.resolve_command(ALICE, GUILD, ["tall"], {"prompt": "a cat", "cfg_scale": 9.0})
    request, sources = result.request, result.sources
    assert (request.steps, sources["steps"]) == (12, "preset tall")
    assert (request.height, sources["height"]) == (768, "preset tall")
    assert (request.sampler, sources["sampler"]) == ("Euler a", "preset default:base")
    assert (request.width, sources["width"]) == (640, "guild")
    assert (request.cfg_scale, sources["cfg_scale"]) == (9.0, "command")
    assert sources["clip_skip"] == "default"


async def test_outside_a_server_only_the_members_presets_apply(service, any_sessions):
    await configure(any_sessions, defaults={"steps": 30})
    result = await service.resolve_command(ALICE, None, [], {"prompt": "a cat"})
    assert result.request.steps == 20 and result.sources["steps"] == "default"


async def test_options_typed_as_none_are_not_set(service):
    await service.save(ALICE, "p", {"steps": 11})
    result = await service.resolve_command(ALICE, None, ["p"], {"prompt": "a cat", "steps": None})
    assert result.request.steps == 11


async def test_aspect_ratio_keeps_the_area_of_the_size_below_it(service):
    await service.save(ALICE, "big", {"width": 768, "height": 768})
    result = await service.resolve_command(ALICE, None, ["big"], {"prompt": "a cat", "aspect_ratio": (2, 3)})
    assert (result.request.width, result.request.height) == (624, 944)
    assert result.sources["width"] == result.sources["height"] == "command"
    typed = {"prompt": "a cat", "aspect_ratio": (2, 3), "width": 512, "height": 512}
    sized = await service.resolve_command(ALICE, None, [], typed)
    assert (sized.request.width, sized.request.height) == (512, 512)  # a typed size wins over the ratio


async def test_an_empty_prompt_is_refused_saying_what_to_type(service):
    with pytest.raises(UserError, match="the prompt is empty"):
        await service.resolve_command(ALICE, None, [], {"prompt": "   "})


async def test_a_preset_that_does_not_exist_is_named(service):
    with pytest.raises(PresetNotFound, match="'nope'"):
        await service.resolve_command(ALICE, None, ["nope"], {"prompt": "a cat"})


async def test_the_server_allows_only_its_models_and_vaes(service, any_sessions):
    await configure(any_sessions, allowed_models=["Dreamshaper"], allowed_vaes=["good-vae"])
    ok = await service.resolve_command(ALICE, GUILD, [], {"prompt": "a cat", "model": "dreamshaper"})
    assert ok.request.model == "dreamshaper"  # any case
    await service.resolve_command(ALICE, GUILD, [], {"prompt": "a cat", "vae": "none"})  # always allowed
    with pytest.raises(UserError, match=r"allows only these models: Dreamshaper \(got 'other'\)"):
        await service.resolve_command(ALICE, GUILD, [], {"prompt": "a cat", "model": "other"})
    with pytest.raises(UserError, match="allows only these VAEs: good-vae"):
        await service.resolve_command(ALICE, GUILD, [], {"prompt": "a cat", "vae": "bad-vae"})


async def test_the_servers_caps_and_forced_negative_apply_last(service, any_sessions):
    await configure(any_sessions, max_steps=15, forced_negative_prompt="nsfw")
    result = await service.resolve_command(ALICE, GUILD, [], {"prompt": "a cat", "steps": 40, "negative_prompt": "x"})
    assert (result.request.steps, result.sources["steps"]) == (15, "guild cap")
    assert result.request.negative_prompt == "x, nsfw"


async def test_the_engines_limits_are_the_services(any_sessions):
    service = PresetService(any_sessions, limits=Limits(max_steps=10))
    with pytest.raises(EngineError, match="steps"):
        await service.resolve_command(ALICE, None, [], {"prompt": "a cat", "steps": 11})


async def test_the_list_comes_with_the_default(service):
    assert await service.list_with_default(ALICE) == ([], None)
    await service.save(ALICE, "b", {"steps": 2})
    await service.save(ALICE, "a", {"steps": 1})
    await service.set_default(ALICE, "b")
    presets, default = await service.list_with_default(ALICE)
    assert [p.name for p in presets] == ["a", "b"] and default == "b"
    assert await service.clear_default(ALICE) is True
    assert (await service.list_with_default(ALICE))[1] is None


async def test_the_services_limit_per_member_applies_to_saves_and_files(service):
    for name in ("a", "b", "c"):
        await service.save(ALICE, name, {"steps": 2})
    with pytest.raises(PresetLimit, match="the limit is 3"):
        await service.save(ALICE, "d", {"steps": 2})
    exported = json.loads(await service.export_json(ALICE))
    exported["presets"].append({"name": "d", "options": {"steps": 4}})
    with pytest.raises(PresetLimit):
        await service.import_json(ALICE, json.dumps(exported))
    result = await service.import_json(BOB, await service.export_json(ALICE))  # another member's own count
    assert sorted(result.created) == ["a", "b", "c"]


async def test_an_imported_file_replaces_presets_of_the_same_name(service):
    await service.save(ALICE, "a", {"steps": 2})
    document = {"format": "sdbot-presets", "version": 1, "presets": [{"name": "A", "options": {"steps": 9}}]}
    result = await service.import_json(ALICE, json.dumps(document))
    assert result.updated == ("A",)
    assert (await service.get(ALICE, "a")).options == {"steps": 9}


async def test_an_infotexts_networks_are_relinked_before_import_and_the_notes_kept(any_sessions):
    seen: list[str] = []

    def relink(text: str) -> tuple[str, list[str]]:
        seen.append(text)
        return text.replace("<lora:theirs:1>", "<lora:mine:1>"), ["LoRA theirs is mine here (same hash)"]

    service = PresetService(any_sessions, relink=relink)
    text = "a cat <lora:theirs:1>\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512"
    result = await service.import_infotext(ALICE, "cat", text)
    assert seen == [text]
    assert result.preset.options["prompt"] == "a cat <lora:mine:1>"
    assert result.notes == ("LoRA theirs is mine here (same hash)",)
    assert result.dropped == ("seed",)


async def test_rename_and_delete(service):
    await service.save(ALICE, "old", {"steps": 2})
    assert (await service.rename(ALICE, "old", "new")).name == "new"
    assert await service.names(ALICE, "n") == ["new"]
    await service.delete(ALICE, "NEW")
    with pytest.raises(PresetNotFound):
        await service.get(ALICE, "new")
