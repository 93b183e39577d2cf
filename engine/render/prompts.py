"""A1111 prompt syntax, 75-token chunks and the CLIP-skip text encoder (spec §1, §5).

diffusers alone truncates at 77 tokens, ignores CLIP skip for the negative prompt and crashes on transformers 5
when asked for `clip_skip`, so sdbot encodes both prompts itself and hands the pipeline `prompt_embeds`.
Everything here follows A1111's `prompt_parser.py` and `sd_hijack_clip.py` ("Original" emphasis).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from engine.errors import EngineError
from engine.networks.tags import strip_tags

CHUNK_LENGTH = 75
COMMA_BACKTRACK = 20  # A1111's default "comma_padding_backtrack"
ROUND = 1.1
SQUARE = 1 / 1.1

_ATTENTION = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
BREAK = "BREAK"


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) runs, exactly as A1111's `parse_prompt_attention`.

    `BREAK` comes back as ("BREAK", -1.0). Never raises: an unclosed bracket weights the rest of the prompt, a
    stray closing bracket is text, and a weight that is not a number (A1111 would crash on `(x:.)`) is text.
    """
    res: list[list] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= multiplier

    for m in _ATTENTION.finditer(text):
        chunk = m.group(0)
        weight = _number(m.group(1))
        if chunk.startswith("\\"):
            res.append([chunk[1:], 1.0])
        elif chunk == "(":
            round_brackets.append(len(res))
        elif chunk == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), weight)
        elif chunk == ")" and round_brackets:
            multiply_range(round_brackets.pop(), ROUND)
        elif chunk == "]" and square_brackets:
            multiply_range(square_brackets.pop(), SQUARE)
        else:
            for i, part in enumerate(_BREAK.split(chunk)):
                if i > 0:
                    res.append([BREAK, -1.0])
                res.append([part, 1.0])
    for pos in round_brackets:
        multiply_range(pos, ROUND)
    for pos in square_brackets:
        multiply_range(pos, SQUARE)
    if not res:
        res = [["", 1.0]]
    i = 0  # merge runs of equal weight (BREAK markers never merge with anything)
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1] and res[i][1] != -1.0:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return [(t, float(w)) for t, w in res]


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


@dataclass
class PromptChunk:
    """77 token ids (BOS, 75 tokens, EOS), one multiplier per id, and the embeddings placed in it.

    `fixes` are (offset, name, vectors): the vectors replace the token embeddings from offset + 1 (after BOS).
    """

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[tuple[int, str, torch.Tensor]] = field(default_factory=list)


# find(tokens, position) -> (embedding name, vectors, tokens its name took) or None: engine.networks.embeddings.
EmbeddingFinder = Callable[[list[int], int], "tuple[str, torch.Tensor, int] | None"]


def tokenize_chunks(prompt: str, tokenizer, find: EmbeddingFinder | None = None) -> list[PromptChunk]:
    """A1111's `tokenize_line`: weighted tokens split into 75-token chunks, BREAK, comma backtrack, embeddings.

    An embedding's vectors take its slots with the weight where it stands, and start a new chunk when they do
    not fit in the current one. Unlike A1111, a comma backtrack moves an embedding with its tokens (A1111 leaves
    the embedding's vectors behind in the old chunk's padding).
    """
    parsed = parse_prompt_attention(prompt)
    texts = [text for text, _ in parsed]
    tokenized = tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]
    id_start, id_end = tokenizer.bos_token_id, tokenizer.eos_token_id
    comma = tokenizer.get_vocab().get(",</w>")
    chunks: list[PromptChunk] = []
    chunk = PromptChunk()
    last_comma = -1

    def next_chunk() -> None:
        nonlocal chunk, last_comma
        pad = CHUNK_LENGTH - len(chunk.tokens)
        chunk.tokens = [id_start] + chunk.tokens + [id_end] * pad + [id_end]
        chunk.multipliers = [1.0] + chunk.multipliers + [1.0] * pad + [1.0]
        chunks.append(chunk)
        chunk = PromptChunk()
        last_comma = -1

    for tokens, (text, weight) in zip(tokenized, parsed):
        if text == BREAK and weight == -1.0:
            next_chunk()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == comma:
                last_comma = len(chunk.tokens)
            elif (
                len(chunk.tokens) == CHUNK_LENGTH
                and last_comma != -1
                and len(chunk.tokens) - last_comma <= COMMA_BACKTRACK
            ):
                cut = last_comma + 1
                moved_tokens, moved_mults = chunk.tokens[cut:], chunk.multipliers[cut:]
                moved_fixes = [(o - cut, n, v) for o, n, v in chunk.fixes if o >= cut]
                chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                chunk.fixes = [f for f in chunk.fixes if f[0] < cut]
                next_chunk()
                chunk.tokens, chunk.multipliers, chunk.fixes = moved_tokens, moved_mults, moved_fixes
            if len(chunk.tokens) == CHUNK_LENGTH:
                next_chunk()
            found = find(tokens, position) if find is not None else None
            if found is None:
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)
                position += 1
                continue
            name, vectors, used = found
            if len(chunk.tokens) + vectors.shape[0] > CHUNK_LENGTH:
                next_chunk()
            chunk.fixes.append((len(chunk.tokens), name, vectors))
            chunk.tokens += [0] * vectors.shape[0]
            chunk.multipliers += [weight] * vectors.shape[0]
            position += used
    if chunk.tokens or not chunks:
        next_chunk()
    return chunks


