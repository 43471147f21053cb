"""The sampler contract: ``step(state) -> Decision``. Pure — no model call, no hidden state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class StepState:
    """One decode step over the active window of every live row.

    logits        [B, W, V] float32 — row i predicts window token i (shift already undone)
    tokens        [B, W] long — current window tokens (MASK where undecided)
    masked        [B, W] bool — eligible positions: MASK and inside the row's generation area
    block_step    forwards already spent on this block (0 on the block's first forward)
    steps_per_block  the step budget per block of schedule-driven samplers
    block_masked  [B] long — eligible positions of each row when the block started
    end_token_ids the model's end-of-text ids
    generator     seeded sampling: None (global RNG), a torch.Generator, or a list with one per row
                  (draw with ops.uniform so each row reads only its own stream)
    reference     [B, W] long or None — a known final output (analysis samplers only; -1 = none)
    verify        the engine's draft hook: drafts [B, K, W] -> logits [B, K, W, V] in one batched
                  forward (draft-and-verify samplers; never call the model yourself)
    carry         [B, W, C] float64 or None — per-position memory the engine keeps for samplers that
                  declare ``carry_width = C`` (zeros at a row's start; what the sampler returned
                  in ``Decision.carry`` last step). Per row, so batched ≡ single still holds.
    """

    logits: torch.Tensor
    tokens: torch.Tensor
    masked: torch.Tensor
    block_step: int
    steps_per_block: int
    block_masked: torch.Tensor
    end_token_ids: tuple[int, ...]
    generator: torch.Generator | list | None = None
    reference: torch.Tensor | None = None
    verify: Callable[[torch.Tensor], torch.Tensor] | None = None
    carry: torch.Tensor | None = None


@dataclass
class Decision:
    """commit [B, W] bool ⊆ masked (≥ 1 per row that has a masked position); tokens [B, W] long
    proposals (read where commit); confidence [B, W] float64 score of each proposal (for traces).

    end_at [B] long or None: end-of-text prediction — every masked position after this window
    index becomes end-of-text (−1 = no cut). next_logits [B, W, V] or None: logits of the state
    after this commit, when the sampler already has them (a verified draft), saving a forward.
    carry [B, W, C] float64 or None: the sampler's per-position memory for the next step (stored by
    the engine; see StepState.carry)."""

    commit: torch.Tensor
    tokens: torch.Tensor
    confidence: torch.Tensor
    end_at: torch.Tensor | None = None
    next_logits: torch.Tensor | None = None
    carry: torch.Tensor | None = None


class Sampler(ABC):
    """An unmasking policy. Knobs in the constructor; model constants arrive in the state.

    ``may_commit_nothing``: the engine requires >= 1 commit per row and step unless a sampler sets
    this (a reference schedule that commits zero tokens on some steps; such a step still counts as
    a forward, and the schedule's last step of a window must commit the rest)."""

    may_commit_nothing = False
    carry_width = 0  # > 0: the engine keeps this many float64 values per position for the sampler

    @abstractmethod
    def step(self, state: StepState) -> Decision: ...

    def __repr__(self) -> str:
        knobs = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({knobs})"
