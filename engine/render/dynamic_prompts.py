"""Dynamic prompts with the sd-dynamic-prompts extension's syntax and meaning, on its `dynamicprompts` library.

`{a|b|c}` picks one, `{2$$a|b|c}` two different ones joined by `,`, `{1-3$$ and $$a|b|c}` one to three joined by
` and `, `{0.5::a|b}` weighs the choices, `__name__` picks a line of `wildcards/name.txt` beside the models
(`__sub/name__` for subfolders, `__colors*__` globs; blank and `#` lines are skipped, values de-duplicated and
sorted, as the extension does by default).

Random mode (the extension's default): image i of a job draws its prompt from its own seed, seed + i, exactly
as the extension's `RandomPromptGenerator(...).generate(template, n, seeds=[...])` does (the random generator is
re-seeded with each image's seed), so the same seed gives the same prompt whether the image is alone or in a batch.
The negative prompt resolves the same way. Combinatorial mode gives image i the i-th combination instead (the
extension's "Combinatorial generation" with the batch as its "max generations": at most one image per
combination, the negative prompt's combinations repeated along the positive ones).

Where sdbot differs, it says so: the extension passes every prompt through the library, sdbot only a text that has
the syntax (`{…}` or `__name__`), so the `#` (a comment to the end of the line for the library) and `$` of ordinary
prompts keep their meaning; a wildcard with no file is an error, not a literal `__name__` left in the prompt.

The extension writes the templates to the infotext (`Template`, `Negative Template`, each when not empty):
`template_params` gives them for a job whose prompt or negative prompt has the syntax.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from dynamicprompts.generators import CombinatorialPromptGenerator, RandomPromptGenerator
from dynamicprompts.wildcards import WildcardManager
from dynamicprompts.wildcards.values import WildcardValues
from pyparsing import ParseBaseException

from engine.errors import EngineError
from engine.request import GenerationRequest

WILDCARDS_DIR = "wildcards"  # beside the checkpoints, in the models dir
TEMPLATE = "Template"
NEGATIVE_TEMPLATE = "Negative Template"

_SYNTAX = re.compile(r"\{[^{}]*\}|__\S+?__")


def has_syntax(text: str) -> bool:
    """Whether `text` holds a variant (`{…}`) or a wildcard (`__name__`): only such texts go through the library."""
    return bool(_SYNTAX.search(text))


@dataclass(frozen=True)
class Resolved:
    """One image's prompt pair after the variants and wildcards were drawn."""

    prompt: str
    negative_prompt: str


