"""The image classifier: loaded offline from a tiny ViT folder, scoring a render's images in one batch on the
engine's device right after decoding, the scores riding on the worker's `Finished` event; broken folders give one
line; a diffusers safety checker folder works too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine.backends.worker import Finished, Worker
from engine.config import EngineConfig
from engine.render.classifier import ClassifierError, ScoringStage, load_classifier
from engine.render.pipeline import Engine
from engine.request import GenerationRequest
from engine.tiny.classifier import logit, write_tiny_classifier


@pytest.fixture(scope="module")
def flags_all(tmp_path_factory) -> Path:
    return write_tiny_classifier(tmp_path_factory.mktemp("clf") / "flags-all", nsfw_logit=4.0)


@pytest.fixture(scope="module")
def passes_all(tmp_path_factory) -> Path:
    return write_tiny_classifier(tmp_path_factory.mktemp("clf") / "passes-all", nsfw_logit=-4.0)


def images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (64, 48), (40 * i, 90, 200)) for i in range(n)]


def test_tiny_classifier_is_tiny_and_gives_its_known_score(flags_all, passes_all):
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(flags_all, local_files_only=True)
    assert sum(p.numel() for p in model.parameters()) < 10_000
    flagged = load_classifier(flags_all)
    assert flagged.labels == ("normal", "nsfw")
    [a, b] = flagged.score(images(2))
    assert a == pytest.approx({"nsfw": torch.sigmoid(torch.tensor(4.0)).item(), "normal": 1 - 0.98201379}, abs=1e-5)
    assert a == pytest.approx(b)
    [c] = load_classifier(passes_all).score(images(1))
    assert c["nsfw"] == pytest.approx(0.0179862, abs=1e-5)
    assert logit(0.75) == pytest.approx(1.0986, abs=1e-4)


def test_batched_scores_agree_with_the_transformers_pipeline(tmp_path):
    from transformers import ViTForImageClassification

    folder = write_tiny_classifier(tmp_path / "clf")
    model = ViTForImageClassification.from_pretrained(folder)
    with torch.no_grad():  # a head that looks at the picture, so the images score differently
        model.classifier.weight.normal_(0, 3.0)
    model.save_pretrained(folder)
    classifier = load_classifier(folder)
    pictures = [Image.new("RGB", (48, 40), (250 * (i % 2), 60 * i, 30)) for i in range(3)]
    ours = classifier.score(pictures)
    theirs = classifier._pipe(pictures, top_k=None)
    assert len({round(s["nsfw"], 4) for s in ours}) > 1
    for mine, per_image in zip(ours, theirs):
        assert mine == pytest.approx({row["label"]: row["score"] for row in per_image}, abs=1e-5)


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("missing", "does not exist: download the model folder once"),
        ("no-config", "is not a model folder (it has no config.json)"),
        ("bad-json", "has an unreadable config.json"),
        ("no-weights", "could not be loaded: "),
        ("bad-weights", "could not be loaded: "),
    ],
)
def test_a_broken_folder_gives_one_clear_line(tmp_path, flags_all, damage, expected):
    import shutil

    folder = tmp_path / "clf"
    if damage != "missing":
        shutil.copytree(flags_all, folder)
    if damage == "no-config":
        (folder / "config.json").unlink()
    elif damage == "bad-json":
        (folder / "config.json").write_text("{not json")
    elif damage == "no-weights":
        (folder / "model.safetensors").unlink()
    elif damage == "bad-weights":
        (folder / "model.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(ClassifierError) as err:
        load_classifier(folder)
    message = str(err.value)
    assert expected in message and str(folder) in message and "\n" not in message


def test_a_failing_classifier_leaves_images_unscored_not_lost(tmp_path, flags_all):
    stage = ScoringStage(flags_all, "cpu")
    assert stage(images(2)) is not None

    def broken(_images):
        raise RuntimeError("boom")

    stage.load().score = broken  # type: ignore[method-assign]
    assert stage(images(2)) is None
    assert ScoringStage(None, "cpu")(images(1)) is None


def test_render_scores_the_whole_batch_at_once_on_the_engines_device(models_dir, flags_all):
    engine = Engine(EngineConfig(models_dir=models_dir, image_classifier=flags_all))
    classifier = engine.scorer.load()
    assert classifier._pipe.device == engine.models.device
    calls: list[int] = []
    score = classifier.score

    def counted(batch):
        calls.append(len(batch))
        return score(batch)

    classifier.score = counted  # type: ignore[method-assign]
    requests = [
        GenerationRequest(prompt=p, seed=3, width=64, height=64, steps=2, sampler="Euler", batch_size=2)
        for p in ("a cat", "a dog")
    ]
    results = engine.render_batch(requests)
    assert calls == [4]  # both jobs' images, in one call
    assert [round(img.scores["nsfw"], 3) for r in results for img in r.images] == [0.982] * 4


def test_without_a_classifier_nothing_is_scored(models_dir):
    engine = Engine(EngineConfig(models_dir=models_dir))
    result = engine.render(GenerationRequest(prompt="a cat", seed=1, width=64, height=64, steps=2, sampler="Euler"))
    assert result.images[0].scores is None


async def test_the_finished_event_carries_the_scores(models_dir, passes_all):
    async with Worker(EngineConfig(models_dir=models_dir, image_classifier=passes_all)) as worker:
        await worker.call(lambda engine: engine.scorer.load())  # as `sdbot run` does at start
        handle = worker.submit(
            GenerationRequest(prompt="a dog", seed=2, width=64, height=64, steps=2, sampler="Euler"), owner=1
        )
        events = [e async for e in handle]
    assert isinstance(events[-1], Finished)
    assert events[-1].result.images[0].scores["nsfw"] == pytest.approx(0.018, abs=1e-3)


def write_tiny_safety_checker(path: Path, flag: bool) -> Path:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=100,
            max_position_embeddings=16,
        ),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=8,
    )
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():  # cosine similarity is at least -1: a weight of -2 flags every image, 2 none
        checker.concept_embeds_weights.fill_(-2.0 if flag else 2.0)
        checker.special_care_embeds_weights.fill_(2.0)
    checker.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path.parent / "feature_extractor"
    )  # beside it, as in a Stable Diffusion repository
    return path


@pytest.mark.parametrize("flag", [True, False])
def test_a_diffusers_safety_checker_folder_answers_yes_or_no(tmp_path, flag):
    folder = write_tiny_safety_checker(tmp_path / "safety_checker", flag)
    assert "StableDiffusionSafetyChecker" in json.loads((folder / "config.json").read_text())["architectures"]
    classifier = load_classifier(folder)
    assert classifier.labels == ("nsfw",)
    assert classifier.score(images(3)) == [{"nsfw": 1.0 if flag else 0.0}] * 3
