"""A1111 prompt syntax, 75-token chunking and the CLIP-skip encoder (spec §1 and §5)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import EngineError
from engine.render.prompts import (
    CHUNK_LENGTH,
    PromptEncoder,
    parse_prompt_attention,
    tokenize_chunks,
)
from engine.tiny.models import TEXT_LAYERS, build_tiny_pipeline

W = pytest.approx


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
        ("((x))", [("x", 1.21)]),
        ("[x]", [("x", 1 / 1.1)]),
        ("[[x]]", [("x", 1 / 1.1 / 1.1)]),
        ("(x:1.3)", [("x", 1.3)]),
        ("stray) bracket", [("stray) bracket", 1.0)]),
        ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
        ("BREAKFAST break", [("BREAKFAST break", 1.0)]),
        ("\\\\ back", [("\\ back", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_parse_prompt_attention_matches_a1111(prompt, expected):
    """The table includes A1111's own doctest examples from prompt_parser.py."""
    got = parse_prompt_attention(prompt)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == [W(w) for _, w in expected]


@given(st.text(alphabet=st.sampled_from(list("ab ()[]:\\.,0123456789BREAK+-")), max_size=60))
def test_parse_never_raises_and_keeps_text(prompt):
    """Any text parses; escapes aside, every character outside the syntax survives in order."""
    parts = parse_prompt_attention(prompt)
    assert parts
    for text, weight in parts:
        assert isinstance(text, str) and isinstance(weight, float)
    plain = "".join(t for t, w in parts if w != -1.0)
    letters = [c for c in prompt if c in "ab"]
    assert [c for c in plain if c in "ab"] == letters


@pytest.fixture(scope="module")
def sd_pipe():
    return build_tiny_pipeline("sd15")


@pytest.fixture(scope="module")
def encoder(sd_pipe):
    return PromptEncoder.for_pipeline(sd_pipe)


def _words(n: int) -> str:
    return " ".join(["cat"] * n)  # "cat" is one token in the tiny vocabulary


def test_chunks_are_75_tokens_wrapped_in_bos_eos(sd_pipe):
    tok = sd_pipe.tokenizer
    chunks = tokenize_chunks(_words(100), tok)
    assert len(chunks) == 2
    for chunk in chunks:
        assert len(chunk.tokens) == CHUNK_LENGTH + 2
        assert chunk.tokens[0] == tok.bos_token_id and chunk.tokens[-1] == tok.eos_token_id
    assert chunks[1].tokens[1:26] == [tok.convert_tokens_to_ids("cat</w>")] * 25
    assert chunks[1].tokens[26:] == [tok.eos_token_id] * 51


def test_exactly_75_tokens_fit_one_chunk(sd_pipe):
    assert len(tokenize_chunks(_words(75), sd_pipe.tokenizer)) == 1
    assert len(tokenize_chunks(_words(76), sd_pipe.tokenizer)) == 2


def test_comma_backtrack_moves_text_after_last_comma(sd_pipe):
    """A chunk fills with a comma 10 tokens back: those 10 tokens start the next chunk (A1111)."""
    tok = sd_pipe.tokenizer
    prompt = _words(64) + ", " + _words(20)
    chunks = tokenize_chunks(prompt, tok)
    comma = tok.convert_tokens_to_ids(",</w>")
    first = chunks[0].tokens[1:-1]
    assert first[64] == comma and first[65:] == [tok.eos_token_id] * 10
    assert chunks[1].tokens[1:21] == [tok.convert_tokens_to_ids("cat</w>")] * 20


def test_comma_far_back_does_not_move_text(sd_pipe):
    tok = sd_pipe.tokenizer
    chunks = tokenize_chunks(_words(10) + ", " + _words(80), tok)
    assert chunks[0].tokens[1:-1].count(tok.eos_token_id) == 0


def test_break_starts_a_new_chunk(sd_pipe):
    chunks = tokenize_chunks("cat BREAK dog", sd_pipe.tokenizer)
    assert len(chunks) == 2
    assert chunks[1].tokens[1] == sd_pipe.tokenizer.convert_tokens_to_ids("dog</w>")


def test_weights_become_token_multipliers(sd_pipe):
    chunk = tokenize_chunks("cat (dog:1.5) [sky]", sd_pipe.tokenizer)[0]
    assert chunk.multipliers[:5] == [1.0, 1.0, 1.5, W(1 / 1.1), 1.0]


