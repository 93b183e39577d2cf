"""`sdbot classify IMAGE… [--config F]`: the image classifier's scores for pictures of the admin's own, to tune
`[moderation] flag_above` / `block_above` before a guild turns on `auto` mode."""

from __future__ import annotations

import argparse
from pathlib import Path

from bot.config import load_config
from bot.errors import UserError

CHUNK = 16  # images scored per batch: bounded memory however many files are named


def add_parsers(sub) -> None:
    p = sub.add_parser("classify", help="print each image's scores from [moderation] image_classifier")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--config", metavar="F")
    p.set_defaults(func=cmd_classify)


def cmd_classify(args: argparse.Namespace) -> int:
    from bot.services.image_policy import scores_line
    from engine.models.loader import resolve_device
    from engine.render.classifier import load_classifier

    config = load_config(args.config)
    policy, path = config.image_policy(), config.image_classifier
    if policy is None or path is None:
        raise UserError(
            "no image classifier: set [moderation] image_classifier to the model's folder in the config "
            f"({config.source or 'none given; use --config F'}); see config.example.toml"
        )
    images = [_open(Path(p)) for p in args.images]
    classifier = load_classifier(path, resolve_device(config.engine_config().device))
    policy.check_labels(classifier.labels, str(path))
    thresholds = policy.thresholds
    print(f"# {path}: unsafe = {' + '.join(policy.unsafe_labels)}; {thresholds.text()}")
    for start in range(0, len(images), CHUNK):
        chunk = images[start : start + CHUNK]
        for name, scores in zip(args.images[start : start + CHUNK], classifier.score(chunk)):
            unsafe, _ = policy.unsafe_score(scores)
            print(
                f"{name}: {scores_line(scores, limit=len(scores), digits=3)} -> unsafe {unsafe:.3f}: "
                f"{thresholds.verdict(unsafe)}"
            )
    return 0


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: not an image Pillow can read ({exc.__class__.__name__})") from None
