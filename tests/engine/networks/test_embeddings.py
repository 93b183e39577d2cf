"""Textual-inversion embeddings: an embedding made of the token vectors of "red dog" must act exactly like the
words "red dog" wherever it stands (prompt, weighted group, negative prompt), found on token ids as A1111 finds
it; A1111's chunk rule; `TI hashes`; SDXL's clip_l/clip_g files."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import EngineConfig
from engine.infotext import parse_infotext
from engine.networks.embeddings import EmbeddingMatcher
from engine.render.pipeline import Engine
from engine.render.prompts import CHUNK_LENGTH, tokenize_chunks
from engine.request import GenerationRequest
from engine.tiny.networks import write_embedding

WORDS = "red dog"


def req(prompt: str, **kw) -> GenerationRequest:
    return GenerationRequest(**{**dict(prompt=prompt, seed=3, width=64, height=64, steps=2, sampler="Euler"), **kw})


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image)


def word_vectors(tokenizer, text_encoder, words: str = WORDS) -> torch.Tensor:
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    return text_encoder.get_input_embeddings().weight[ids].detach().clone()


def engine_with(tmp_path_factory, model: Path):
    """An engine whose models folder holds a copy of `model`: (engine, its root, the model's pipeline)."""
    root = tmp_path_factory.mktemp("emb-models")
    shutil.copytree(model, root / model.name)
    engine = Engine(EngineConfig(models_dir=root))
    return engine, root, engine.models.checkpoint(model.name).pipe


@pytest.fixture(scope="module")
def sd15(tmp_path_factory, tiny_sd15: Path):
    engine, root, pipe = engine_with(tmp_path_factory, tiny_sd15)
    vectors = word_vectors(pipe.tokenizer, pipe.text_encoder)
    write_embedding(root / "embeddings" / "RedDog.safetensors", vectors)
    write_embedding(root / "embeddings" / "sub" / "wide.safetensors", torch.ones(2, 77))  # another model's width
    return engine, root


def encode(engine: Engine, prompt: str, negative: str = ""):
    ckpt = engine.models.checkpoint("tiny-sd15")
    return engine.prompt_encoder(ckpt).encode_pair(prompt, negative, 1)


@pytest.mark.parametrize(
    "with_embedding, with_words",
    [
        ("a photo of RedDog", f"a photo of {WORDS}"),
        ("a photo of reddog, sky", f"a photo of {WORDS}, sky"),  # case-insensitive: matched on token ids
        ("a (photo of REDDOG:1.3) sky", f"a (photo of {WORDS}:1.3) sky"),  # the group's weight on every vector
        ("[RedDog] (cat)", f"[{WORDS}] (cat)"),
    ],
)
def test_an_embedding_acts_as_its_vectors_wherever_it_stands(sd15, with_embedding, with_words):
    engine, _ = sd15
    cond, _ = encode(engine, with_embedding)
    expected, _ = encode(engine, with_words)
    assert torch.equal(cond.embeds, expected.embeds)
    assert cond.embeddings == ("RedDog",)


def test_in_the_negative_prompt_and_in_pixels(sd15):
    engine, _ = sd15
    cond, neg = encode(engine, "a cat", "RedDog, blurry")
    _, expected = encode(engine, "a cat", f"{WORDS}, blurry")
    assert torch.equal(neg.embeds, expected.embeds) and neg.embeddings == ("RedDog",)
    tagged = engine.render(req("a photo of RedDog", negative_prompt="RedDog"))
    words = engine.render(req(f"a photo of {WORDS}", negative_prompt=WORDS))
    assert np.array_equal(pixels(tagged), pixels(words))


def test_ti_hashes_are_the_whole_files_sha256(sd15):
    engine, root = sd15
    expected = hashlib.sha256((root / "embeddings" / "RedDog.safetensors").read_bytes()).hexdigest()[:12]
    result = engine.render(req("a photo of reddog"))
    assert parse_infotext(result.images[0].infotext).params["TI hashes"] == f"RedDog: {expected}"
    assert "TI hashes" not in parse_infotext(engine.render(req("a photo")).images[0].infotext).params


def test_an_embedding_for_another_width_stays_plain_text(sd15):
    engine, _ = sd15
    cond, _ = encode(engine, "a wide cat")
    assert cond.embeddings == ()


def _finder(tokenizer, **named: int):
    return EmbeddingMatcher(tokenizer, [(name, torch.zeros(n, 4)) for name, n in named.items()])


def test_an_embedding_that_does_not_fit_the_chunk_starts_a_new_one(sd15):
    engine, _ = sd15
    tokenizer = engine.models.checkpoint("tiny-sd15").pipe.tokenizer
    find = _finder(tokenizer, trio=3)
    prompt = "cat " * (CHUNK_LENGTH - 1) + "trio"
    chunks = tokenize_chunks(prompt, tokenizer, find)
    assert len(chunks) == 2
    assert chunks[0].fixes == [] and chunks[0].tokens[CHUNK_LENGTH] == tokenizer.eos_token_id  # one slot left empty
    assert [(offset, name) for offset, name, _ in chunks[1].fixes] == [(0, "trio")]
    fits = tokenize_chunks("cat " * (CHUNK_LENGTH - 3) + "trio", tokenizer, find)
    assert len(fits) == 1 and [(o, n) for o, n, _ in fits[0].fixes] == [(CHUNK_LENGTH - 3, "trio")]


def test_the_longest_name_wins(sd15):
    engine, _ = sd15
    tokenizer = engine.models.checkpoint("tiny-sd15").pipe.tokenizer
    chunks = tokenize_chunks(
        "style best quality, style", tokenizer, _finder(tokenizer, **{"style": 1, "style best": 2})
    )
    assert [name for _, name, _ in chunks[0].fixes] == ["style best", "style"]


def test_a_comma_backtrack_moves_the_embedding_with_its_text(sd15):
    engine, _ = sd15
    tokenizer = engine.models.checkpoint("tiny-sd15").pipe.tokenizer
    prompt = "cat " * 70 + ", trio dog dog dog dog dog"
    chunks = tokenize_chunks(prompt, tokenizer, _finder(tokenizer, trio=3))
    assert len(chunks) == 2 and chunks[0].fixes == []
    assert [(o, n) for o, n, _ in chunks[1].fixes] == [(0, "trio")]


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory, tiny_sdxl: Path):
    engine, root, pipe = engine_with(tmp_path_factory, tiny_sdxl)
    write_embedding(
        root / "embeddings" / "xlred.safetensors",
        {
            "clip_l": word_vectors(pipe.tokenizer, pipe.text_encoder),
            "clip_g": word_vectors(pipe.tokenizer_2, pipe.text_encoder_2),
        },
    )
    write_embedding(root / "embeddings" / "sd15only.safetensors", torch.ones(1, 16))
    return engine


