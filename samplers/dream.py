"""Dream's sampler (Ye et al., "Dream 7B", arXiv 2508.15487; ``diffusion_generate``;
algorithms.md §2)."""

from __future__ import annotations

import torch

from dllm.errors import check
from dllm.samplers import ops
from dllm.samplers.base import Decision, Sampler, StepState

ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")


def reference_count(masked_now: torch.Tensor, steps: int, j: int, eps: float) -> torch.Tensor:
    """Positions step ``j`` of ``steps`` unmasks under Dream's reference rule, per row.

    masked_now [B] long -> [B] long. The reference (``generation_utils.py``: ``timesteps =
    torch.linspace(1, eps, steps + 1)``; ``int(num_mask_token * (1 - s / t))`` with t, s =
    timesteps[j], timesteps[j + 1], and ``int(num_mask_token)`` on the last step) works in float32,
    so this does too, for fidelity (on the sizes we checked the float64 grid truncates the same).
    The count may be 0 on early steps (``steps >= M``); the last step takes every masked position.
    """
    if j >= steps - 1:
        return masked_now
    ts = torch.linspace(1, eps, steps + 1, dtype=torch.float32)
    frac = 1 - ts[j + 1] / ts[j]  # float32 scalar, as the reference's
    return (masked_now.float() * frac).long()  # int() of a non-negative float: truncation


class DreamSampler(Sampler):
    """Position scores on Dream's time grid.

    With ``t_j = 1 - j (1 - eps) / s`` over the block's s steps, step j unmasks
    ``n = floor(M_now (1 - t_{j+1} / t_j))`` positions (all remaining on the last step, at least
    one always) ranked by ``alg``: ``maskgit_plus`` p(x̂), ``topk_margin`` p1 − p2, ``entropy``
    Σ p log p (higher = more certain). ``alg_temp`` > 0 samples the n positions without
    replacement from softmax(score / alg_temp) instead of taking the top n. ``origin``
    unmasks each position independently with probability 1 − t_{j+1}/t_j.
    Proposals: argmax, or samples from softmax(filtered logits / temperature) with top-p/top-k.

    Default (``ref_compat=False``): a step never commits zero tokens (n is clamped to >= 1, and
    ``origin`` commits its most certain position when no coin came up), so decoding never spends a
    forward on nothing.

    ``ref_compat=True``: the reference's per-step counts exactly, zero steps included —
    ``n = int(M_now · (1 − s/t))`` on the float32 grid ``linspace(1, eps, steps + 1)``
    (:func:`reference_count`), all remaining on the window's last step, and no forced commit for
    ``origin``. A step that commits nothing still counts as a forward (NFE), as in the reference.
    It matters at ``steps >= gen_length`` (Dream's usual setting: steps = max_new_tokens), where
    early steps round down to 0. The reference schedules the whole answer as one window: use
    ``block_length = gen_length`` to match it.

    Either way n is computed per row (the reference uses the batch-mean mask count; equal for a
    batch of one or rows with equal mask counts), so batched ≡ single.
    """

    def __init__(self, alg: str = "entropy", temperature: float = 0.0, top_p: float | None = None,
                 top_k: int | None = None, alg_temp: float | None = None, eps: float = 1e-3,
                 ref_compat: bool = False):
        check(alg in ALGS, f"alg must be one of {ALGS}, got {alg!r}")
        ops.check_proposal_knobs(temperature, top_p, top_k)
        check(alg_temp is None or alg_temp >= 0, f"alg_temp must be >= 0, got {alg_temp}")
        check(0 < eps < 1, f"eps must be in (0, 1), got {eps}")
        check(isinstance(ref_compat, bool), f"ref_compat must be true or false, got {ref_compat!r}")
        self.alg, self.temperature, self.top_p, self.top_k = alg, temperature, top_p, top_k
        self.alg_temp, self.eps, self.ref_compat = alg_temp, eps, ref_compat
        if ref_compat:  # the engine then accepts steps that commit nothing (samplers/base.py)
            self.may_commit_nothing = True

    def step(self, state: StepState) -> Decision:
        logits = ops.filter_top_p(ops.filter_top_k(state.logits, self.top_k), self.top_p)
        tokens = ops.gumbel_argmax(logits, self.temperature, state.generator)  # [B, W]
        probs = ops.probs64(logits / self.temperature if self.temperature > 0 else logits)
        if self.alg == "topk_margin":
            conf = ops.margin(probs)
        elif self.alg == "entropy":
            conf = -ops.entropy(probs, eps=1e-10)
        else:
            conf = ops.prob_of(probs, tokens)
        s, j = state.steps_per_block, state.block_step
        last = j >= s - 1
        masked = state.masked
        score = conf.masked_fill(~masked, ops.NEG_INF)
        if self.ref_compat:
            ts = torch.linspace(1, self.eps, s + 1, dtype=torch.float32)
            frac = 1.0 if last else float(1 - ts[j + 1] / ts[j])  # origin's coin, float32 as the reference
            n = reference_count(masked.sum(-1), s, j, self.eps)
        else:
            t = 1 - j * (1 - self.eps) / s
            t_next = 1 - (j + 1) * (1 - self.eps) / s
            frac = 1.0 if last else 1 - t_next / t
            n = masked.sum(-1) if last else torch.floor(masked.sum(-1).double() * frac).long()
            n = n.clamp_min(1)
        if self.alg == "origin":
            u = ops.uniform(conf.shape, state.generator, conf.device)
            commit = masked & (u < frac)
        elif self.alg_temp:
            u = ops.uniform(conf.shape, state.generator, conf.device)
            rank = score / self.alg_temp - torch.log(-torch.log(u.clamp_min(1e-300)))  # Gumbel top-k
            commit = ops.top_k_mask(rank.masked_fill(~masked, ops.NEG_INF), n)
        else:
            commit = ops.top_k_mask(score, n)
        if not self.ref_compat:
            commit = ops.at_least_one(commit, score, masked)
        return Decision(commit=commit, tokens=tokens, confidence=conf)
