"""Dynamic prompts through the real render path (tiny model): each image's prompt drawn from its seed, pixel-equal
to the same seed rendered alone, the infotext's resolved prompt and `Template` keys, combinatorial batches, LoRA
tags inside variants, wildcard files beside the models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.config import EngineConfig
from engine.errors import EngineError
from engine.infotext import parse_infotext
from engine.render.dynamic_prompts import DynamicPrompts
from engine.render.pipeline import Engine
from engine.request import GenerationRequest
from engine.tiny.networks import write_network

TEMPLATE = "a {red|green|blue|white} {cat|dog} on __places__"


def req(**kw) -> GenerationRequest:
    base = dict(prompt=TEMPLATE, seed=11, width=64, height=64, steps=2, sampler="Euler")
    return GenerationRequest(**{**base, **kw})


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_sd15: Path) -> Path:
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_sd15, root / "tiny-sd15")
    (root / "wildcards").mkdir()
    (root / "wildcards" / "places.txt").write_text("a mat\na roof\nthe moon\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def engine(models: Path) -> Engine:
    return Engine(EngineConfig(models_dir=models))


def pixels(image) -> np.ndarray:
    return np.asarray(image.image)


def info(image):
    return parse_infotext(image.infotext)


def test_each_image_draws_from_its_seed_and_equals_its_solo_render(engine, models):
    batch = engine.render(req(batch_size=3))
    drawn = DynamicPrompts(models / "wildcards").for_seeds(TEMPLATE, "", [11, 12, 13])
    assert [info(i).prompt for i in batch.images] == [d.prompt for d in drawn]
    assert [i.seed for i in batch.images] == [11, 12, 13]
    for i, image in enumerate(batch.images):
        alone = engine.render(req(seed=11 + i)).images[0]
        assert np.array_equal(pixels(image), pixels(alone))
        assert image.infotext == alone.infotext
        literal = engine.render(req(prompt=drawn[i].prompt, seed=11 + i)).images[0]
        assert np.array_equal(pixels(image), pixels(literal))  # the drawn prompt is what was encoded
    assert batch.request.prompt == TEMPLATE and batch.seed == 11


def test_the_infotext_has_the_resolved_prompt_and_the_templates(engine):
    image = engine.render(req(negative_prompt="{blurry|ugly}, low quality")).images[0]
    parsed = info(image)
    assert "{" not in parsed.prompt and "__" not in parsed.prompt
    assert parsed.negative_prompt in ("blurry, low quality", "ugly, low quality")
    assert parsed.params["Template"] == TEMPLATE
    assert parsed.params["Negative Template"] == "{blurry|ugly}, low quality"
    assert list(parsed.params)[-1] == "Version"
    plain = info(engine.render(req(prompt="a cat")).images[0])
    assert "Template" not in plain.params


def test_combinatorial_gives_each_image_the_next_combination(engine):
    result = engine.render(req(prompt="a {red|blue} {cat|dog}", batch_size=3, combinatorial=True))
    assert [info(i).prompt for i in result.images] == ["a red cat", "a red dog", "a blue cat"]
    assert [i.seed for i in result.images] == [11, 12, 13]
    fewer = engine.render(req(prompt="a {red|blue} cat", batch_size=4, combinatorial=True))
    assert [info(i).prompt for i in fewer.images] == ["a red cat", "a blue cat"]  # one image per combination


def test_images_whose_drawn_prompts_cannot_share_a_call_are_rendered_apart(engine, models):
    """A LoRA tag inside a variant: images with and without it need different weights, so different calls."""
    write_network(engine.models.checkpoint("").pipe, models / "Lora" / "shiny.safetensors", seed=4)
    template = "a cat {<lora:shiny:1>|plain}"
    drawn = DynamicPrompts(None).for_seeds(template, "", [0, 1, 2, 3])
    assert ["shiny" in d.prompt for d in drawn] == [False, False, True, False]  # seeds 0-3: the LoRA in the middle
    batch = engine.render(req(prompt=template, seed=0, batch_size=4))
    assert [info(i).prompt for i in batch.images] == [d.prompt for d in drawn]  # image order kept
    assert "Lora hashes" in info(batch.images[2]).params and "Lora hashes" not in info(batch.images[0]).params
    for i, image in enumerate(batch.images):
        alone = engine.render(req(prompt=drawn[i].prompt, seed=i)).images[0]
        assert np.array_equal(pixels(image), pixels(alone))


def test_a_batch_of_several_jobs_keeps_each_jobs_images(engine):
    jobs = [req(seed=40, batch_size=2), req(prompt="a plain cat", seed=50, batch_size=2)]
    results = engine.render_batch(jobs)
    assert [[i.seed for i in r.images] for r in results] == [[40, 41], [50, 51]]
    assert [info(i).prompt for i in results[1].images] == ["a plain cat", "a plain cat"]
    assert np.array_equal(pixels(results[0].images[1]), pixels(engine.render(req(seed=41)).images[0]))


def test_a_missing_wildcard_fails_the_job_in_one_line(engine):
    with pytest.raises(EngineError, match="no wildcard named __colours__"):
        engine.render(req(prompt="a __colours__ cat"))
