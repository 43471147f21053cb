"""Confidence-factor parallel decoding (Fast-dLLM v1, arXiv 2505.22618, Theorem 1; algorithms.md §3.1)."""

from __future__ import annotations

import torch

from dllm.errors import check
from dllm.samplers import ops
from dllm.samplers.base import Decision, Sampler, StepState


class FactorSampler(Sampler):
    """Sort the masked positions' confidences c(1) ≥ c(2) ≥ …; rank r (1-based) passes iff
    (r + 1)(1 − c(r)) ≤ f, rank 1 always; commit the longest passing prefix. The data-dependent
    form of the bound "n tokens each above 1 − ε with (n + 1)ε ≤ 1 decode like the joint".

    ``ref_compat`` reproduces the reference quirk: when the first failing rank is the last one,
    all positions are committed."""

    def __init__(self, factor: float = 1.0, ref_compat: bool = False, temperature: float = 0.0,
                 top_p: float | None = None, top_k: int | None = None):
        check(factor > 0, f"factor must be > 0, got {factor}")
        ops.check_proposal_knobs(temperature, top_p, top_k)
        self.factor, self.ref_compat = factor, ref_compat
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k

    def step(self, state: StepState) -> Decision:
        tokens, conf = ops.propose(state.logits, self.temperature, self.top_p, self.top_k, state.generator)
        masked = state.masked
        score = conf.masked_fill(~masked, ops.NEG_INF)
        sorted_c, order = torch.sort(score, dim=-1, descending=True, stable=True)  # [B, W]
        rank = torch.arange(1, score.shape[-1] + 1, device=score.device, dtype=torch.float64)[None]
        n_masked = masked.sum(-1, keepdim=True)  # [B, 1]
        passes = ((rank + 1) * (1 - sorted_c) <= self.factor) & (rank <= n_masked)
        passes[:, 0] = True
        prefix = passes.long().cumprod(-1).sum(-1)  # [B] length of the passing prefix
        if self.ref_compat:
            prefix = torch.where(prefix == n_masked.squeeze(-1) - 1, n_masked.squeeze(-1), prefix)
        commit = ops.top_k_mask(score, prefix)
        return Decision(commit=commit & masked, tokens=tokens, confidence=conf)
