"""LoRAs and embeddings through Discord: the `lora` option and its autocomplete, inline `--lora`, the embed's
LoRA list, failures that name what exists, and /models' listing."""

from __future__ import annotations

import shutil

import pytest_asyncio
import torch

from engine.tiny.models import build_tiny_pipeline
from engine.tiny.networks import write_embedding, write_network
from tests.bot.exts.imagine.test_cog import params_of
from tests.bot.exts.info.test_cog import reply
from tests.bot.harness import FAST, running_bot


@pytest_asyncio.fixture
async def harness(tmp_path, tiny_sd15):
    models = tmp_path / "models"
    shutil.copytree(tiny_sd15, models / "tiny-sd15")
    pipe = build_tiny_pipeline()
    write_network(pipe, models / "Lora" / "add_detail.safetensors", seed=1)
    write_network(pipe, models / "LyCORIS" / "ink_hada.safetensors", "loha", seed=2)
    write_embedding(models / "embeddings" / "EasyNeg.safetensors", torch.randn(2, 768))
    async with running_bot(tmp_path, tiny_sd15) as running:
        yield running


async def test_lora_option_and_inline_lora_add_tags_that_are_applied(harness):
    s = harness.standin
    ix = await s.send_interaction(
        s.slash("imagine", {"prompt": f"a cat --lora ink_hada:0.5 --seed 3 {FAST}", "lora": "add_detail"})
    )
    message = await ix.wait_original_message(lambda m: m.get("attachments"), timeout=60)
    params = params_of(s, message)
    assert [p.split(": ")[0] for p in params["Lora hashes"].split(", ")] == ["add_detail", "ink_hada"]
    embed = message["embeds"][0]
    assert embed["description"] == "a cat <lora:add_detail:1> <lora:ink_hada:0.5>"
    loras = next(f for f in embed["fields"] if f["name"] == "LoRAs")
    assert loras["value"] == "add_detail 1, ink_hada 0.5"
    s.assert_no_invalid_requests()


async def test_unknown_lora_fails_the_job_naming_what_exists(harness):
    s = harness.standin
    ix = await s.send_interaction(s.slash("imagine", {"prompt": f"a cat <lora:add_detial:1> {FAST}"}))
    final = await ix.wait_original_message(lambda m: "failed" in m.get("content", ""), timeout=30)
    assert "unknown LoRA 'add_detial'; available: add_detail, ink_hada" in final["content"]
    s.assert_no_invalid_requests()


async def test_lora_autocomplete_and_models_listing(harness):
    s = harness.standin
    ix = await s.send_interaction(s.autocomplete("imagine", {"prompt": "x", "lora": "ink"}))
    await ix.wait_callback()
    assert [c["value"] for c in ix.callbacks[0].json["data"]["choices"]] == ["ink_hada"]
    data = await reply(s, s.slash("models"))
    fields = {f["name"]: f["value"] for f in data["embeds"][0]["fields"]}
    assert fields["LoRAs: <lora:NAME:WEIGHT> or --lora NAME:WEIGHT"] == "add_detail [SD 1.x/2.x]\nink_hada [SD 1.x/2.x]"
    assert fields["Embeddings: write the name in a prompt"] == "EasyNeg [SD 1.x]"
    s.assert_no_invalid_requests()
