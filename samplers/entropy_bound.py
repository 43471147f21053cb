"""Entropy-bounded unmasking, EB-Sampler (Ben-Hamu, Gat, Severo, Nolte, Karrer 2025, "Accelerated
Sampling from Masked Diffusion Models via Entropy Bounded Unmasking", arXiv 2505.24857)."""

from __future__ import annotations

import math

import torch

from dllm.errors import check
from dllm.samplers import ops
from dllm.samplers.base import Decision, Sampler, StepState


def entropy_bound_commit(h: torch.Tensor, masked: torch.Tensor, gamma: float) -> torch.Tensor:
    """Sort the masked positions by entropy, H(1) ≤ H(2) ≤ …, and commit the largest prefix U with

        Σ_{i∈U} H_i − max_{i∈U} H_i ≤ γ,   i.e. rank k passes iff H(1) + … + H(k−1) ≤ γ.

    Rank 1 always passes (its left-hand side is 0). Ties go to the lower index.
    h [B, W] float64 entropies, masked [B, W] bool -> bool [B, W]."""
    score = h.masked_fill(~masked, math.inf)
    sorted_h, order = torch.sort(score, dim=-1, stable=True)  # [B, W] ascending, ineligible last
    sorted_h = sorted_h.masked_fill(~torch.isfinite(sorted_h), 0.0)
    before = torch.cumsum(sorted_h, dim=-1).roll(1, dims=-1)  # [B, W] Σ of the entropies ranked before
    before[:, 0] = 0.0
    rank = torch.arange(score.shape[-1], device=h.device)[None]
    passes = (before <= gamma) & (rank < masked.sum(-1, keepdim=True))
    passes = passes.long().cumprod(-1).bool()  # a prefix of the sorted order
    return torch.zeros_like(passes).scatter(-1, order, passes)


class EntropyBoundSampler(Sampler):
    """EB-Sampler: order the masked positions by the entropy H = −Σ p log(p + 1e-12) of the model's
    float64 softmax over the raw logits (lowest first) and commit the largest prefix U whose
    entropy sum, less its largest entropy, stays within the error budget γ:

        Σ_{i∈U} H_i − max_{i∈U} H_i ≤ γ

    (Ben-Hamu et al. 2025, arXiv 2505.24857; the left-hand side bounds the mutual information
    between the committed tokens, the error that decoding them independently makes). The lowest
    entropy position always commits, so γ → 0 is one token per forward. The comparison is ``≤``, as
    in the paper and in the diffusers (DiffusionGemma), SGLang and UNI-D² implementations.

    Entropy is of the raw logits at every temperature (the LLaDA / Fast-dLLM convention for scores,
    algorithms.md §0.4); ``temperature``, ``top_p``, ``top_k`` shape only the proposals. The
    default γ = 0.1 is the diffusers ``EntropyBoundScheduler`` default (SGLang uses 0.15)."""

    def __init__(self, gamma: float = 0.1, temperature: float = 0.0, top_p: float | None = None,
                 top_k: int | None = None):
        check(isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and math.isfinite(gamma) and gamma > 0,
              f"gamma must be > 0 and finite, got {gamma!r}")
        ops.check_proposal_knobs(temperature, top_p, top_k)
        self.gamma = gamma
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k

    def step(self, state: StepState) -> Decision:
        tokens, conf = ops.propose(state.logits, self.temperature, self.top_p, self.top_k, state.generator)
        h = ops.entropy(ops.probs64(state.logits))  # [B, W]
        commit = entropy_bound_commit(h, state.masked, self.gamma)
        return Decision(commit=commit, tokens=tokens, confidence=conf)
