"""The oracle ("extremely greedy") decoder — an analysis tool, not a production sampler.

Given the output a reference decoder produced (the one-token-per-step baseline), it commits every
masked position whose current argmax already equals that output. Its tokens per forward is the
ceiling for any lossless parallel decoder of that reference on that item (Learn2PD, arXiv
2509.25188, uses the same decoder to label its training data; algorithms.md §6).
"""

from __future__ import annotations

import torch

from dllm.errors import check
from dllm.samplers import ops
from dllm.samplers.base import Decision, Sampler, StepState


class OracleSampler(Sampler):
    """Acceptance rule: commit {i masked : argmax_i = reference_i}; when no position agrees, commit
    the reference token at the masked position that gives it the highest probability, so every
    step makes progress and the final output equals the reference."""

    def step(self, state: StepState) -> Decision:
        check(state.reference is not None, "the oracle sampler needs reference outputs (generate(..., reference=...))")
        ref = state.reference  # [B, W]
        probs = ops.probs64(state.logits)  # [B, W, V]
        argmax = probs.argmax(-1)
        agree = state.masked & (argmax == ref)
        p_ref = ops.prob_of(probs, ref.clamp_min(0))  # probability of the reference token
        commit = ops.at_least_one(agree, p_ref.masked_fill(~state.masked, ops.NEG_INF), state.masked)
        tokens = torch.where(ref >= 0, ref, argmax)
        return Decision(commit=commit, tokens=tokens, confidence=p_ref)
