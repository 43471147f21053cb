"""LLaDA's baseline sampler (Nie et al., "Large Language Diffusion Models", arXiv 2502.09992;
``ML-GSAI/LLaDA`` generate.py; algorithms.md §1)."""

from __future__ import annotations

import torch

from dllm.errors import check
from dllm.samplers import ops
from dllm.samplers.base import Decision, Sampler, StepState

REMASKING = ("low_confidence", "random")


class LLaDASampler(Sampler):
    """Top-k on a linear transfer schedule.

    Acceptance rule: at step j of a block that started with M masked positions and has a budget of
    s steps, commit the ``M // s + (j < M % s)`` eligible positions with the highest score, where
    the score is the float64 softmax probability of the proposed token under the raw logits
    (``low_confidence``) or U(0, 1) (``random``). Proposals are argmax, or Gumbel-max samples at
    ``temperature`` > 0 after optional top-k / top-p filtering. ``steps = gen_length`` gives one
    token per forward, the baseline every parallel sampler is measured against.

    ``logits_eos_inf`` forbids end tokens as proposals; ``confidence_eos_eot_inf`` implements the
    intent of LLaDA's flag of that name (end-token proposals rank last) rather than its bug.
    """

    def __init__(self, temperature: float = 0.0, remasking: str = "low_confidence", top_p: float | None = None,
                 top_k: int | None = None, logits_eos_inf: bool = False, confidence_eos_eot_inf: bool = False):
        ops.check_proposal_knobs(temperature, top_p, top_k)
        check(remasking in REMASKING, f"remasking must be one of {REMASKING}, got {remasking!r}")
        self.temperature = temperature
        self.remasking = remasking
        self.top_p = top_p
        self.top_k = top_k
        self.logits_eos_inf = logits_eos_inf
        self.confidence_eos_eot_inf = confidence_eos_eot_inf

    def step(self, state: StepState) -> Decision:
        logits = state.logits  # [B, W, V]
        ends = torch.tensor(state.end_token_ids, device=logits.device)
        if self.logits_eos_inf:
            logits = logits.index_fill(-1, ends, ops.NEG_INF)
        tokens, conf = ops.propose(logits, self.temperature, self.top_p, self.top_k, state.generator)  # [B, W]
        if self.remasking == "random":
            conf = ops.uniform(tokens.shape, state.generator, tokens.device)
        score = conf
        if self.confidence_eos_eot_inf:
            score = score.masked_fill(torch.isin(tokens, ends), -1.0)  # below any probability, still eligible
        score = score.masked_fill(~state.masked, ops.NEG_INF)
        quota = ops.transfer_quota(state.block_masked, state.steps_per_block, state.block_step)
        commit = ops.at_least_one(ops.top_k_mask(score, quota), score, state.masked)
        return Decision(commit=commit, tokens=tokens, confidence=conf)
