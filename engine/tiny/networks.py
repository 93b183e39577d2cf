"""Random LoRA, LoCon, LoHa, LoKr, PEFT and embedding files for the tiny models (tests, benchmark, demo).

They use the key layouts real trainers write (kohya `lora_unet_…`/`lora_te_…`, LyCORIS `hada_*`/`lokr_*`,
diffusers/PEFT `unet.….lora_A.weight`), so the loader reads them exactly as it reads downloaded files.
"""

from __future__ import annotations

from pathlib import Path

import torch

KINDS = ("lora", "loha", "lokr", "peft")


def _layers(pipe, parts: tuple[str, ...]):
    """(kohya key, diffusers module path with its model prefix, module) for every Linear/Conv2d of `parts`."""
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    models = []
    if "unet" in parts:
        models.append(("lora_unet_", "unet.", "", pipe.unet))
    if "te" in parts:
        if sdxl:
            models += [
                ("lora_te1_", "text_encoder.", "text_model.", pipe.text_encoder),
                ("lora_te2_", "text_encoder_2.", "text_model.", pipe.text_encoder_2),
            ]
        else:
            models.append(("lora_te_", "text_encoder.", "text_model.", pipe.text_encoder))
    for kohya, peft, inner, model in models:
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                full = name if name.startswith(inner) else inner + name
                yield kohya + full.replace(".", "_"), peft + full, module


def make_network(
    pipe,
    kind: str = "lora",
    *,
    rank: int = 4,
    alpha: float = 2.0,
    seed: int = 0,
    parts: tuple[str, ...] = ("unet", "te"),
    std: float = 0.2,
) -> dict[str, torch.Tensor]:
    """A random network of `kind` for `pipe`'s layers (LoCon: convolutions too; LoKr and PEFT: linear only)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g) * std

    state: dict[str, torch.Tensor] = {}
    for key, peft_key, module in _layers(pipe, parts):
        w = module.weight
        out_dim, in_dim = w.shape[0], w.shape[1]
        kernel = tuple(w.shape[2:])
        if kind == "lora":
            state[f"{key}.lora_down.weight"] = rnd(rank, in_dim, *kernel)
            state[f"{key}.lora_up.weight"] = rnd(out_dim, rank, *([1] * len(kernel)))
        elif kind == "loha":
            flat_in = in_dim * (kernel[0] * kernel[1] if kernel else 1)
            for i in ("1", "2"):
                state[f"{key}.hada_w{i}_a"] = rnd(out_dim, rank)
                state[f"{key}.hada_w{i}_b"] = rnd(rank, flat_in)
        elif kind == "lokr":
            if kernel or out_dim % 2 or in_dim % 2:
                continue
            state[f"{key}.lokr_w1"] = rnd(2, 2)
            state[f"{key}.lokr_w2_a"] = rnd(out_dim // 2, rank)
            state[f"{key}.lokr_w2_b"] = rnd(rank, in_dim // 2)
        else:  # peft
            if kernel:
                continue
            state[f"{peft_key}.lora_A.weight"] = rnd(rank, in_dim)
            state[f"{peft_key}.lora_B.weight"] = rnd(out_dim, rank)
            continue
        state[f"{key}.alpha"] = torch.tensor(float(alpha))
    return state


def write_network(
    pipe, path: str | Path, kind: str = "lora", metadata: dict[str, str] | None = None, **options
) -> Path:
    """Save `make_network(pipe, kind, **options)` as a safetensors file (with optional kohya metadata)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in make_network(pipe, kind, **options).items()}, str(path), metadata=metadata)
    return path


def write_embedding(path: str | Path, vectors: torch.Tensor | dict[str, torch.Tensor]) -> Path:
    """An embedding file: one `emb_params` tensor (SD 1.x/2.x) or SDXL's {"clip_l", "clip_g"}."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = vectors if isinstance(vectors, dict) else {"emb_params": vectors}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path
