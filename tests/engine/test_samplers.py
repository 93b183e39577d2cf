"""engine.samplers: A1111's sampler and schedule names mapped to diffusers schedulers as the spec's table says
(spec §4), in both the combined and the separate form, and refused in one line when there is no equivalent."""

from __future__ import annotations

import diffusers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import EngineError
from engine.samplers import (
    SAMPLERS,
    SCHEDULES,
    UNSUPPORTED,
    make_scheduler,
    normalize_sampler,
    sampler_labels,
    sampler_names,
)

# An SD 1.x checkpoint's scheduler config, as its scheduler_config.json holds it.
BASE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}

# Spec §4, row by row: A1111's name -> the diffusers scheduler and the settings that make it that sampler.
SPEC = [
    ("Euler a", "EulerAncestralDiscreteScheduler", {}),
    ("Euler", "EulerDiscreteScheduler", {}),
    ("LMS", "LMSDiscreteScheduler", {}),
    ("Heun", "HeunDiscreteScheduler", {}),
    ("DPM2", "KDPM2DiscreteScheduler", {}),
    ("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}),
    ("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    ("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    ("DPM++ SDE", "DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++"}),
    ("DDIM", "DDIMScheduler", {}),
    ("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
    ("UniPC", "UniPCMultistepScheduler", {}),
]


def test_the_samplers_are_the_specs():
    assert sampler_names() == [name for name, _, _ in SPEC]


@pytest.mark.parametrize(("name", "scheduler", "settings"), SPEC)
def test_each_sampler_builds_its_scheduler_from_the_checkpoints_config(name, scheduler, settings):
    built = make_scheduler(name, "Automatic", BASE)
    assert type(built) is getattr(diffusers, scheduler)
    for key, value in {**settings, **BASE}.items():
        assert built.config[key] == value


@pytest.mark.parametrize(
    ("schedule", "key", "value"),
    [
        ("Karras", "use_karras_sigmas", True),
        ("Exponential", "use_exponential_sigmas", True),
        ("Beta", "use_beta_sigmas", True),
        ("SGM Uniform", "timestep_spacing", "trailing"),
    ],
)
def test_each_schedule_type_sets_what_the_spec_says(schedule, key, value):
    assert make_scheduler("Euler", schedule, BASE).config[key] == value


def test_automatic_keeps_the_checkpoints_own_schedule():
    built = make_scheduler("Euler", "Automatic", {**BASE, "timestep_spacing": "leading"})
    assert built.config.timestep_spacing == "leading" and not built.config.use_karras_sigmas


def test_every_job_gets_a_fresh_scheduler():
    """Schedulers keep state between steps: sharing one between jobs would mix their steps."""
    first, second = make_scheduler("DPM++ 2M", "Karras", BASE), make_scheduler("DPM++ 2M", "Karras", BASE)
    assert first is not second


@pytest.mark.parametrize(
    ("sampler", "schedule", "expected"),
    [
        ("DPM++ 2M Karras", "Automatic", ("DPM++ 2M", "Karras")),  # A1111's combined form
        ("DPM++ 2M", "Karras", ("DPM++ 2M", "Karras")),  # and its newer separate form
        ("dpm++  2m   karras", "automatic", ("DPM++ 2M", "Karras")),  # any case and spacing
        ("DPM++ 2M SDE Exponential", "", ("DPM++ 2M SDE", "Exponential")),
        ("DPM++ 2M Karras", "Beta", ("DPM++ 2M", "Karras")),  # the name's own schedule wins
        ("euler a", "SGM Uniform", ("Euler a", "SGM Uniform")),
        ("DDIM", "SGM Uniform", ("DDIM", "SGM Uniform")),
    ],
)
def test_names_as_users_and_infotexts_write_them(sampler, schedule, expected):
    assert normalize_sampler(sampler, schedule) == expected


@pytest.mark.parametrize(
    ("sampler", "schedule", "message"),
    [
        ("DPM fast", "Automatic", "'DPM fast' has no diffusers equivalent; valid samplers: Euler a, Euler"),
        ("DPM++ 2S a Karras", "Automatic", "has no diffusers equivalent"),
        ("Eulr", "Automatic", "unknown sampler 'Eulr'; valid samplers: Euler a, Euler, LMS"),
        ("Euler", "Polyexponential", "unknown schedule type 'Polyexponential'; valid: Automatic, Karras"),
        ("DDIM", "Karras", "sampler 'DDIM' cannot use schedule 'Karras'; use Automatic or SGM Uniform"),
        ("PLMS Karras", "Automatic", "sampler 'PLMS' cannot use schedule 'Karras'"),
    ],
)
def test_what_cannot_be_used_is_refused_in_one_line(sampler, schedule, message):
    with pytest.raises(EngineError) as info:
        normalize_sampler(sampler, schedule)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_non_text_is_refused():
    with pytest.raises(EngineError, match="must be text"):
        normalize_sampler(None, "Automatic")  # type: ignore[arg-type]  # a caller's bug, said plainly


def test_every_label_offered_is_accepted_and_no_refused_one_is_offered():
    labels = sampler_labels()
    assert "DPM++ 2M Karras" in labels and "Euler a" in labels
    assert "DDIM Karras" not in labels and "DDIM SGM Uniform" in labels
    for label in labels:
        name, schedule = normalize_sampler(label)
        assert name in SAMPLERS and schedule in SCHEDULES
    assert not any(label.startswith(tuple(UNSUPPORTED)) for label in labels)


_WORDS = st.sampled_from([*SAMPLERS, *SCHEDULES, *UNSUPPORTED, "karras", " ", "a", "2M", "DPM++"])


@given(sampler=st.one_of(st.text(max_size=30), st.lists(_WORDS, max_size=4).map(" ".join)), schedule=_WORDS)
def test_any_text_gives_a_canonical_pair_or_our_error(sampler, schedule):
    try:
        name, canonical = normalize_sampler(sampler, schedule)
    except EngineError as exc:
        assert str(exc).strip()
        return
    assert normalize_sampler(name, canonical) == (name, canonical)  # canonical names read back as themselves
