"""Stochastic rounding to bf16: right on average, so updates under half the bf16 spacing are not lost."""

from __future__ import annotations

import pytest
import torch

from hf_capacity.memorization import bf16_stalled_share
from hf_capacity.stochastic_rounding import StochasticRoundingAdamW, stochastic_round_to_bf16


def bf16_neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bf16 values just below and just above each float32 value in magnitude (truncation and the next one)."""
    bits = x.view(torch.int32)
    down = (bits & -65536).view(torch.float32)
    up = ((bits & -65536) + 65536).view(torch.float32)
    return down, up


def test_stochastic_rounding_picks_a_neighbour_and_is_right_on_average():
    torch.manual_seed(0)
    x = torch.randn(200) * torch.logspace(-3, 3, 200)  # both signs, six decades
    draws = stochastic_round_to_bf16(x.repeat(20_000, 1)).float()
    down, up = bf16_neighbours(x)
    assert ((draws == down) | (draws == up)).all()
    spacing = (up - down).abs()
    error = (draws.mean(0) - x).abs() / spacing  # in units of the local spacing
    assert error.max() < 0.02  # 20,000 draws: standard error <= 0.0035 spacings
    nearest = x.to(torch.bfloat16).float()  # round to nearest is biased for values off the midpoint
    assert ((nearest - x).abs() / spacing).mean() > 0.2


def test_exact_values_zeros_infinities_and_nans_are_kept():
    special = torch.tensor([0.0, -0.0, 1.0, -2.5, 2.0**127, float("inf"), float("-inf"), float("nan")])
    out = stochastic_round_to_bf16(special.repeat(1000, 1)).float()
    assert torch.equal(out[:, :5], special[:5].to(torch.bfloat16).float().expand(1000, 5))
    assert (out[:, 5] == float("inf")).all() and (out[:, 6] == float("-inf")).all() and out[:, 7].isnan().all()
    with pytest.raises(TypeError, match="float32"):
        stochastic_round_to_bf16(special.double())


def test_float32_parameters_get_torchs_adamw_step():
    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(16, 8), torch.nn.Linear(16, 8)
    theirs.load_state_dict(ours.state_dict())
    settings = dict(lr=3e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    optimizers = [StochasticRoundingAdamW(ours.parameters(), **settings),
                  torch.optim.AdamW(theirs.parameters(), **settings)]
    for step in range(20):
        x = torch.randn(32, 16)
        for model, optimizer in zip((ours, theirs), optimizers):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_updates_under_half_the_bf16_spacing_move_bf16_weights_on_average():
    """20,000 bf16 weights at 1.0 (spacing 2^-7) and a steady gradient: AdamW's ~1e-3 steps are under half the
    spacing, so torch's AdamW on bf16 weights leaves every weight where it was (bf16_stalled_share says so), while
    stochastic rounding moves them by the ten steps' 1e-2 on average."""
    torch.manual_seed(0)
    weights = {name: torch.nn.Parameter(torch.ones(20_000, dtype=torch.bfloat16)) for name in ("plain", "sr")}
    assert bf16_stalled_share([weights["plain"]], 1e-3) == 1.0
    optimizers = {"plain": torch.optim.AdamW([weights["plain"]], lr=1e-3, weight_decay=0.0),
                  "sr": StochasticRoundingAdamW([weights["sr"]], lr=1e-3, weight_decay=0.0)}
    for _ in range(10):
        for name, w in weights.items():
            w.grad = torch.ones_like(w)
            optimizers[name].step()
    assert (weights["plain"] == 1.0).all()
    moved = 1.0 - float(weights["sr"].detach().float().mean())
    assert moved == pytest.approx(1e-2, rel=0.05)
    assert optimizers["sr"].state[weights["sr"]]["exp_avg"].dtype == torch.bfloat16  # moments kept as bf16


def test_the_memorize_command_offers_every_precision_a_run_takes():
    from hf_capacity.cli import build_parser
    from hf_capacity.memorization import PRECISIONS

    parser = build_parser()
    memorize = parser._subparsers._group_actions[0].choices["memorize"]
    [precision] = [a for a in memorize._actions if "--precision" in a.option_strings]
    assert tuple(precision.choices) == PRECISIONS
