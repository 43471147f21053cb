"""Fréchet profile decoding (Fast-dLLM++, Kasa et al., arXiv 2606.02955): Fast-dLLM's factor rule
generalised from the weakest selected confidence to the whole sorted confidence profile."""

from __future__ import annotations

import torch

from dllm.errors import check
from dllm.samplers import ops
from dllm.samplers.base import Decision, Sampler, StepState


class FrechetSampler(Sampler):
    """Sort the masked positions' confidences c(1) ≥ c(2) ≥ …. For the top-n set:

    * L_n = max(0, Σ_{j≤n} c(j) − (n − 1)), the Fréchet–Hoeffding lower bound on all n being right;
    * U_n = 1 − c(n), the bound on a competing event;
    * G_n = L_n − U_n.

    Commit the longest prefix with G_n > δ (``margin``), rank 1 always. G_n never grows with n
    (G_n − G_{n+1} = 1 − 2c(n+1) + c(n) ≥ 0), so that prefix is the count of passing ranks. With all
    n confidences equal to c, G_n > δ ⇔ (n + 1)(1 − c) < 1 − δ: factor decoding with f = 1 − δ;
    uneven profiles add the bonus Σ_{j<n} (c(j) − c(n)) the weakest-token rule throws away.
    The paper's default margin is 0.25 (f = 0.75)."""

    def __init__(self, margin: float = 0.25, temperature: float = 0.0, top_p: float | None = None,
                 top_k: int | None = None):
        check(isinstance(margin, (int, float)) and 0 <= margin < 1, f"margin must be in [0, 1), got {margin}")
        ops.check_proposal_knobs(temperature, top_p, top_k)
        self.margin = float(margin)
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k

    def step(self, state: StepState) -> Decision:
        tokens, conf = ops.propose(state.logits, self.temperature, self.top_p, self.top_k, state.generator)
        masked = state.masked
        score = conf.masked_fill(~masked, ops.NEG_INF)
        sorted_c, _ = torch.sort(score, dim=-1, descending=True, stable=True)  # [B, W]
        c = sorted_c.double().clamp_min(0.0)  # unmasked tail (−inf) -> 0; excluded by rank ≤ n_masked below
        rank = torch.arange(1, c.shape[-1] + 1, device=c.device, dtype=torch.float64)[None]  # [1, W]
        lower = (c.cumsum(-1) - (rank - 1)).clamp_min(0.0)  # L_n
        gap = lower - (1 - c)  # G_n = L_n − U_n
        n_masked = masked.sum(-1, keepdim=True)  # [B, 1]
        passes = (gap > self.margin) & (rank <= n_masked)
        passes[:, 0] = True
        prefix = passes.long().cumprod(-1).sum(-1)  # [B]
        commit = ops.top_k_mask(score, prefix)
        return Decision(commit=commit & masked, tokens=tokens, confidence=conf)
