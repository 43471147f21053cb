"""What the decode loop sees of a model: ``forward(ids, positions, valid) -> logits`` where row i
of the logits always predicts token i, plus the model's constants (mask, end and pad ids,
attention kind, block size, maximum length) and its tokenizer."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from dllm.models.core import Transformer, attention_mask


def unshift(logits: torch.Tensor) -> torch.Tensor:
    """Token-shifted logits [B, L, V] (row i predicts i+1) -> row i predicts i; row 0 keeps its own."""
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


class DiffusionLM(nn.Module):
    """A native-core model with its family's conventions applied."""

    def __init__(self, core: Transformer, tokenizer, *, family: str, mask_token_id: int,
                 eos_token_ids: tuple[int, ...], pad_token_id: int, shifted: bool, name: str = ""):
        super().__init__()
        self.core = core
        self.tokenizer = tokenizer
        self.family = family
        self.mask_token_id = int(mask_token_id)
        self.eos_token_ids = tuple(int(i) for i in eos_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.shifted = shifted
        self.name = name

    @property
    def attention_kind(self) -> str:
        return self.core.cfg.attention

    @property
    def block_size(self) -> int | None:
        return self.core.cfg.block_size

    @property
    def autoregressive(self) -> bool:
        return self.core.cfg.autoregressive

    @property
    def max_length(self) -> int:
        return self.core.cfg.max_length

    @property
    def device(self) -> torch.device:
        return self.core.embed_tokens.weight.device

    def source_rows(self, cols: torch.Tensor, f0: torch.Tensor | int = 0) -> torch.Tensor:
        """Canvas columns [B, W] -> the fed index [B, W] whose hidden state scores each column: the
        column itself, or the one left of it for shifted models (column 0 keeps its own row)."""
        src = torch.where(cols > 0, cols - 1, cols) if self.shifted else cols
        f0 = f0[:, None] if isinstance(f0, torch.Tensor) else f0
        return (src - f0).clamp_min(0)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
                window: tuple[int, int] | torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, positions [B, L]; valid [B, L] bool (False = padding) -> logits [B, L, V]
        float32, or [B, W, V] for ``window``: (a, b) shared by every row, or per-row columns
        [B, W] long (a ragged batch); row i always predicts token i."""
        mask = attention_mask(positions, positions, valid, self.attention_kind, self.block_size)
        if window is None:
            logits = self.core(input_ids, positions, mask)
            return unshift(logits) if self.shifted else logits
        if isinstance(window, torch.Tensor):
            return self.core(input_ids, positions, mask, out=self.source_rows(window))
        a, b = window
        if not self.shifted:
            return self.core(input_ids, positions, mask, out=slice(a, b))
        if a == 0:  # position 0 has no left neighbour and keeps its own row
            return unshift(self.core(input_ids, positions, mask, out=slice(0, b)))
        return self.core(input_ids, positions, mask, out=slice(a - 1, b - 1))

    def forward_cached(self, input_ids: torch.Tensor, positions: torch.Tensor, view, f0: torch.Tensor,
                       cols: torch.Tensor) -> torch.Tensor:
        """A cached forward over a ragged batch: row r of ``input_ids``/``positions`` [B, L] holds its
        canvas columns [f0[r], f0[r] + L) (the tail past what it feeds is padding); ``view``
        (dllm.cache.StepView) says which K/V to store and attend. Returns the logits of canvas
        columns ``cols`` [B, W] -> [B, W, V], row i predicting token i. Shifted models need the
        column left of the window fed."""
        return self.core(input_ids, positions, None, cache=view, out=self.source_rows(cols, f0))


class HFDiffusionLM(nn.Module):
    """Generic adapter: any ``transformers`` model that returns logits (no KV cache support).

    Used for checkpoints without a native family file (e.g. a masked-LM encoder used as a
    diffusion denoiser). Attention is whatever the wrapped model does with a padding mask.
    """

    def __init__(self, model, tokenizer, *, mask_token_id: int, eos_token_ids: tuple[int, ...],
                 pad_token_id: int, shifted: bool = False, name: str = ""):
        super().__init__()
        self.hf = model
        self.tokenizer = tokenizer
        self.family = "hf"
        self.mask_token_id = int(mask_token_id)
        self.eos_token_ids = tuple(int(i) for i in eos_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.shifted = shifted
        self.name = name
        self._takes_positions = "position_ids" in inspect.signature(model.forward).parameters

    attention_kind = "bidirectional"
    block_size = None
    autoregressive = False

    @property
    def max_length(self) -> int:
        return int(getattr(self.hf.config, "max_position_embeddings", 512))

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    def forward(self, input_ids, positions, valid, window: tuple[int, int] | None = None):
        kwargs = {"position_ids": positions} if self._takes_positions else {}
        logits = self.hf(input_ids=input_ids, attention_mask=valid.long(), **kwargs).logits.float()
        logits = unshift(logits) if self.shifted else logits
        if isinstance(window, torch.Tensor):  # per-row columns [B, W]
            return logits.gather(1, window[..., None].expand(-1, -1, logits.shape[-1]))
        return logits if window is None else logits[:, window[0]:window[1]]