def test_sdxl_embeddings_use_clip_l_and_clip_g(sdxl):
    tagged = sdxl.render(req("a photo of xlred", negative_prompt="sd15only", width=64, height=64))
    words = sdxl.render(req(f"a photo of {WORDS}", negative_prompt="sd15only", width=64, height=64))
    assert np.array_equal(pixels(tagged), pixels(words))
    assert parse_infotext(tagged.images[0].infotext).params["TI hashes"].startswith("xlred: ")


_TOKENIZER = None


def _tiny_tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        from engine.tiny.models import make_tokenizer

        _TOKENIZER = make_tokenizer()
    return _TOKENIZER


@settings(deadline=None, max_examples=60)  # tokenizing 150 words on a loaded machine
@given(st.lists(st.sampled_from(["cat", "trio", "duo", ",", "dog", "BREAK", "(sky trio:1.2)", "[duo]"]), max_size=150))
def test_every_embedding_lands_whole_inside_one_chunk(words):
    tokenizer = _tiny_tokenizer()
    prompt = " ".join(words)
    chunks = tokenize_chunks(prompt, tokenizer, _finder(tokenizer, trio=3, duo=2))
    placed = [name for chunk in chunks for _, name, _ in chunk.fixes]
    assert sorted(placed) == sorted(re.findall(r"\b(?:trio|duo)\b", prompt))
    for chunk in chunks:
        assert len(chunk.tokens) == len(chunk.multipliers) == CHUNK_LENGTH + 2
        for offset, _, vectors in chunk.fixes:
            assert offset + vectors.shape[0] <= CHUNK_LENGTH
            assert chunk.tokens[offset + 1 : offset + 1 + vectors.shape[0]] == [0] * vectors.shape[0]
