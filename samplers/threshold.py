"""Confidence-threshold parallel decoding (Fast-dLLM v1, Wu et al. 2025, arXiv 2505.22618, §3.1;
algorithms.md §3.1)."""

from __future__ import annotations

import torch

from dllm.errors import check
from dllm.samplers import ops
from dllm.samplers.base import Decision, Sampler, StepState

COMPARATORS = (">=", ">")


def threshold_commit(conf: torch.Tensor, masked: torch.Tensor, tau: float, comparator: str) -> torch.Tensor:
    """{i masked : c_i ≥ τ (or > τ)} ∪ {argmax_i c_i}: the most confident always, so every step
    makes progress. conf [B, W] float64, masked [B, W] -> bool [B, W]."""
    passes = conf >= tau if comparator == ">=" else conf > tau
    return ops.at_least_one(masked & passes, conf, masked)


class ThresholdSampler(Sampler):
    """Commit every masked position of the active block whose float64 confidence (softmax
    probability of its proposal) is ≥ τ, plus the single most confident one. Fast-dLLM v1 uses
    ``≥``; Fast-dLLM v2 uses ``>`` (``comparator``). τ = 1 with ``>`` is one token per forward."""

    def __init__(self, threshold: float = 0.9, comparator: str = ">=", temperature: float = 0.0,
                 top_p: float | None = None, top_k: int | None = None):
        ops.check_unit_interval("threshold", threshold)
        check(comparator in COMPARATORS, f"comparator must be one of {COMPARATORS}, got {comparator!r}")
        ops.check_proposal_knobs(temperature, top_p, top_k)
        self.threshold, self.comparator = threshold, comparator
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k

    def step(self, state: StepState) -> Decision:
        tokens, conf = ops.propose(state.logits, self.temperature, self.top_p, self.top_k, state.generator)
        commit = threshold_commit(conf, state.masked, self.threshold, self.comparator)
        return Decision(commit=commit, tokens=tokens, confidence=conf)
