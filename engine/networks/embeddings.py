"""Textual-inversion embeddings, found in prompts on token ids as A1111 finds them.

A1111 (`modules/textual_inversion/textual_inversion.py`, `sd_hijack_clip.py`): an embedding's token is its file
stem; it is tokenized, and the prompt's token ids are searched for those ids (so matching is case-insensitive,
as CLIP's tokenizer lowercases, and the longest match wins). Its vectors take as many slots as it has vectors,
each with the attention weight of where it stands; if they do not fit in what is left of the current 75-token
chunk, a new chunk starts. An embedding whose vectors do not fit the text encoder (an SD 2.x or SDXL embedding
on SD 1.x) is not one for this model, and its name stays plain text, as in A1111.

Files: `.safetensors` with one tensor (`emb_params`, ...) or SDXL's `clip_l` + `clip_g`; with `allow_pickle`,
`.pt`/`.bin` (A1111's `string_to_param`, or diffusers' one-tensor dict) read with `weights_only=True`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import EngineError
from engine.networks.library import NetworkFile

log = logging.getLogger(__name__)

MAX_VECTORS = 75  # one chunk


@dataclass(frozen=True)
class Embedding:
    """An embedding's vectors per text-encoder slot: "" (SD 1.x/2.x), or "clip_l" and "clip_g" (SDXL)."""

    name: str
    vectors: dict[str, torch.Tensor]

    @property
    def count(self) -> int:
        return next(iter(self.vectors.values())).shape[0]


def read_embedding(file: NetworkFile, allow_pickle: bool) -> Embedding:
    """An embedding file's vectors; a file that holds something else is an `EngineError`."""
    from engine.models.state_dict import load_pickle, read_state_dict

    if file.is_pickle:
        data = load_pickle(file.path, allow_pickle)
        if isinstance(data, dict) and isinstance(data.get("string_to_param"), dict):
            data = data["string_to_param"]
    else:
        data = read_state_dict(file.path, allow_pickle)
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)} if isinstance(data, dict) else {}
    if "clip_l" in tensors and "clip_g" in tensors:
        vectors = {"clip_l": tensors["clip_l"], "clip_g": tensors["clip_g"]}
    elif len(tensors) == 1:
        vectors = {"": next(iter(tensors.values()))}
    else:
        raise EngineError(f"embedding {file.name} ({file.path.name}) does not hold one embedding tensor")
    vectors = {k: (v[None] if v.ndim == 1 else v).detach().to(torch.float32) for k, v in vectors.items()}
    if any(v.ndim != 2 for v in vectors.values()) or len({v.shape[0] for v in vectors.values()}) != 1:
        raise EngineError(f"embedding {file.name} ({file.path.name}) has tensors of an unexpected shape")
    embedding = Embedding(file.name, vectors)
    if embedding.count > MAX_VECTORS:
        raise EngineError(f"embedding {file.name} has {embedding.count} vectors; at most {MAX_VECTORS} fit a chunk")
    return embedding


# (name, vectors for this encoder, number of prompt tokens the name took)
Found = tuple[str, torch.Tensor, int]


class EmbeddingMatcher:
    """A1111's `find_embedding_at_position` for one tokenizer: the ids of each name, longest match first."""

    def __init__(self, tokenizer, embeddings: list[tuple[str, torch.Tensor]]) -> None:
        self._by_first: dict[int, list[tuple[list[int], str, torch.Tensor]]] = {}
        names = [name for name, _ in embeddings]
        ids_of = tokenizer(names, truncation=False, add_special_tokens=False)["input_ids"] if names else []
        for ids, (name, vectors) in zip(ids_of, embeddings):
            if ids:
                self._by_first.setdefault(ids[0], []).append((ids, name, vectors))
        for entries in self._by_first.values():
            entries.sort(key=lambda e: len(e[0]), reverse=True)

    def __call__(self, tokens: list[int], position: int) -> Found | None:
        for ids, name, vectors in self._by_first.get(tokens[position], ()):
            if tokens[position : position + len(ids)] == ids:
                return name, vectors, len(ids)
        return None


class EmbeddingStore:
    """The embeddings folder's files, read once per file version; matchers for a pipeline's encoders."""

    def __init__(self, library, allow_pickle: bool) -> None:
        self.library = library
        self.allow_pickle = allow_pickle
        self._loaded: OrderedDict[tuple, Embedding | None] = OrderedDict()

    def loaded(self) -> list[Embedding]:
        """Every readable embedding; unreadable or refused files are logged once and left out."""
        result: list[Embedding] = []
        seen = set()
        for file in self.library.embeddings():
            if file.is_pickle and not self.allow_pickle:
                continue
            stat = file.path.stat()
            key = (str(file.path.resolve()), stat.st_size, stat.st_mtime)
            seen.add(key)
            if key not in self._loaded:
                try:
                    self._loaded[key] = read_embedding(file, self.allow_pickle)
                except EngineError as exc:
                    log.warning("embedding left out: %s", exc)
                    self._loaded[key] = None
            embedding = self._loaded[key]
            if embedding is not None:
                result.append(embedding)
        for key in [k for k in self._loaded if k not in seen]:
            del self._loaded[key]
        return result

    def matchers(self, encoders: list[tuple[object, torch.nn.Module]]) -> list[EmbeddingMatcher | None]:
        """One matcher per (tokenizer, text encoder): only embeddings whose vectors fit every encoder."""
        embeddings = self.loaded()
        if not embeddings:
            return [None] * len(encoders)
        slots = [""] if len(encoders) == 1 else ["clip_l", "clip_g"]
        widths = [_token_width(te) for _, te in encoders]
        fitting = [
            e
            for e in embeddings
            if all(slot in e.vectors and e.vectors[slot].shape[1] == w for slot, w in zip(slots, widths))
        ]
        if not fitting:
            return [None] * len(encoders)
        return [
            EmbeddingMatcher(tok, [(e.name, e.vectors[slot]) for e in fitting])
            for (tok, _), slot in zip(encoders, slots)
        ]

    def hashes(self, names) -> list[tuple[str, str]]:
        """(name, short hash) of the embeddings a prompt used, for the infotext's `TI hashes`."""
        from engine.models.hashing import embedding_hash

        by_name = {f.name: f for f in self.library.embeddings()}
        return [(name, embedding_hash(by_name[name].path)) for name in dict.fromkeys(names) if name in by_name]


def _token_width(encoder: Any) -> int:
    """How wide a transformers text encoder's token vectors are: an embedding's vectors must be as wide."""
    return int(encoder.get_input_embeddings().weight.shape[1])
