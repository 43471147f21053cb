"""Entropy-threshold decoding of certainty-forcing distillation (dParallel, arXiv 2509.26488,
§8.2 of algorithms.md)."""

from __future__ import annotations

from dllm.samplers import ops
from dllm.samplers.base import Decision, Sampler, StepState


class EntropyThresholdSampler(Sampler):
    """Commit the masked position of minimum entropy H = −Σ p log(p + 1e-12) (float64 softmax)
    and every masked position with H ≤ θ. Proposals are argmax (dParallel decodes greedily)."""

    def __init__(self, threshold: float = 0.5):
        ops.check_unit_interval("threshold", threshold)
        self.threshold = threshold

    def step(self, state: StepState) -> Decision:
        probs = ops.probs64(state.logits)
        tokens = probs.argmax(-1)
        h = ops.entropy(probs, eps=1e-12)  # [B, W]
        masked = state.masked
        commit = ops.at_least_one(masked & (h <= self.threshold), -h, masked)
        return Decision(commit=commit, tokens=tokens, confidence=ops.prob_of(probs, tokens))
