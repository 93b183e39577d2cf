"""A1111 sampler and schedule names mapped to diffusers schedulers (spec §4).

Schedulers keep state between steps, so `make_scheduler` builds a fresh one per job from the checkpoint's own
scheduler config. Samplers A1111 has and diffusers lacks are refused with a message saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import EngineError


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler: str  # diffusers class name
    options: dict[str, Any] = field(default_factory=dict)


SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("Euler a", "EulerAncestralDiscreteScheduler"),
        Sampler("Euler", "EulerDiscreteScheduler"),
        Sampler("LMS", "LMSDiscreteScheduler"),
        Sampler("Heun", "HeunDiscreteScheduler"),
        Sampler("DPM2", "KDPM2DiscreteScheduler"),
        Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler"),
        Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
        Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
        Sampler("DPM++ SDE", "DPMSolverSinglestepScheduler"),
        Sampler("DDIM", "DDIMScheduler"),
        Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),  # LDM's PLMS has no Runge-Kutta warm-up
        Sampler("UniPC", "UniPCMultistepScheduler"),
    )
}

# Schedule type -> scheduler config overrides. "Automatic" keeps the checkpoint's own.
SCHEDULES: dict[str, dict[str, Any]] = {
    "Automatic": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}

# Schedulers that take sigma overrides (the others reject Karras & co. with a clear message).
_SIGMA_SCHEDULERS = {
    "EulerAncestralDiscreteScheduler",
    "EulerDiscreteScheduler",
    "LMSDiscreteScheduler",
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "UniPCMultistepScheduler",
}

UNSUPPORTED = {"DPM++ 2S a", "DPM fast", "DPM adaptive", "Restart", "DDPM", "LCM"}

_BY_LOWER = {name.lower(): name for name in SAMPLERS}
_SCHEDULE_BY_LOWER = {name.lower(): name for name in SCHEDULES}


def sampler_names() -> list[str]:
    return list(SAMPLERS)


def sampler_labels() -> list[str]:
    """Every name a user can type, combined forms included ("DPM++ 2M Karras")."""
    labels = list(SAMPLERS)
    for sampler in SAMPLERS:
        for schedule in SCHEDULES:
            if schedule != "Automatic" and _schedule_fits(sampler, schedule):
                labels.append(f"{sampler} {schedule}")
    return labels


def _schedule_fits(sampler: str, schedule: str) -> bool:
    return schedule in ("Automatic", "SGM Uniform") or SAMPLERS[sampler].scheduler in _SIGMA_SCHEDULERS


def normalize_sampler(sampler: str, schedule: str = "Automatic") -> tuple[str, str]:
    """Canonical (sampler, schedule) from what a user or an infotext wrote, case-insensitive.

    Accepts the new form (sampler and schedule apart) and the old combined one ("DPM++ 2M Karras"); a
    schedule inside the name wins over an `Automatic` schedule.
    """
    if not isinstance(sampler, str) or not isinstance(schedule, str):
        raise EngineError("sampler and schedule must be text")
    text = " ".join(sampler.split()).lower()
    sched_key = " ".join(schedule.split()).lower() or "automatic"
    if sched_key not in _SCHEDULE_BY_LOWER:
        raise EngineError(f"unknown schedule type {schedule!r}; valid: {', '.join(SCHEDULES)}")
    canonical_schedule = _SCHEDULE_BY_LOWER[sched_key]
    if text in _BY_LOWER:
        name = _BY_LOWER[text]
    else:
        for sched_lower, sched_name in _SCHEDULE_BY_LOWER.items():
            base = text.removesuffix(" " + sched_lower)
            if base != text and base in _BY_LOWER:
                name, canonical_schedule = _BY_LOWER[base], sched_name
                break
        else:
            if any(text.startswith(u.lower()) for u in UNSUPPORTED):
                raise EngineError(
                    f"sampler {sampler!r} has no diffusers equivalent; valid samplers: {', '.join(SAMPLERS)}"
                )
            raise EngineError(f"unknown sampler {sampler!r}; valid samplers: {', '.join(SAMPLERS)}")
    if not _schedule_fits(name, canonical_schedule):
        raise EngineError(f"sampler {name!r} cannot use schedule {canonical_schedule!r}; use Automatic or SGM Uniform")
    return name, canonical_schedule


def make_scheduler(sampler: str, schedule: str, base_config: dict[str, Any]):
    """A fresh diffusers scheduler for one job, from the checkpoint's scheduler config."""
    import diffusers

    name, schedule = normalize_sampler(sampler, schedule)
    spec = SAMPLERS[name]
    cls = getattr(diffusers, spec.scheduler)
    overrides = {**spec.options, **SCHEDULES[schedule]}
    if spec.scheduler == "DPMSolverSinglestepScheduler":
        overrides.setdefault("algorithm_type", "dpmsolver++")
    return cls.from_config(dict(base_config), **overrides)
