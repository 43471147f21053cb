"""Shared sampler maths, pure functions. Scores are float64 so threshold comparisons are exact
and reproducible (algorithms.md §0.3–0.5, §12.4)."""

from __future__ import annotations

import math

import torch

NEG_INF = float("-inf")


def filter_top_k(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """logits [..., V]: keep the k largest per row, -inf elsewhere (None or 0 = keep all)."""
    if not top_k or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def filter_top_p(logits: torch.Tensor, top_p: float | None) -> torch.Tensor:
    """Nucleus filter: keep the smallest prefix (by probability) whose mass reaches top_p; the top
    token is always kept. None or 1 = keep all."""
    if top_p is None or top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p  # mass before this token already ≥ p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def uniform(shape, generator=None, device=None) -> torch.Tensor:
    """U(0, 1) float64 of ``shape`` [B, ...]. ``generator``: None (global RNG), one Generator, or one
    per row (the engine's per-row generators, seeded from (seed, prompt)): row i then draws from its
    own stream only, so its numbers do not depend on the rows beside it. A None entry draws from
    the global RNG."""
    if isinstance(generator, (list, tuple)):
        return (torch.stack([torch.rand(tuple(shape[1:]), dtype=torch.float64, device=device, generator=g)
                             for g in generator]) if len(generator)
                else torch.rand(shape, dtype=torch.float64, device=device))
    return torch.rand(shape, dtype=torch.float64, device=device, generator=generator)


def gumbel_argmax(logits: torch.Tensor, temperature: float, generator=None) -> torch.Tensor:
    """Sample from softmax(logits / T) by the Gumbel-max trick in float64 (LLaDA's
    ``add_gumbel_noise``: argmax exp(l) / (-log u)^T). T = 0 is argmax. [..., V] -> [...] long."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.double()
    u = uniform(logits.shape, generator, logits.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
    return (logits + temperature * gumbel).argmax(-1)


def probs64(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.double(), dim=-1)


def prob_of(probs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """probs [..., V], tokens [...] -> p(token) [...]"""
    return probs.gather(-1, tokens[..., None]).squeeze(-1)


def margin(probs: torch.Tensor) -> torch.Tensor:
    """top-1 minus top-2 probability [..., V] -> [...]"""
    top2 = probs.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def entropy(probs: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """H = -Σ p log(p + eps) [..., V] -> [...] (lower = more certain)."""
    return -(probs * torch.log(probs + eps)).sum(-1)


def transfer_quota(block_masked: torch.Tensor, steps: int, step: int) -> torch.Tensor:
    """LLaDA's linear schedule (§0.5): M masked at block start over s steps; step j transfers
    M // s + (1 if j < M % s else 0). block_masked [B] -> [B] long."""
    base, rem = block_masked // steps, block_masked % steps
    return base + (step < rem).long()


def top_k_mask(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """scores [B, W] float64 (-inf = ineligible), k [B] -> bool [B, W] of each row's k best.

    Stable: ties go to the lower index, identically on every code path. k is clamped to the
    number of eligible positions, so a -inf position is never picked."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    k = torch.minimum(k, torch.isfinite(scores).sum(-1))
    rank_ok = torch.arange(scores.shape[-1], device=scores.device)[None, :] < k[:, None]
    return torch.zeros_like(rank_ok).scatter(-1, order, rank_ok)


def at_least_one(commit: torch.Tensor, scores: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Add each row's best eligible position when the row commits nothing (progress guarantee)."""
    best = top_k_mask(scores.masked_fill(~masked, NEG_INF),
                      torch.ones(scores.shape[0], dtype=torch.long, device=scores.device))
    need = masked.any(-1) & ~commit.any(-1)
    return commit | (best & need[:, None])


def propose(logits: torch.Tensor, temperature: float = 0.0, top_p: float | None = None, top_k: int | None = None,
            generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Proposals and their confidence (LLaDA / Fast-dLLM convention, §0.4): tokens [B, W] from
    Gumbel-max over the filtered logits at ``temperature`` (argmax at 0); confidence [B, W] float64
    = softmax of the raw logits at the proposed token."""
    tokens = gumbel_argmax(filter_top_p(filter_top_k(logits, top_k), top_p), temperature, generator)
    return tokens, prob_of(probs64(logits), tokens)


def check_unit_interval(name: str, value: float | None, allow_none: bool = False) -> None:
    from dllm.errors import check

    if value is None and allow_none:
        return
    check(value is not None and 0 < value <= 1, f"{name} must be in (0, 1], got {value}")


def check_proposal_knobs(temperature: float, top_p: float | None, top_k: int | None) -> None:
    from dllm.errors import check

    check(isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and math.isfinite(temperature)
          and temperature >= 0, f"temperature must be >= 0 and finite, got {temperature!r}")
    check(top_p is None or (isinstance(top_p, (int, float)) and 0 < top_p <= 1),
          f"top_p must be in (0, 1], got {top_p!r}")
    check(top_k is None or (isinstance(top_k, int) and not isinstance(top_k, bool) and top_k >= 0),
          f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")
