"""What the image classifier's scores mean for posting, in a guild's `auto` moderation mode (pure: no I/O).

A job's images are judged together by the worst of them: an image's unsafe score is the sum of the
probabilities of the labels named in `[moderation] unsafe_labels` (a model with `porn`, `hentai`, `sexy`
splits its belief between them). At or under `flag_above` the job is posted; above it and up to `block_above`
it waits in the review queue; above `block_above` it is refused and kept for moderators. Age-restricted
channels may have the guild's own thresholds. A job without scores (the classifier failed, or was added after
the job rendered) is held: nothing is posted before its score is known.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.errors import ConfigError, UserError

Scores = dict[str, float]


class Verdict(StrEnum):
    POST = "post"
    HOLD = "hold"
    BLOCK = "block"


@dataclass(frozen=True)
class Thresholds:
    flag_above: float
    block_above: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.flag_above <= self.block_above <= 1.0:
            raise ValueError(f"thresholds need 0 <= flag_above <= block_above <= 1, got {self}")

    def verdict(self, score: float) -> Verdict:
        if score > self.block_above:
            return Verdict.BLOCK
        if score > self.flag_above:
            return Verdict.HOLD
        return Verdict.POST

    def text(self) -> str:
        return f"flag above {self.flag_above:.2f}, block above {self.block_above:.2f}"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str  # for the review item and the user: the score, the label, the threshold passed
    score: float | None = None  # the worst image's unsafe score; None: not scored


@dataclass(frozen=True)
class ImagePolicy:
    """The bot's classifier settings (`[moderation]`): which labels are unsafe, and the default thresholds."""

    unsafe_labels: tuple[str, ...]
    thresholds: Thresholds

    def unsafe_score(self, scores: Scores) -> tuple[float, str]:
        """The image's unsafe score and its most likely unsafe label."""
        present = [(scores.get(label, 0.0), label) for label in self.unsafe_labels]
        top = max(present)[1] if present else ""
        return min(1.0, sum(s for s, _ in present)), top

    def check_labels(self, labels: Sequence[str], where: str) -> None:
        """`ConfigError` unless every unsafe label is one the classifier gives."""
        missing = [label for label in self.unsafe_labels if label not in labels]
        if missing:
            raise ConfigError(
                f"[moderation] unsafe_labels names {', '.join(missing)}, which the image classifier "
                f"{where} does not give; its labels are {', '.join(labels)}"
            )

    def thresholds_for(
        self, nsfw_flag_above: float | None, nsfw_block_above: float | None, nsfw_channel: bool
    ) -> Thresholds:
        if nsfw_channel and nsfw_flag_above is not None and nsfw_block_above is not None:
            return Thresholds(nsfw_flag_above, nsfw_block_above)
        return self.thresholds

    def judge(self, image_scores: Sequence[Scores | None] | None, thresholds: Thresholds) -> Judgement:
        known = [s for s in image_scores or () if s is not None]
        if not known or len(known) < len(image_scores or ()):
            return Judgement(Verdict.HOLD, "the image classifier gave no score, so a moderator looks instead")
        scored = [(*self.unsafe_score(s), i) for i, s in enumerate(known, start=1)]
        score, label, index = max(scored)
        verdict = thresholds.verdict(score)
        which = f" (image {index} of {len(scored)})" if len(scored) > 1 else ""
        if verdict is Verdict.POST:
            return Judgement(verdict, f"image classifier: {label} {score:.2f}{which}", score)
        limit = thresholds.block_above if verdict is Verdict.BLOCK else thresholds.flag_above
        kind = "blocked" if verdict is Verdict.BLOCK else "held"
        return Judgement(
            verdict, f"{kind} by the image classifier: {label} {score:.2f}{which}, above {limit:.2f}", score
        )


def scores_line(scores: Scores | None, limit: int = 3, digits: int = 2) -> str:
    """`nsfw 0.98 · normal 0.02`: an image's labels, most likely first (for the review card and `sdbot classify`)."""
    if scores is None:
        return "not scored"
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])[:limit]
    return " · ".join(f"{label} {score:.{digits}f}" for label, score in ranked)


_NUMBER = r"(?:0(?:\.\d+)?|1(?:\.0+)?|\.\d+)"
_PAIR = re.compile(rf"^\s*({_NUMBER})\s*(?:[,/ ]|\s)\s*({_NUMBER})\s*$")
NSFW_HELP = (
    "nsfw_channels takes two scores from 0 to 1, flag then block (e.g. `0.8 0.95`), `off` (nothing is "
    "held in age-restricted channels) or `default` (the same thresholds as elsewhere)"
)


def parse_nsfw_thresholds(text: str) -> tuple[float | None, float | None]:
    """`/config moderation nsfw_channels:` -> (flag_above, block_above); (None, None) for `default`."""
    value = (text or "").strip().lower()
    if value in ("default", "same", "reset"):
        return None, None
    if value in ("off", "none", "allow"):
        return 1.0, 1.0
    match = _PAIR.match(value)
    if match is None:
        raise UserError(f"{NSFW_HELP}; got {text[:40]!r}")
    flag, block = float(match.group(1)), float(match.group(2))
    if flag > block:
        raise UserError(f"the flag score ({flag:g}) must not be above the block score ({block:g}); {NSFW_HELP}")
    return flag, block
