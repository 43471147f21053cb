"""LocalLeap — local determinism propagation (arXiv 2510.07081; algorithms.md §5)."""

from __future__ import annotations

import torch.nn.functional as F

from dllm.errors import check
from dllm.samplers import ops
from dllm.samplers.base import Decision, Sampler, StepState
from dllm.samplers.threshold import threshold_commit


class LocalLeapSampler(Sampler):
    """Anchors are masked positions with c ≥ τ_a this step; any masked position within raw index
    distance W of an anchor commits at the relaxed c ≥ τ_r; the most confident always commits:

        commit = {argmax c} ∪ A ∪ {i ∈ N(A, W) : c_i ≥ τ_r},   A = {i : c_i ≥ τ_a}

    Relaxed neighbours do not become anchors in the same step (no chaining). With
    ``relaxed_threshold=None`` this is exactly threshold decoding at τ_a. Vectorised: the
    neighbourhood is a max-pool dilation of the anchor mask over the window."""

    def __init__(self, threshold: float = 0.9, relaxed_threshold: float | None = 0.75, radius: int = 4,
                 temperature: float = 0.0, top_p: float | None = None, top_k: int | None = None):
        ops.check_unit_interval("threshold", threshold)
        ops.check_unit_interval("relaxed_threshold", relaxed_threshold, allow_none=True)
        check(isinstance(radius, int) and radius >= 0, f"radius must be an integer >= 0, got {radius}")
        ops.check_proposal_knobs(temperature, top_p, top_k)
        self.threshold, self.relaxed_threshold, self.radius = threshold, relaxed_threshold, radius
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k

    def step(self, state: StepState) -> Decision:
        tokens, conf = ops.propose(state.logits, self.temperature, self.top_p, self.top_k, state.generator)
        masked = state.masked
        commit = threshold_commit(conf, masked, self.threshold, ">=")
        if self.relaxed_threshold is not None and self.radius > 0:
            anchors = (masked & (conf >= self.threshold)).float()[:, None]  # [B, 1, W]
            near = F.max_pool1d(anchors, 2 * self.radius + 1, stride=1, padding=self.radius)[:, 0] > 0  # [B, W]
            commit = commit | (masked & near & (conf >= self.relaxed_threshold))
        return Decision(commit=commit, tokens=tokens, confidence=conf)