class _MissingWildcard(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


class _StrictWildcards(WildcardManager):
    """The library's manager, but a wildcard that matches no file stops the draw instead of staying as text."""

    def get_values(self, wildcard: str) -> WildcardValues:
        values = super().get_values(wildcard)
        if len(values) == 0:
            raise _MissingWildcard(wildcard)
        return values


class DynamicPrompts:
    """Resolves templates against the wildcard files under `wildcards_dir` (read afresh on every call, so files
    added while the bot runs are seen; None: no wildcards)."""

    def __init__(self, wildcards_dir: Path | None) -> None:
        self.wildcards_dir = wildcards_dir

    def _manager(self) -> WildcardManager:
        path = self.wildcards_dir if self.wildcards_dir is not None and self.wildcards_dir.is_dir() else None
        return _StrictWildcards(path)

    def for_seeds(self, prompt: str, negative_prompt: str, seeds: Sequence[int]) -> list[Resolved]:
        """One pair per seed (random mode): image i's prompt drawn from `seeds[i]` alone."""
        manager = self._manager()
        prompts = _random(manager, prompt, seeds)
        negatives = _random(manager, negative_prompt, seeds)
        return [Resolved(p, n) for p, n in zip(prompts, negatives)]

    def combinations(self, prompt: str, negative_prompt: str, count: int) -> list[Resolved]:
        """Combinatorial mode with `count` as the extension's "max generations": the first `count` combinations
        of the prompt (fewer when it has fewer), the negative prompt's first combinations repeated along them."""
        manager = self._manager()
        prompts = _combinations(manager, prompt, count)
        negatives = _combinations(manager, negative_prompt, count)
        return [Resolved(p, negatives[i % len(negatives)]) for i, p in enumerate(prompts)]

    def wildcard_names(self) -> list[str]:
        """Every wildcard's name as written between `__` (`colors`, `sub/animals`), sorted."""
        if self.wildcards_dir is None or not self.wildcards_dir.is_dir():
            return []
        return sorted(WildcardManager(self.wildcards_dir).get_collection_names())


def template_params(prompt: str, negative_prompt: str) -> dict[str, str]:
    """The infotext keys the extension writes for the templates ({} when neither text has the syntax)."""
    if not (has_syntax(prompt) or has_syntax(negative_prompt)):
        return {}
    params = {}
    if prompt:
        params[TEMPLATE] = prompt
    if negative_prompt:
        params[NEGATIVE_TEMPLATE] = negative_prompt
    return params


def _random(manager: WildcardManager, template: str, seeds: Sequence[int]) -> list[str]:
    if not has_syntax(template):
        return [template] * len(seeds)
    generator = RandomPromptGenerator(manager, seed=seeds[0] if seeds else None)
    return _drawn(template, lambda: generator.generate(template, len(seeds), seeds=list(seeds)))


def _combinations(manager: WildcardManager, template: str, count: int) -> list[str]:
    if not has_syntax(template):
        return [template]
    generator = CombinatorialPromptGenerator(manager)
    return _drawn(template, lambda: generator.generate(template, count)) or [""]


def _drawn(template: str, draw) -> list[str]:
    """The library's result, or its failures as one line a user can act on."""
    try:
        return draw()
    except _MissingWildcard as missing:
        raise EngineError(
            f"no wildcard named __{missing.name}__: put the values in {WILDCARDS_DIR}/{missing.name}.txt beside the "
            "models, one per line (`sdbot models` lists the wildcards)"
        ) from None
    except ParseBaseException as err:
        raise EngineError(
            f"the dynamic prompt syntax is broken at character {err.loc + 1} of {template!r}: {err.msg} "
            "(variants look like {a|b|c}, wildcards like __name__)"
        ) from None
    except RecursionError:
        raise EngineError(f"{template!r}: a wildcard or variable refers to itself") from None


@dataclass(frozen=True)
class Part:
    """What a diffusers call renders for job `job`: the whole request (it has no syntax, `image` -1), or its image
    `image` alone (batch 1, that image's seed, its prompts drawn), with the `Template` keys for its infotext."""

    job: int
    image: int
    request: GenerationRequest
    template: dict[str, str]


def split(requests: Sequence[GenerationRequest], prompts: DynamicPrompts) -> list[Part]:
    """The parts of seeded requests: a request without the syntax is one part, as it is."""
    parts = []
    for job, request in enumerate(requests):
        if not _dynamic(request):
            parts.append(Part(job, -1, request, {}))
            continue
        seeds = request.seeds()
        if request.combinatorial:
            drawn = prompts.combinations(request.prompt, request.negative_prompt, request.batch_size)
        else:
            drawn = prompts.for_seeds(request.prompt, request.negative_prompt, seeds)
        template = template_params(request.prompt, request.negative_prompt)
        for image, (seed, pair) in enumerate(zip(seeds, drawn)):
            one = request.replace(
                prompt=pair.prompt, negative_prompt=pair.negative_prompt, seed=seed, batch_size=1, combinatorial=False
            )
            parts.append(Part(job, image, one, template))
    return parts


def grouped(parts: Sequence[Part], key: Callable[[GenerationRequest], Hashable]) -> list[list[Part]]:
    """Parts that may share a diffusers call (equal `key`: the batch key and the prompt chunk count, as the
    worker's batching asks), in the order their first part comes."""
    groups: dict[Hashable, list[Part]] = {}
    for part in parts:
        groups.setdefault(key(part.request), []).append(part)
    return list(groups.values())


def render_in_parts(
    requests: Sequence[GenerationRequest],
    prompts: DynamicPrompts,
    key: Callable[[GenerationRequest], Hashable],
    render: Callable[[list[Part]], Sequence[R]],
) -> list[R]:
    """Each job's result, its parts rendered group by group (`grouped` by `key`), then joined in image order."""
    done: dict[int, list[tuple[int, R]]] = {}
    for group in grouped(split(requests, prompts), key):
        for part, result in zip(group, render(group)):
            done.setdefault(part.job, []).append((part.image, result))
    return [joined(request, done[job]) for job, request in enumerate(requests)]


class _Result(Protocol):
    """What `joined` reads of a result (the pipeline's `RenderResult`, a frozen dataclass)."""

    @property
    def request(self) -> GenerationRequest: ...
    @property
    def images(self) -> list[Any]: ...
    @property
    def model(self) -> str: ...
    @property
    def seconds(self) -> float: ...
    @property
    def notes(self) -> tuple[str, ...]: ...


R = TypeVar("R", bound=_Result)


def joined(request: GenerationRequest, parts: list[tuple[int, R]]) -> R:
    """One job's result from its parts' `(image, result)` (a job without the syntax has one part: its result)."""
    if len(parts) == 1 and parts[0][0] == -1:
        return parts[0][1]
    results = [result for _, result in sorted(parts, key=lambda part: part[0])]
    first = results[0]
    return dataclasses.replace(
        first,  # type: ignore[type-var]  # a RenderResult, a dataclass: the Protocol cannot say so
        request=request.replace(model=request.model or first.model),
        images=[image for result in results for image in result.images],
        seconds=max(result.seconds for result in results),
        notes=tuple(dict.fromkeys(note for result in results for note in result.notes)),
    )


def _dynamic(request: GenerationRequest) -> bool:
    return has_syntax(request.prompt) or has_syntax(request.negative_prompt)
