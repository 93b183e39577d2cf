"""Epsilon or v-prediction, as A1111 decides for a checkpoint: a `<stem>.yaml` beside it first (`parameterization:
"v"`), then a `v_pred` key (Forge's marker, also used by v-prediction SDXL merges), and for SD 2.x without either,
A1111's test of the UNet itself (SD 2.x comes as 512 px epsilon and 768 px v-prediction models with the same keys).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from engine.errors import EngineError

log = logging.getLogger(__name__)


def explicit_prediction_type(path: Path | None, state: Mapping[str, Any]) -> str | None:
    """ "v_prediction" / "epsilon" when the checkpoint says so: a `<stem>.yaml` beside it (A1111 reads that
    first; `parameterization: "v"` means v-prediction, none means epsilon) or a `v_pred` key; else None."""
    if path is not None:
        config = path.with_suffix(".yaml")
        if config.exists():
            try:
                import yaml

                data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
                params = (data.get("model") or {}).get("params") or {}
            except Exception as exc:  # a broken sidecar is reported and ignored, as the key test still works
                log.warning("ignoring %s: not a readable LDM config (%s)", config.name, exc)
            else:
                return "v_prediction" if params.get("parameterization") == "v" else "epsilon"
    if "v_pred" in state:
        return "v_prediction"
    return None


def is_v_prediction_sd2(unet) -> bool:
    """A1111's `is_using_v_parameterization_for_sd2`: at t=999 on a constant input and constant conditioning, a
    v-prediction UNet's output is far below the input (`mean(out - x) < -1`), an epsilon UNet's is not."""
    param = next(unet.parameters())
    dims = unet.config.cross_attention_dim

    def run(dtype: torch.dtype) -> float:
        x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, dtype=dtype, device=param.device)
        cond = torch.full((1, 2, dims), 0.5, dtype=dtype, device=param.device)
        t = torch.tensor([999], device=param.device)
        with torch.no_grad():
            out = unet(x, t, encoder_hidden_states=cond).sample
        return (out.float() - x.float()).mean().item()

    try:
        value = run(param.dtype)
    except RuntimeError:  # a half-precision op missing on this device: test in float32, as A1111 does
        original = param.dtype
        unet.float()
        try:
            value = run(torch.float32)
        finally:
            unet.to(original)
    return value < -1


def scheduler_for(config: dict[str, Any], prediction_type: str | None, zero_snr: bool, where: str):
    """The checkpoint's scheduler from its config, with the prediction type decided above and zero terminal SNR
    when the checkpoint asks for it (a `ztsnr` key)."""
    import diffusers

    cls = getattr(diffusers, config.get("_class_name", "PNDMScheduler"), None)
    if cls is None:
        raise EngineError(f"{where}: unknown scheduler {config.get('_class_name')}")
    if prediction_type:
        config["prediction_type"] = prediction_type
    if zero_snr:
        config["rescale_betas_zero_snr"] = True
    return cls.from_config(config)