def empty_chunk(tokenizer) -> PromptChunk:
    return tokenize_chunks("", tokenizer)[0]


@dataclass(frozen=True)
class Conditioning:
    """What the pipeline gets: one prompt's embeddings (1, 77*chunks, dim) and, for SDXL, its pooled vector.

    `embeddings` names the textual-inversion embeddings the prompt used (for the infotext's `TI hashes`).
    """

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    embeddings: tuple[str, ...] = ()

    @property
    def chunks(self) -> int:
        return self.embeds.shape[1] // (CHUNK_LENGTH + 2)


def _final_layer_norm(model) -> torch.nn.Module:
    return model.final_layer_norm if hasattr(model, "final_layer_norm") else model.text_model.final_layer_norm


def layer_count(text_encoder) -> int:
    return int(text_encoder.config.num_hidden_layers)


class PromptEncoder:
    """Encodes prompts with A1111's CLIP skip, chunking and emphasis for one loaded checkpoint.

    `encoders` is [(tokenizer, text_encoder)], one pair for SD 1.x/2.x, two for SDXL (outputs concatenated
    along the feature axis, pooled vector from the second); `finders`, one per encoder, find embeddings.
    `<lora:…>` tags are removed from the text before tokenizing (they are merged into the weights instead).
    """

    def __init__(
        self,
        encoders: list[tuple[object, torch.nn.Module]],
        sdxl: bool,
        finders: list[EmbeddingFinder | None] | None = None,
    ) -> None:
        self.encoders = encoders
        self.sdxl = sdxl
        self.finders = finders or [None] * len(encoders)

    @classmethod
    def for_pipeline(cls, pipe, embeddings=None) -> PromptEncoder:
        """`embeddings` (an `engine.networks.embeddings.EmbeddingStore`) supplies the embeddings this model can use."""
        if getattr(pipe, "text_encoder_2", None) is not None:
            encoders = [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]
        else:
            encoders = [(pipe.tokenizer, pipe.text_encoder)]
        finders = embeddings.matchers(encoders) if embeddings is not None else None
        return cls(encoders, sdxl=len(encoders) == 2, finders=finders)

    @property
    def max_clip_skip(self) -> int:
        return min(layer_count(te) for _, te in self.encoders)

    def check_clip_skip(self, clip_skip: int) -> None:
        top = self.max_clip_skip
        if not 1 <= clip_skip <= top:
            raise EngineError(f"CLIP skip must be from 1 to {top} for this model (got {clip_skip})")

    def chunk_count(self, prompt: str) -> int:
        return len(tokenize_chunks(strip_tags(prompt), self.encoders[0][0], self.finders[0]))

    def pair_chunks(self, prompt: str, negative_prompt: str) -> int:
        """The chunks a prompt pair is encoded in: the longer one's (the other is padded to it)."""
        return max(self.chunk_count(prompt), self.chunk_count(negative_prompt))

    @torch.no_grad()
    def encode(
        self, prompt: str, clip_skip: int, *, chunks: int | None = None, zero_if_empty: bool = False
    ) -> Conditioning:
        """Encode one prompt; `chunks` pads it with empty chunks (A1111 pads the shorter of cond/uncond)."""
        self.check_clip_skip(clip_skip)
        if zero_if_empty and self.sdxl and prompt == "":
            # A1111 (sd_models_xl) zeroes an empty SDXL negative prompt, embeddings and pooled alike.
            cond = self.encode("", clip_skip, chunks=chunks)
            pooled = None if cond.pooled is None else torch.zeros_like(cond.pooled)
            return Conditioning(torch.zeros_like(cond.embeds), pooled)
        per_encoder = []
        pooled = None
        used: dict[str, None] = {}
        for index, (tokenizer, text_encoder) in enumerate(self.encoders):
            token_chunks = tokenize_chunks(strip_tags(prompt), tokenizer, self.finders[index])
            if chunks is not None:
                token_chunks += [empty_chunk(tokenizer)] * (chunks - len(token_chunks))
            zs = []
            for n, chunk in enumerate(token_chunks):
                z, pool = self._encode_chunk(tokenizer, text_encoder, chunk, clip_skip)
                zs.append(z)
                used.update((name, None) for _, name, _ in chunk.fixes)
                if n == 0 and index == len(self.encoders) - 1 and self.sdxl:
                    pooled = pool
            per_encoder.append(torch.cat(zs, dim=1))
        return Conditioning(torch.cat(per_encoder, dim=-1), pooled, tuple(used))

    def _encode_chunk(self, tokenizer, text_encoder, chunk: PromptChunk, clip_skip: int):
        device = text_encoder.device
        ids = list(chunk.tokens)
        pad = tokenizer.pad_token_id
        if pad != tokenizer.eos_token_id:  # SD 2.x / OpenCLIP: after the first EOS, pad with the pad id
            first_end = ids.index(tokenizer.eos_token_id)
            ids = ids[: first_end + 1] + [pad] * (len(ids) - first_end - 1)
        tokens = torch.tensor([ids], device=device)
        with _embeddings_placed(text_encoder, chunk.fixes):
            out = text_encoder(input_ids=tokens, output_hidden_states=True)
        if self.sdxl:
            # Native SDXL conditioning: penultimate layer, no final layer norm; skip >= 3 goes deeper.
            z = out.hidden_states[-max(clip_skip, 2)]
        elif clip_skip > 1:
            z = _final_layer_norm(text_encoder)(out.hidden_states[-clip_skip])
        else:
            z = out.last_hidden_state
        pooled = getattr(out, "text_embeds", None)
        weights = torch.tensor(chunk.multipliers, device=device, dtype=z.dtype).reshape(1, -1, 1)
        original_mean = z.mean()
        z = z * weights
        z = z * (original_mean / z.mean())
        return z, pooled

    def encode_pair(self, prompt: str, negative: str, clip_skip: int) -> tuple[Conditioning, Conditioning]:
        """Positive and negative conditioning with the same number of chunks."""
        count = max(self.chunk_count(prompt), self.chunk_count(negative))
        return (
            self.encode(prompt, clip_skip, chunks=count),
            self.encode(negative, clip_skip, chunks=count, zero_if_empty=True),
        )


@contextmanager
def _embeddings_placed(text_encoder, fixes: list[tuple[int, str, torch.Tensor]]):
    """While encoding one chunk, the token-embedding layer's output takes the embeddings' vectors at their slots
    (A1111's `EmbeddingsWithFixes`); position embeddings are added afterwards, as for any token."""
    if not fixes:
        yield
        return

    def place(module, inputs, output):
        for offset, _, vectors in fixes:
            output[0, offset + 1 : offset + 1 + vectors.shape[0]] = vectors.to(output.device, output.dtype)
        return output

    handle = text_encoder.get_input_embeddings().register_forward_hook(place)
    try:
        yield
    finally:
        handle.remove()
