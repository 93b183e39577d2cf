"""engine.networks.lora_deltas: each LoRA / LyCORIS kind's delta, checked against its formula written out (A1111's
Lora extension), scaled by alpha / rank, shaped as the layer's weight, and refused in one line when it cannot be."""

from __future__ import annotations

import pytest
import torch

from engine.errors import EngineError
from engine.networks.lora_deltas import module_delta

OUT, IN, RANK = 6, 5, 2


def rnd(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape) + len(shape)))


def delta(w: dict[str, torch.Tensor], weight: torch.Tensor, dyn: int | None = None) -> torch.Tensor:
    return module_delta("test", "lora_unet_x", w, weight, dyn)


def test_lora_is_up_times_down_scaled_by_alpha_over_rank():
    up, down = rnd(OUT, RANK), rnd(RANK, IN)
    got = delta({"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(1.0)}, rnd(OUT, IN))
    torch.testing.assert_close(got, (up @ down) * (1.0 / RANK))
    unscaled = delta({"lora_up.weight": up, "lora_down.weight": down}, rnd(OUT, IN))  # no alpha: scale 1
    torch.testing.assert_close(unscaled, up @ down)


def test_peft_names_are_read_as_down_and_up():
    up, down = rnd(OUT, RANK), rnd(RANK, IN)
    got = delta({"lora_B.weight": up, "lora_A.weight": down}, rnd(OUT, IN))
    torch.testing.assert_close(got, up @ down)


def test_dyn_keeps_the_first_ranks():
    up, down = rnd(OUT, 4), rnd(4, IN)
    got = delta({"lora_up.weight": up, "lora_down.weight": down}, rnd(OUT, IN), dyn=1)
    torch.testing.assert_close(got, up[:, :1] @ down[:1, :])


def test_a_conv_lora_takes_the_layers_shape():
    up, down = rnd(OUT, RANK, 1, 1), rnd(RANK, IN, 3, 3)
    got = delta({"lora_up.weight": up, "lora_down.weight": down}, rnd(OUT, IN, 3, 3))
    assert got.shape == (OUT, IN, 3, 3)
    torch.testing.assert_close(got, (up.reshape(OUT, RANK) @ down.reshape(RANK, -1)).reshape(OUT, IN, 3, 3))


def test_loha_is_the_elementwise_product_of_two_lowrank_products():
    w1a, w1b, w2a, w2b = rnd(OUT, RANK), rnd(RANK, IN), rnd(OUT, 3), rnd(3, IN)
    f = {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b, "alpha": torch.tensor(4.0)}
    torch.testing.assert_close(delta(f, rnd(OUT, IN)), (w1a @ w1b) * (w2a @ w2b) * (4.0 / RANK))


def test_lokr_is_a_kronecker_product_and_full_factors_use_scale_one():
    w1, w2 = rnd(2, 1), rnd(3, 5)
    full = delta({"lokr_w1": w1, "lokr_w2": w2, "alpha": torch.tensor(8.0)}, rnd(OUT, IN))
    torch.testing.assert_close(full, torch.kron(w1, w2))  # no rank: alpha does not apply
    w2a, w2b = rnd(3, RANK), rnd(RANK, 5)
    low = delta({"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "alpha": torch.tensor(1.0)}, rnd(OUT, IN))
    torch.testing.assert_close(low, torch.kron(w1, w2a @ w2b) * (1.0 / RANK))


def test_an_explicit_scale_wins():
    up, down = rnd(OUT, RANK), rnd(RANK, IN)
    f = {"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(1.0), "scale": torch.tensor(0.5)}
    torch.testing.assert_close(delta(f, rnd(OUT, IN)), (up @ down) * 0.5)


def test_a_delta_for_another_shape_names_the_layer_and_both_shapes():
    f = {"lora_up.weight": rnd(OUT, RANK), "lora_down.weight": rnd(RANK, IN)}
    with pytest.raises(EngineError, match=r"LoRA test does not fit this checkpoint: lora_unet_x has shape \(6, 5\)"):
        delta(f, rnd(OUT, IN + 1))


def test_an_incomplete_module_names_what_it_holds():
    with pytest.raises(EngineError, match=r"lora_unet_x has an incomplete set of weights \(hada_w1_a, lora_up"):
        delta({"lora_up.weight": rnd(OUT, RANK), "hada_w1_a": rnd(OUT, RANK)}, rnd(OUT, IN))
