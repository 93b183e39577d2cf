"""What scores mean: thresholds (strictly above), the worst image decides, unscored means held; the
`nsfw_channels` parser (property-tested)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import ConfigError, UserError
from bot.services.image_policy import (
    ImagePolicy,
    Thresholds,
    Verdict,
    parse_nsfw_thresholds,
    scores_line,
)

POLICY = ImagePolicy(("nsfw",), Thresholds(0.5, 0.9))


@pytest.mark.parametrize(
    "score, verdict",
    [
        (0.0, Verdict.POST),
        (0.5, Verdict.POST),
        (0.5001, Verdict.HOLD),
        (0.9, Verdict.HOLD),
        (0.9001, Verdict.BLOCK),
    ],
)
def test_thresholds_are_strictly_above(score, verdict):
    assert Thresholds(0.5, 0.9).verdict(score) is verdict


def test_thresholds_must_be_ordered_scores():
    for flag, block in ((0.9, 0.5), (-0.1, 0.5), (0.5, 1.1)):
        with pytest.raises(ValueError):
            Thresholds(flag, block)


def test_the_worst_image_decides_and_the_reason_names_it():
    judged = POLICY.judge([{"nsfw": 0.1, "normal": 0.9}, {"nsfw": 0.95, "normal": 0.05}], POLICY.thresholds)
    assert judged.verdict is Verdict.BLOCK and judged.score == 0.95
    assert judged.reason == "blocked by the image classifier: nsfw 0.95 (image 2 of 2), above 0.90"
    held = POLICY.judge([{"nsfw": 0.7, "normal": 0.3}], POLICY.thresholds)
    assert (held.verdict, held.reason) == (Verdict.HOLD, "held by the image classifier: nsfw 0.70, above 0.50")
    assert POLICY.judge([{"nsfw": 0.2}], POLICY.thresholds).verdict is Verdict.POST


def test_unscored_images_are_held():
    for scores in (None, [], [{"nsfw": 0.1}, None]):
        judged = POLICY.judge(scores, POLICY.thresholds)
        assert judged.verdict is Verdict.HOLD and "no score" in judged.reason


def test_several_unsafe_labels_add_up():
    policy = ImagePolicy(("porn", "hentai", "sexy"), Thresholds(0.5, 0.9))
    assert policy.unsafe_score({"porn": 0.3, "hentai": 0.3, "sexy": 0.1, "neutral": 0.3}) == (
        pytest.approx(0.7),
        "porn",
    )
    assert policy.judge([{"porn": 0.3, "hentai": 0.3, "neutral": 0.4}], policy.thresholds).verdict is Verdict.HOLD


def test_nsfw_channels_use_the_guilds_thresholds_when_set():
    assert POLICY.thresholds_for(0.8, 0.95, nsfw_channel=True) == Thresholds(0.8, 0.95)
    assert POLICY.thresholds_for(0.8, 0.95, nsfw_channel=False) == POLICY.thresholds
    assert POLICY.thresholds_for(None, None, nsfw_channel=True) == POLICY.thresholds


def test_unknown_unsafe_labels_are_a_config_error():
    POLICY.check_labels(("normal", "nsfw"), "clf")
    with pytest.raises(
        ConfigError, match="names nsfw, which the image classifier clf does not give; its labels are neutral, porn"
    ):
        POLICY.check_labels(("neutral", "porn"), "clf")


def test_scores_line():
    assert scores_line({"normal": 0.25, "nsfw": 0.75}) == "nsfw 0.75 · normal 0.25"
    assert scores_line(None) == "not scored"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.8 0.95", (0.8, 0.95)),
        ("0.8/0.95", (0.8, 0.95)),
        (" .5 , 1 ", (0.5, 1.0)),
        ("0 0", (0.0, 0.0)),
        ("off", (1.0, 1.0)),
        ("Default", (None, None)),
    ],
)
def test_parse_nsfw_thresholds(text, expected):
    assert parse_nsfw_thresholds(text) == expected


@pytest.mark.parametrize("text", ["0.95 0.8", "0.8", "1.5 2", "high", "0.80.95", "-0.1 0.5", ""])
def test_parse_nsfw_thresholds_refuses_with_what_is_allowed(text):
    with pytest.raises(UserError, match="two scores from 0 to 1, flag then block"):
        parse_nsfw_thresholds(text)


@given(st.floats(0, 1), st.floats(0, 1), st.sampled_from([" ", "/", ",", " , "]))
def test_parse_nsfw_thresholds_round_trips(a, b, sep):
    flag, block = sorted((round(a, 4), round(b, 4)))
    assert parse_nsfw_thresholds(f"{flag}{sep}{block}") == (flag, block)


@given(st.text(max_size=40))
def test_parse_nsfw_thresholds_never_crashes(text):
    try:
        flag, block = parse_nsfw_thresholds(text)
    except UserError:
        return
    assert (flag, block) == (None, None) or 0 <= flag <= block <= 1
