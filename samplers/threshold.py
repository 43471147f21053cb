"""Confidence-threshold parallel decoding (Fast-dLLM v1, Wu et al. 2025, arXiv 2505.22618, §3.1;
algorithms.md §3.1)."""

from __future__ import annotations

import torch

from dllm.errors import check
from dllm.samplers import ops
from dllm.samplers.base import Decision, Sampler, StepState

COMPARATORS = (">=", ">")
FALLBACKS = ("confidence", "leftmost")


def threshold_commit(conf: torch.Tensor, masked: torch.Tensor, tau: float, comparator: str,
                     fallback: str = "confidence") -> torch.Tensor:
    """{i masked : c_i ≥ τ (or > τ)} ∪ {one more}: the most confident (``confidence``, the papers'
    rule) or the leftmost masked position (``leftmost``), so every step makes progress.
    conf [B, W] float64, masked [B, W] -> bool [B, W]."""
    passes = conf >= tau if comparator == ">=" else conf > tau
    if fallback == "leftmost":  # score = -column: the first masked column wins
        left = -torch.arange(conf.shape[-1], device=conf.device, dtype=conf.dtype).expand_as(conf)
        return ops.at_least_one(masked & passes, left, masked)
    return ops.at_least_one(masked & passes, conf, masked)


class ThresholdSampler(Sampler):
    """Commit every masked position of the active block whose float64 confidence (softmax
    probability of its proposal) is ≥ τ, plus the single most confident one. Fast-dLLM v1 uses
    ``≥``; Fast-dLLM v2 uses ``>`` (``comparator``). τ = 1 with ``>`` is one token per forward.

    ``fallback="leftmost"`` (ours) commits the leftmost masked position instead of the most
    confident one when nothing passes τ: inside a block-diffusion block this keeps the AR parent's
    left-to-right order wherever the model is unsure (τ = 1 is then exactly left-to-right), which
    matters on tasks with many valid answers, where committing confident later tokens first mixes
    answers (bench/block_diffusion)."""

    def __init__(self, threshold: float = 0.9, comparator: str = ">=", temperature: float = 0.0,
                 top_p: float | None = None, top_k: int | None = None, fallback: str = "confidence"):
        ops.check_unit_interval("threshold", threshold)
        check(comparator in COMPARATORS, f"comparator must be one of {COMPARATORS}, got {comparator!r}")
        check(fallback in FALLBACKS, f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        ops.check_proposal_knobs(temperature, top_p, top_k)
        self.threshold, self.comparator, self.fallback = threshold, comparator, fallback
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k

    def step(self, state: StepState) -> Decision:
        tokens, conf = ops.propose(state.logits, self.temperature, self.top_p, self.top_k, state.generator)
        commit = threshold_commit(conf, state.masked, self.threshold, self.comparator, self.fallback)
        return Decision(commit=commit, tokens=tokens, confidence=conf)
