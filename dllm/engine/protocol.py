"""What the engine needs from a model (design.md §2): constants, a tokenizer and one forward.

Native dllm models (:class:`dllm.models.wrapper.DiffusionLM`) also offer ``forward_cached``
(:class:`CachedDecodeModel`), which the KV-cache policies need; anything else decodes with
``cache=none`` (e.g. :class:`dllm.models.wrapper.HFDiffusionLM`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class DecodeModel(Protocol):
    tokenizer: object
    mask_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    shifted: bool  # logits row i predicts token i+1 (the wrapper undoes it)

    @property
    def attention_kind(self) -> str: ...  # "bidirectional" | "block_causal"

    @property
    def block_size(self) -> int | None: ...  # the trained block (block-causal models)

    @property
    def max_length(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
                 window: torch.Tensor | tuple[int, int] | None = None) -> torch.Tensor:
        """ids, positions [B, L], valid [B, L] bool; ``window`` [B, W] canvas columns per row ->
        logits [B, W, V] float32, row i predicting token i."""
        ...


@runtime_checkable
class CachedDecodeModel(DecodeModel, Protocol):
    def forward_cached(self, input_ids: torch.Tensor, positions: torch.Tensor, view, f0: torch.Tensor,
                       cols: torch.Tensor) -> torch.Tensor:
        """A ragged cached forward (see :class:`dllm.cache.StepView`): row r feeds canvas columns
        [f0[r], f0[r] + L); returns the logits of columns ``cols`` [B, W] -> [B, W, V]."""
        ...
