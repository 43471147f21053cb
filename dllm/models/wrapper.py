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

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
                window: tuple[int, int] | None = None) -> torch.Tensor:
        """input_ids, positions [B, L]; valid [B, L] bool (False = padding) -> logits [B, L, V]
        float32, or [B, b-a, V] for ``window=(a, b)``; row i always predicts token i."""
        mask = attention_mask(positions, positions, valid, self.attention_kind, self.block_size)
        if window is None:
            logits = self.core(input_ids, positions, mask)
            return unshift(logits) if self.shifted else logits
        a, b = window
        if not self.shifted:
            return self.core(input_ids, positions, mask, out=slice(a, b))
        if a == 0:  # position 0 has no left neighbour and keeps its own row
            return unshift(self.core(input_ids, positions, mask, out=slice(0, b)))
        return self.core(input_ids, positions, mask, out=slice(a - 1, b - 1))


    def forward_cached(self, input_ids: torch.Tensor, positions: torch.Tensor, view, f0: int,
                       window: tuple[int, int]) -> torch.Tensor:
        """A cached forward: ``input_ids``/``positions`` [B, L] are canvas columns [f0, f0 + L);
        ``view`` (dllm.cache.StepView) says which K/V to store and attend. Returns the logits of
        canvas columns window=(a, b), [B, b-a, V], row i predicting token i. Shifted models need
        column a-1 fed (f0 <= a-1) unless a == 0."""
        a, b = window
        if not self.shifted:
            return self.core(input_ids, positions, None, cache=view, out=slice(a - f0, b - f0))
        if a == 0:
            return unshift(self.core(input_ids, positions, None, cache=view, out=slice(0, b - f0)))
        assert f0 <= a - 1, "a shifted model needs the column left of the window"
        return self.core(input_ids, positions, None, cache=view, out=slice(a - 1 - f0, b - 1 - f0))


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
        return logits if window is None else logits[:, window[0]:window[1]]
