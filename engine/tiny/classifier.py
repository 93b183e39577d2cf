"""A tiny image classifier made offline, for tests and benchmarks: a ~6,000-parameter ViT with labels
`normal`/`nsfw`, saved with `save_pretrained` as an admin's downloaded folder would be.

Its classifier head has zero weights and a chosen bias, so every image gets the same, known score:
`nsfw = sigmoid(nsfw_logit)`. `write_tiny_classifier(p, nsfw_logit=4)` flags everything (0.982),
`nsfw_logit=-4` passes everything (0.018); any score in between is `logit(score)`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

LABELS = ("normal", "nsfw")
IMAGE_SIZE = 32


def logit(score: float) -> float:
    """The `nsfw_logit` that makes the tiny classifier give every image `score`."""
    return math.log(score / (1.0 - score))


def write_tiny_classifier(path: Path, nsfw_logit: float = 4.0, *, seed: int = 0) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=8,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    torch.manual_seed(seed)
    model = ViTForImageClassification(config)
    head = model.classifier
    assert isinstance(head, torch.nn.Linear)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, float(nsfw_logit)]))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(path)
    return path
