"""Batches that render every image exactly as it renders alone: the UNet sees one image per forward call.

The engine batches compatible jobs into one diffusers call (`batch_mode = "exact"`, the default); this keeps the
pixels of each image independent of what it was batched with, which `tests/engine/backends/test_worker.py` checks.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from engine.models.patching import forward_replaced


@contextmanager
def one_image_at_a_time(unet, images: int, enabled: bool):
    """Make the UNet see one image (its uncond + cond rows) per forward call while the pipeline batches.

    BLAS kernels pick their blocking by matrix size, so a batched convolution or linear layer rounds differently
    from the same image alone (~1e-7, enough to flip pixels). Splitting the UNet call per image keeps every
    image bit-identical to its solo run while the rest of the job (prompts, scheduler, noise, callbacks,
    decode and PNGs) is still shared.
    """
    if not enabled or images <= 1:
        yield
        return
    forward = unet.forward
    total = 0  # the rows of the UNet call being split

    def split(value, rows: list[int]):
        if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == total:
            return value[rows]
        if isinstance(value, dict):
            return {k: split(v, rows) for k, v in value.items()}
        return value

    def per_image(sample, timestep, encoder_hidden_states, *args, **kwargs):
        nonlocal total
        total = sample.shape[0]
        if total == 1 or total % images:
            return forward(sample, timestep, encoder_hidden_states, *args, **kwargs)
        copies = total // images  # 2 with classifier-free guidance: [uncond..., cond...]
        outputs: dict[int, torch.Tensor] = {}
        for i in range(images):
            rows = [i + c * images for c in range(copies)]
            out = forward(
                split(sample, rows),
                split(timestep, rows),
                split(encoder_hidden_states, rows),
                *args,
                **{k: split(v, rows) for k, v in kwargs.items() if k != "return_dict"},
                return_dict=False,
            )[0]
            for c, row in enumerate(rows):
                outputs[row] = out[c]
        result = torch.stack([outputs[row] for row in range(total)])
        return (result,) if kwargs.get("return_dict") is False else UNetOutput(result)

    with forward_replaced(unet, per_image):
        yield


@dataclass(frozen=True)
class UNetOutput:
    sample: torch.Tensor
