"""The delta one LoRA / LyCORIS module adds to its layer's weight, as A1111's Lora extension computes it
(`network_lora.py`, `network_hada.py`, `network_lokr.py`, `lyco_helpers.py`), times `alpha / rank`:

- LoRA / LoCon (`lora_down`, `lora_up`; diffusers/PEFT `lora_A` = down, `lora_B` = up): `up @ down`, with the
  CP form `lora_mid` for convolutions; rank = rows of `down`; `dyn` keeps the first `dyn` ranks;
- LoHa (`hada_w1_a/b`, `hada_w2_a/b`, optional CP `hada_t1/t2`): `(w1a @ w1b) ⊙ (w2a @ w2b)`; rank = rows of w1b;
- LoKr (`lokr_w1` or `lokr_w1_a @ lokr_w1_b`, `lokr_w2` or `lokr_w2_a @ lokr_w2_b`, optional `lokr_t2`):
  `kron(w1, w2)`; rank = rows of w1b or w2b (a LoKr with both factors full uses scale 1, as LyCORIS does).
"""

from __future__ import annotations

import torch

from engine.errors import EngineError


def module_delta(
    name: str, key: str, w: dict[str, torch.Tensor], weight: torch.Tensor, dyn: int | None
) -> torch.Tensor:
    """`delta × alpha/rank` for one module, in float32 and the layer's weight shape (no multiplier yet)."""
    f = {k: v.to(weight.device, torch.float32) for k, v in w.items()}
    if "lora_A.weight" in f:  # PEFT's names
        f["lora_down.weight"] = f.pop("lora_A.weight")
        if "lora_B.weight" in f:
            f["lora_up.weight"] = f.pop("lora_B.weight")
        else:
            f.pop("lora_up.weight", None)
    rank: int | None = None
    if "lora_down.weight" in f and f.get("lora_up.weight") is not None:
        up, down = f["lora_up.weight"], f["lora_down.weight"]
        rank = down.shape[0]
        if "lora_mid.weight" in f:
            mid = f["lora_mid.weight"]
            delta = torch.einsum(
                "n m k l, i n, m j -> i j k l", mid, up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1)
            )
        else:
            up, down = up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1)
            if dyn is not None:
                up, down = up[:, :dyn], down[:dyn, :]
            delta = up @ down
    elif all(k in f for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")):
        rank = f["hada_w1_b"].shape[0]
        delta = _hada_half(f, "1") * _hada_half(f, "2")
    elif ("lokr_w1" in f or "lokr_w1_a" in f) and ("lokr_w2" in f or "lokr_w2_a" in f):
        w1 = f["lokr_w1"] if "lokr_w1" in f else f["lokr_w1_a"] @ f["lokr_w1_b"]
        if "lokr_w2" in f:
            w2 = f["lokr_w2"]
        elif "lokr_t2" in f:
            w2 = _cp(f["lokr_t2"], f["lokr_w2_a"], f["lokr_w2_b"])
        else:
            w2 = f["lokr_w2_a"] @ f["lokr_w2_b"]
        rank = f["lokr_w1_b"].shape[0] if "lokr_w1_b" in f else f["lokr_w2_b"].shape[0] if "lokr_w2_b" in f else None
        if w2.ndim == 4:
            w1 = w1[:, :, None, None]
        delta = torch.kron(w1, w2.contiguous())
    else:
        raise EngineError(f"LoRA {name}: {key} has an incomplete set of weights ({', '.join(sorted(w))})")
    if delta.numel() != weight.numel():
        raise EngineError(
            f"LoRA {name} does not fit this checkpoint: {key} has shape {tuple(delta.shape)}, the model's layer "
            f"{tuple(weight.shape)} (a LoRA for another model family?)"
        )
    delta = delta.reshape(weight.shape)
    if "scale" in f:
        return delta * f["scale"].item()
    if rank is not None and "alpha" in f:
        return delta * (f["alpha"].item() / rank)
    return delta


def _hada_half(f: dict[str, torch.Tensor], i: str) -> torch.Tensor:
    a, b = f[f"hada_w{i}_a"], f[f"hada_w{i}_b"]
    if f"hada_t{i}" in f:
        return _cp(f[f"hada_t{i}"], a, b)
    return a @ b.reshape(b.shape[0], -1)


def _cp(t: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """LyCORIS's CP (Tucker) rebuild for convolutions."""
    temp = torch.einsum("i j k l, j r -> i r k l", t, wb)
    return torch.einsum("i j k l, i r -> r j k l", temp, wa)
