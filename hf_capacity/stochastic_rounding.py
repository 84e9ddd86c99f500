"""bf16 weights updated with stochastic rounding: AdamW whose new bf16 weight is rounded up or down at random, with
the probabilities that make it right on average.

In true bf16 (``precision="bf16"`` of a memorization run) a step smaller than half the bf16 spacing at a weight
rounds back to the old value, so late in a decaying schedule a growing share of the model stands still
(``memorization.bf16_stalled_share``). Rounding stochastically instead keeps every update in expectation: a weight
w + δ between two bf16 values a < b becomes b with probability (w + δ − a) / (b − a), else a. This module holds
the rounding (``stochastic_round_to_bf16``) and ``StochasticRoundingAdamW``, torch's AdamW (decoupled weight decay)
computed in float32 from the bf16 weights, gradients and moments, with the weights written back stochastically
rounded and the moments rounded to nearest. Random bits come from torch's default generator, which the Trainer's
checkpoints save and restore.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

__all__ = ["StochasticRoundingAdamW", "stochastic_round_to_bf16"]


def stochastic_round_to_bf16(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` (float32) rounded to bfloat16 stochastically: to the bf16 value above or below it with probabilities
    given by the distances, so that the expected result is ``x`` (exact bf16 values, zeros, infinities and NaNs
    are kept).

    bf16 is float32's upper 16 bits: adding a uniform random integer in [0, 2^16) to float32's bit pattern and
    dropping the lower 16 bits rounds its magnitude up with probability (lower bits) / 2^16."""
    if x.dtype != torch.float32:
        raise TypeError(f"stochastic_round_to_bf16 takes a float32 tensor, got {x.dtype}")
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=x.device, generator=generator)
    rounded = ((bits + noise) & -65536).view(torch.float32)  # -65536 = 0xFFFF0000 as int32
    # infinities and NaNs: adding noise could turn an infinity into a NaN or carry a NaN's payload; keep them
    rounded = torch.where(torch.isfinite(x), rounded, x)
    return rounded.to(torch.bfloat16)  # exact: the lower 16 bits are zero


class StochasticRoundingAdamW(torch.optim.Optimizer):
    """AdamW (Loshchilov & Hutter; torch's ``AdamW`` update, decoupled weight decay) for bfloat16 parameters, whose
    new values are stochastically rounded to bf16 (``stochastic_round_to_bf16``) instead of rounded to nearest.

    The step is computed in float32 from the stored values; the moments are kept in the parameter's dtype (bf16
    for bf16 weights, as torch's AdamW keeps them), so a run differs from plain bf16 training only in how the new
    weights are rounded. float32 parameters get the ordinary AdamW step (the same numbers as ``torch.optim.AdamW``
    to float rounding). Arguments as ``torch.optim.AdamW``'s (no amsgrad).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if not eps > 0 or weight_decay < 0:
            raise ValueError(f"eps must be > 0 and weight_decay >= 0, got {eps} and {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("StochasticRoundingAdamW does not take sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                w, g = p.float(), p.grad.float()
                m = state["exp_avg"].float().lerp_(g, 1 - beta1)
                v = state["exp_avg_sq"].float().mul_(beta2).addcmul_(g, g, value=1 - beta2)
                state["exp_avg"].copy_(m)
                state["exp_avg_sq"].copy_(v)
                w.mul_(1 - lr * decay)
                step_size = lr / (1 - beta1**t)
                denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
                w.addcdiv_(m, denom, value=-step_size)
                p.copy_(stochastic_round_to_bf16(w) if p.dtype == torch.bfloat16 else w)
        return loss
