"""FreeDave — free draft-and-verification, lossless parallel decoding (arXiv 2510.00294;
algorithms.md §7)."""

from __future__ import annotations

import torch

from dllm.errors import check
from dllm.samplers import ops
from dllm.samplers.base import Decision, Sampler, StepState


class FreeDaveSampler(Sampler):
    """Token-identical to static greedy decoding (one token per forward, highest confidence first,
    stable ties) in fewer forwards.

    From the current predictions build K drafts, D_k = x with its top-k masked positions filled
    (k = 1..K); score all drafts in one batched forward through the engine's ``verify`` hook;
    T_k = one static step applied to D_k with D_k's own predictions. Accept by the subset chain:
    best = 1, then while D_{best+1} ⊆ T_best (every filled position agrees), best += 1. D_1 is the
    static step from x, and D_{k+1} ⊆ T_k means D_{k+1} is the static state k+1 steps on, so the
    output never differs from static decoding. x ← D_best and D_best's predictions (already in
    hand) serve the next step, so each step costs one forward (of K× the tokens) and advances
    1..K tokens.
    """

    def __init__(self, draft_steps: int = 4):
        check(isinstance(draft_steps, int) and draft_steps >= 1,
              f"draft_steps (K) must be an integer >= 1, got {draft_steps}")
        self.draft_steps = draft_steps

    @staticmethod
    def _static(probs: torch.Tensor, masked: torch.Tensor):
        """The static decoder's ranking: argmax tokens, float64 confidences, masked-only scores."""
        tokens = probs.argmax(-1)
        conf = ops.prob_of(probs, tokens)
        return tokens, conf, conf.masked_fill(~masked, ops.NEG_INF)

    def step(self, state: StepState) -> Decision:
        check(state.verify is not None, "FreeDave needs the engine's verify hook")
        masked, x = state.masked, state.tokens  # [B, W]
        tokens, conf, score = self._static(ops.probs64(state.logits), masked)
        order = torch.sort(score, dim=-1, descending=True, stable=True).indices  # static ranking
        remaining = masked.sum(-1)  # [B]
        k_max = int(min(self.draft_steps, remaining.max().item()))
        b, w = x.shape
        one = ops.top_k_mask(score, torch.ones_like(remaining))
        if k_max <= 1:  # one token left per row: the static step needs no check
            return Decision(commit=one, tokens=tokens, confidence=conf)
        # D_k fills the k best masked positions (fewer when a row has fewer left) -> [B, K, W]
        ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(w, device=x.device).expand(b, w))
        ks = torch.arange(1, k_max + 1, device=x.device)[None, :, None]  # [1, K, 1]
        fill = masked[:, None] & (ranks[:, None] < torch.minimum(ks, remaining[:, None, None]))  # [B, K, W]
        drafts = torch.where(fill, tokens[:, None], x[:, None])
        d_logits = state.verify(drafts)  # [B, K, W, V]
        d_masked = masked[:, None] & ~fill
        d_tokens, _, d_score = self._static(ops.probs64(d_logits), d_masked)
        # T_k = D_k + its own static step; D_{k+1} ⊆ T_k <=> the position D_{k+1} adds is T_k's
        t_fill = ops.top_k_mask(d_score.view(b * k_max, w), torch.ones(b * k_max, dtype=torch.long, device=x.device))
        t_fill = t_fill.view(b, k_max, w) & d_masked
        targets = torch.where(t_fill, d_tokens, drafts)
        agree = (drafts[:, 1:] == targets[:, :-1]).all(-1)  # [B, K-1]: D_{k+1} ⊆ T_k
        best = 1 + agree.long().cumprod(-1).sum(-1)  # [B] longest verified chain
        best = torch.minimum(best, remaining.clamp_min(1))
        pick = (best - 1)[:, None, None, None]
        commit = fill.gather(1, pick[..., 0].expand(b, 1, w))[:, 0]
        next_logits = d_logits.gather(1, pick.expand(b, 1, w, d_logits.shape[-1]))[:, 0]
        return Decision(commit=commit, tokens=tokens, confidence=conf, next_logits=next_logits)
