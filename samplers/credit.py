"""Credit decoding: confidence accumulated over steps (Trace Credits; Wang et al. 2025, arXiv
2510.06133, the credit decoder of dInfer and SGLang).

Each masked position keeps a few credit slots (token id, credit). Every step: all credits decay by
γ, and the position's current top-1 token earns p_top1^α (a concave boost for low p). The credits
then bias the distribution: l'_k = l_k + λ·log(1 + credit_k) for the slotted tokens, renormalised
(the unslotted tokens keep their logits). The proposal is the fused top-1 when its fused
probability beats the raw top-1's probability; the confidence is the larger of the two. Commit
every masked position whose confidence is > τ, plus the most confident one (progress).

A token that stays on top for several steps builds credit and commits earlier than a plain
threshold would let it; a token seen once earns little. The slots live in the engine's per-row,
per-position memory (``carry``), never in the sampler, so batched ≡ single holds.
"""

from __future__ import annotations

import torch

from dllm.errors import check
from dllm.samplers import ops
from dllm.samplers.base import Decision, Sampler, StepState

EPS = 1e-6


def update_credit(ids: torch.Tensor, val: torch.Tensor, top: torch.Tensor, p_top: torch.Tensor, decay: float,
                  alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, W, K] long (-1 = empty), val [B, W, K] float64; top, p_top [B, W]. All credits decay;
    the top-1 token gains p_top^α in its slot, or takes an empty slot, or evicts the weakest one
    (starting from its own p_top^α: a new token does not inherit the evicted token's credit)."""
    val = val * decay
    match = ids == top[..., None]
    has = match.any(-1)
    empty = ids < 0
    slot = torch.where(has, match.int().argmax(-1),
                       torch.where(empty.any(-1), empty.int().argmax(-1), val.argmin(-1)))[..., None]
    kept = torch.where(has, val.gather(-1, slot)[..., 0], torch.zeros_like(p_top))  # an evicted token's credit goes
    val = val.scatter(-1, slot, (kept + p_top.clamp_min(EPS).pow(alpha))[..., None])  # with it
    ids = ids.scatter(-1, slot, torch.where(has, ids.gather(-1, slot)[..., 0], top)[..., None])
    return ids, val


def fused_top1(logits: torch.Tensor, ids: torch.Tensor, val: torch.Tensor, lam: float):
    """The credit-fused distribution's top token and probability. logits [B, W, V] float64 ->
    (tokens, p) [B, W], plus the raw top-1 (tokens, p)."""
    logz = torch.logsumexp(logits, -1)  # [B, W]
    top = logits.argmax(-1)
    top_logit = logits.gather(-1, top[..., None])[..., 0]
    p_raw = torch.exp(top_logit - logz)
    valid = ids >= 0
    lk = logits.gather(-1, ids.clamp_min(0)).masked_fill(~valid, float("-inf"))  # [B, W, K]
    boost = (lam * torch.log1p(val)).masked_fill(~valid, 0.0)
    fused = lk + boost
    best, best_slot = fused.max(-1)
    best_id = ids.gather(-1, best_slot[..., None])[..., 0]
    raw_fused = top_logit + (boost * (ids == top[..., None])).sum(-1)
    pick = best > raw_fused
    token = torch.where(pick, best_id, top)
    logit = torch.where(pick, best, raw_fused)
    mass = torch.exp(lk - logz[..., None]).masked_fill(~valid, 0.0).sum(-1)
    mass_boosted = torch.exp(fused - logz[..., None]).masked_fill(~valid, 0.0).sum(-1)
    logz_fused = logz + torch.log((1.0 - mass + mass_boosted).clamp_min(EPS))
    return token, torch.exp(logit - logz_fused), top, p_raw


class CreditSampler(Sampler):
    """τ threshold on credit-fused confidence (strict ``>``, as the reference); defaults are the
    reference's: τ 0.95, decay γ 0.65, fusion λ 0.70, α 0.5, 8 slots per position. Greedy."""

    def __init__(self, threshold: float = 0.95, decay: float = 0.65, fusion: float = 0.70, alpha: float = 0.5,
                 slots: int = 8):
        ops.check_unit_interval("threshold", threshold)
        ops.check_unit_interval("decay", decay)
        check(isinstance(fusion, (int, float)) and fusion >= 0, f"fusion must be >= 0, got {fusion!r}")
        check(isinstance(alpha, (int, float)) and alpha > 0, f"alpha must be > 0, got {alpha!r}")
        check(isinstance(slots, int) and not isinstance(slots, bool) and slots >= 1,
              f"slots must be an integer >= 1, got {slots!r}")
        self.threshold, self.decay, self.fusion, self.alpha, self.slots = threshold, decay, fusion, alpha, slots

    @property
    def carry_width(self) -> int:
        return 2 * self.slots  # per position: ids + 1 (0 = empty), then credits

    def step(self, state: StepState) -> Decision:
        k, masked = self.slots, state.masked
        logits = state.logits.double()
        carry = state.carry if state.carry is not None else logits.new_zeros((*masked.shape, 2 * k))
        ids, val = carry[..., :k].long() - 1, carry[..., k:]
        top = logits.argmax(-1)
        p_raw = torch.softmax(logits, -1).gather(-1, top[..., None])[..., 0]
        ids, val = update_credit(ids, val, top, p_raw, self.decay, self.alpha)
        token, p_fused, top, p_raw = fused_top1(logits, ids, val, self.fusion)
        conf = torch.maximum(p_raw, p_fused)
        tokens = torch.where(p_fused > p_raw, token, top)
        commit = ops.at_least_one(masked & (conf > self.threshold), conf, masked)
        new = torch.cat([(ids + 1).double(), val], -1)
        return Decision(commit=commit, tokens=tokens, confidence=conf,
                        carry=torch.where(masked[..., None], new, carry))
