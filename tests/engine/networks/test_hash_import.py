"""Importing an infotext links its LoRAs and embeddings to local files by A1111's hashes."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from engine.config import EngineConfig
from engine.infotext import parse_infotext
from engine.models.hashing import embedding_hash, network_hash
from engine.networks.hash_import import hash_pairs, relink_infotext
from engine.networks.library import NetworkLibrary


def test_hashes_find_local_files_under_other_names_and_missing_ones_are_named(tmp_path):
    lora = tmp_path / "Lora" / "more_details.safetensors"
    emb = tmp_path / "embeddings" / "bad-hands.safetensors"
    for path, seed in ((lora, 1), (emb, 2)):
        path.parent.mkdir(parents=True)
        save_file({"w": torch.randn(3, 4, generator=torch.Generator().manual_seed(seed))}, str(path))
    save_file({"w": torch.zeros(2)}, str(tmp_path / "Lora" / "kept.safetensors"))
    library = NetworkLibrary(EngineConfig(models_dir=tmp_path))
    text = (
        f"a cat <lora:add_detail:0.6> <lora:kept:1> <lyco:gone:1>, EasyNeg\n"
        f"Negative prompt: easyneg, blurry\n"
        f"Steps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, "
        f'Lora hashes: "add_detail: {network_hash(lora)}, kept: 000000000000, gone: 123456789abc", '
        f'TI hashes: "EasyNeg: {embedding_hash(emb)}, missing: abcdefabcdef"'
    )
    linked, notes = relink_infotext(text, library)
    info = parse_infotext(linked)
    assert info.prompt == "a cat <lora:more_details:0.6> <lora:kept:1> <lyco:gone:1>, bad-hands"
    assert info.negative_prompt == "bad-hands, blurry"
    assert info.params["Steps"] == "20" and info.params["Lora hashes"].startswith("add_detail: ")
    assert notes == [
        f"LoRA add_detail is more_details here (same hash {network_hash(lora)})",
        "missing LoRA gone (hash 123456789abc)",  # `kept` exists by name: kept, not reported
        f"embedding EasyNeg is bad-hands here (same hash {embedding_hash(emb)})",
        "missing embedding missing (hash abcdefabcdef)",
    ]


def test_text_without_networks_is_kept_as_it_is(tmp_path):
    text = "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7"
    assert relink_infotext(text, NetworkLibrary(EngineConfig(models_dir=tmp_path))) == (text, [])


def test_hash_pairs():
    assert hash_pairs("a: 1a2b, b c: 3c4d,  , bad") == [("a", "1a2b"), ("b c", "3c4d")]
