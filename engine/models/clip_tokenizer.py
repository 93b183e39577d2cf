"""The real CLIP BPE tokenizer, offline: built from `engine/configs/clip/bpe_simple_vocab_16e6.txt.gz` (spec §7),
or read from a model folder that ships its own vocabulary. A single-file checkpoint holds no tokenizer."""

from __future__ import annotations

import copy
import functools
import gzip
import json
from pathlib import Path
from typing import Any

from engine.errors import EngineError

BPE_FILE = Path(__file__).resolve().parents[1] / "configs" / "clip" / "bpe_simple_vocab_16e6.txt.gz"


def clip_byte_characters() -> list[str]:
    """CLIP's reversible byte -> printable character table, in CLIP's order (also the tiny vocab's base)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


@functools.lru_cache(maxsize=1)
def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's 49,408-token vocab and 48,894 merges, parsed once from the shipped BPE file (spec §7)."""
    if not BPE_FILE.exists():
        raise EngineError(f"the CLIP tokenizer file {BPE_FILE} is missing; reinstall sdbot")
    with gzip.open(BPE_FILE, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    pairs = [line.split() for line in lines[1 : 49152 - 256 - 2 + 1]]
    if any(len(pair) != 2 for pair in pairs):
        raise EngineError(f"{BPE_FILE.name} is damaged (a merge that is not a pair of tokens); reinstall sdbot")
    merges = [(first, second) for first, second in pairs]
    chars = clip_byte_characters()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != 49408:
        raise EngineError(f"{BPE_FILE.name} is damaged ({len(vocab)} tokens instead of 49408); reinstall sdbot")
    return vocab, merges


@functools.lru_cache(maxsize=4)
def _cached_clip_tokenizer(pad_token: str):
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    pairs: list[Any] = list(merges)  # tokenizers' BPE takes pairs; transformers types them as str
    return CLIPTokenizer(vocab=vocab, merges=pairs, model_max_length=77, pad_token=pad_token)


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """The real CLIP BPE tokenizer, offline. Pad token: `<|endoftext|>` for SD 1.x and SDXL encoder 1, `!` for
    SD 2.x and SDXL encoder 2. Built once per pad token; each call gets its own copy (textual inversion adds
    tokens to a tokenizer, which must not leak into other models)."""
    return copy.deepcopy(_cached_clip_tokenizer(pad_token))


def load_tokenizer(folder: Path):
    """A tokenizer folder with its own vocabulary (vocab.json + merges.txt, or tokenizer.json) is loaded as is;
    one with only tokenizer_config.json (the shipped configs) gets the CLIP BPE with the configured pad token."""
    from transformers import CLIPTokenizer

    if (folder / "tokenizer.json").exists() or (folder / "vocab.json").exists():
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, model_max_length=77)
    pad = "<|endoftext|>"
    settings = folder / "tokenizer_config.json"
    if settings.exists():
        value = json.loads(settings.read_text()).get("pad_token", pad)
        pad = value["content"] if isinstance(value, dict) else value
    return clip_tokenizer(pad)
