"""Safety scores for rendered images: a local image classifier, run on the engine's device right after decoding.

An admin downloads a model folder once and names it in `[moderation] image_classifier`; nothing is fetched at run
time (every load is `local_files_only`). Two kinds of folder are understood:

* a transformers image-classification model (config.json, weights, preprocessor_config.json), for example a ViT
  fine-tuned for NSFW detection with labels `normal`/`nsfw`, loaded as transformers' `image-classification`
  pipeline; every label's probability is reported, as the model's config says to compute them (softmax, or
  sigmoid for multi-label models);
* a diffusers Stable Diffusion safety checker (config.json naming `StableDiffusionSafetyChecker`; its CLIP
  preprocessor_config.json beside it or in the sibling `feature_extractor/` folder, as in SD repositories). It
  only answers yes or no, reported as label `nsfw` with score 1.0 or 0.0.

Scores are `{label: probability}` per image. Which labels are unsafe, and what a score means for posting, is the
bot's business (bot/services/image_policy.py): the engine only measures.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from engine.errors import EngineError

log = logging.getLogger(__name__)

Scores = dict[str, float]
SAFETY_CHECKER = "StableDiffusionSafetyChecker"


class ClassifierError(EngineError):
    """The classifier folder is missing or cannot be loaded; the message names the folder and what is wrong."""


class ImageClassifier(Protocol):
    labels: tuple[str, ...]

    def score(self, images: Sequence[Image.Image]) -> list[Scores]: ...


class PipelineClassifier:
    """A transformers image-classification model, built as transformers' `image-classification` pipeline (which
    checks that model and preprocessor fit the task) and run as that pipeline would, with its image processor and
    its choice of sigmoid or softmax, but as one batched forward pass: the pipeline's own per-image loop costs
    about six times the model on small classifiers (tests/engine/render/test_classifier.py checks the scores agree)."""

    def __init__(self, path: Path, device: torch.device) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

        model = AutoModelForImageClassification.from_pretrained(path, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        self.labels = tuple(str(model.config.id2label[i]) for i in sorted(model.config.id2label))
        self._pipe = pipeline("image-classification", model=model, image_processor=processor, device=device)
        self._processor = processor  # the pipeline's own
        config = model.config
        self._sigmoid = config.problem_type == "multi_label_classification" or config.num_labels == 1

    @torch.inference_mode()
    def score(self, images: Sequence[Image.Image]) -> list[Scores]:
        if not images:
            return []
        pipe = self._pipe
        inputs = self._processor([im.convert("RGB") for im in images], return_tensors="pt")
        pixels = inputs["pixel_values"].to(pipe.device, pipe.model.dtype)
        logits = pipe.model(pixel_values=pixels).logits.float()
        probabilities = logits.sigmoid() if self._sigmoid else logits.softmax(-1)
        return [{label: float(p) for label, p in zip(self.labels, row)} for row in probabilities.cpu().tolist()]


class SafetyCheckerClassifier:
    """diffusers' Stable Diffusion safety checker: CLIP image embeddings against its concept embeddings."""

    labels: tuple[str, ...] = ("nsfw",)

    def __init__(self, path: Path, device: torch.device) -> None:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        self._checker = StableDiffusionSafetyChecker.from_pretrained(path, local_files_only=True).eval()
        module: torch.nn.Module = self._checker  # transformers' own `to` wrapper is typed unusably; same call
        module.to(device)  # in place
        for folder in (path, path.parent / "feature_extractor"):
            if (folder / "preprocessor_config.json").is_file():
                self._processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
                break
        else:  # CLIP's defaults (224 px, CLIP's mean and std): what SD's feature extractor uses
            self._processor = CLIPImageProcessor()
        self._device = device

    @torch.no_grad()
    def score(self, images: Sequence[Image.Image]) -> list[Scores]:
        if not images:
            return []
        checker = self._checker
        clip_input = self._processor([im.convert("RGB") for im in images], return_tensors="pt").pixel_values
        clip_input = clip_input.to(self._device, checker.dtype)
        placeholder = torch.zeros(len(images), 1)  # forward_onnx blanks flagged images; we only want the flags
        _, flagged = checker.forward_onnx(clip_input, placeholder)
        return [{"nsfw": 1.0 if bool(f) else 0.0} for f in flagged]


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> ImageClassifier:
    """Load the folder offline on `device`; `ClassifierError` with one readable line when it cannot be."""
    folder = Path(path).expanduser()
    where = f"the image classifier {folder}"
    if not folder.exists():
        raise ClassifierError(
            f"{where} does not exist: download the model folder once and name it in [moderation] image_classifier"
        )
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ClassifierError(f"{where} is not a model folder (it has no config.json)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClassifierError(f"{where} has an unreadable config.json ({_first_line(exc)})") from None
    kinds = {str(a) for a in config.get("architectures") or []} | {str(config.get("_class_name", ""))}
    kind = SafetyCheckerClassifier if SAFETY_CHECKER in kinds else PipelineClassifier
    try:
        with _quiet_transformers():
            classifier = kind(folder, torch.device(device))
    except Exception as exc:  # noqa: BLE001 - whatever transformers raises, the admin gets one line
        raise ClassifierError(f"{where} could not be loaded: {type(exc).__name__}: {_first_line(exc)}") from None
    if not classifier.labels:
        raise ClassifierError(f"{where} has no labels (config.json id2label is empty)")
    return classifier


class ScoringStage:
    """The engine's stage 7b: loads the classifier once, on first use (or at start through `load()`), and scores a
    render call's images in one batch. A failure while scoring leaves the images unscored (None) rather than
    failing the render: a guild that posts only scored images then sends them to a human."""

    def __init__(self, path: Path | None, device: str | torch.device) -> None:
        self.path = path
        self.device = device
        self._classifier: ImageClassifier | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def load(self) -> ImageClassifier | None:
        """The loaded classifier (None when none is configured); raises `ClassifierError`."""
        if self.path is None:
            return None
        with self._lock:
            if self._classifier is None:
                self._classifier = load_classifier(self.path, self.device)
                log.info("image classifier loaded from %s (labels: %s)", self.path, ", ".join(self._classifier.labels))
            return self._classifier

    def __call__(self, images: Sequence[Image.Image]) -> list[Scores] | None:
        if self.path is None:
            return None
        try:
            classifier = self.load()
            assert classifier is not None
            scores = classifier.score(images)
        except Exception:  # noqa: BLE001 - an unscored image is held, not lost
            log.exception("the image classifier failed; %d image(s) go unscored", len(images))
            return None
        return scores if len(scores) == len(images) else None


@contextlib.contextmanager
def _quiet_transformers():
    """No progress bars or advice on stderr while loading: a start-up failure stays one line."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no detail"