@pytest.mark.parametrize("skip", range(1, TEXT_LAYERS + 1))
def test_clip_skip_is_a1111s_rule(sd_pipe, encoder, skip):
    """N=1: last_hidden_state; N>1: final_layer_norm(hidden_states[-N]), for the prompt and the negative."""
    te = sd_pipe.text_encoder
    cond, uncond = encoder.encode_pair("a photo of a cat", "blurry", skip)
    for text, got in (("a photo of a cat", cond), ("blurry", uncond)):
        ids = torch.tensor([tokenize_chunks(text, sd_pipe.tokenizer)[0].tokens])
        with torch.no_grad():
            out = te(input_ids=ids, output_hidden_states=True)
        expected = out.last_hidden_state if skip == 1 else te.final_layer_norm(out.hidden_states[-skip])
        torch.testing.assert_close(got.embeds, expected, rtol=0, atol=1e-6)


def test_clip_skip_changes_conditioning(encoder):
    embeds = [encoder.encode("a photo of a cat", n).embeds for n in range(1, TEXT_LAYERS + 1)]
    for a in range(len(embeds)):
        for b in range(a + 1, len(embeds)):
            assert not torch.allclose(embeds[a], embeds[b])


@pytest.mark.parametrize("skip", [0, TEXT_LAYERS + 1, 12])
def test_clip_skip_beyond_the_encoder_is_an_error(encoder, skip):
    with pytest.raises(EngineError, match=f"CLIP skip must be from 1 to {TEXT_LAYERS}"):
        encoder.encode("cat", skip)


def test_weighting_restores_the_mean(sd_pipe, encoder):
    """Original emphasis: multiply token vectors by their weight, then rescale to the unweighted mean."""
    plain = encoder.encode("cat dog", 1).embeds
    weighted = encoder.encode("cat (dog:1.5)", 1).embeds
    assert weighted.mean().item() == W(plain.mean().item(), rel=1e-5)
    scale = plain.mean() / (plain * torch.tensor([1, 1, 1.5] + [1] * 74).view(1, -1, 1)).mean()
    torch.testing.assert_close(weighted[0, 2], plain[0, 2] * 1.5 * scale)
    torch.testing.assert_close(weighted[0, 1], plain[0, 1] * scale)


def test_long_prompts_concatenate_chunks_and_pad_the_negative(encoder):
    cond, uncond = encoder.encode_pair(_words(100), "blurry", 1)
    assert cond.embeds.shape[1] == uncond.embeds.shape[1] == 2 * 77
    empty = encoder.encode("", 1).embeds
    torch.testing.assert_close(uncond.embeds[:, 77:], empty)
    torch.testing.assert_close(uncond.embeds[:, :77], encoder.encode("blurry", 1).embeds)
    cond2, uncond2 = encoder.encode_pair("cat", _words(160), 1)
    assert cond2.embeds.shape[1] == uncond2.embeds.shape[1] == 3 * 77


def test_sdxl_uses_penultimate_without_norm_and_pooled_from_encoder_2(tiny_sdxl):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, local_files_only=True)
    enc = PromptEncoder.for_pipeline(pipe)
    c1 = enc.encode("a photo of a cat", 1)
    c2 = enc.encode("a photo of a cat", 2)
    c3 = enc.encode("a photo of a cat", 3)
    torch.testing.assert_close(c1.embeds, c2.embeds)  # 1 and 2: the native penultimate layer
    assert not torch.allclose(c2.embeds, c3.embeds)
    tokens = tokenize_chunks("a photo of a cat", pipe.tokenizer)[0].tokens
    ids = torch.tensor([tokens])
    end = tokens.index(pipe.tokenizer.eos_token_id) + 1  # encoder 2 (OpenCLIP) pads with "!" after the EOS
    ids2 = torch.tensor([tokens[:end] + [pipe.tokenizer_2.pad_token_id] * (77 - end)])
    with torch.no_grad():
        h1 = pipe.text_encoder(input_ids=ids, output_hidden_states=True).hidden_states
        out2 = pipe.text_encoder_2(input_ids=ids2, output_hidden_states=True)
    torch.testing.assert_close(c3.embeds, torch.cat([h1[-3], out2.hidden_states[-3]], dim=-1))
    torch.testing.assert_close(c1.pooled, out2.text_embeds)
    _, zero = enc.encode_pair("cat", "", 2)
    assert not zero.embeds.any() and not zero.pooled.any()
