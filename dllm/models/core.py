"""The one native transformer core every model family maps onto.

RMSNorm, rotary position embeddings (non-interleaved "rotate half", as in Llama / Qwen2 /
LLaDA), SwiGLU MLP, grouped-query attention with optional QKV bias. Attention is one of
``bidirectional`` (LLaDA, Dream), ``block_causal`` (Fast-dLLM v2: query block >= key block,
blocks aligned to absolute positions) or ``causal`` (autoregressive parents).

Module names follow the Llama / Qwen2 convention (``layers.N.self_attn.q_proj``,
``layers.N.mlp.gate_proj`` ...), so family files only rename checkpoint keys and LoRA targets
are the familiar ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from dllm.kernels.linear import Linear  # nn.Linear with the CPU inference fast path (kernels/linear)

ATTENTION_KINDS = ("bidirectional", "block_causal", "causal")
TALL_HEAD_MAX_ROWS, TALL_HEAD_MIN_VOCAB = 64, 8192  # where vocab_logits takes (W Hᵀ)ᵀ on CPU (measured)


@dataclass
class CoreConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    head_dim: int | None = None
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    qkv_bias: bool = False
    tie_embeddings: bool = False
    max_length: int = 4096
    attention: str = "bidirectional"
    block_size: int | None = None  # block_causal only

    @property
    def autoregressive(self) -> bool:
        """Causal attention read as block-causal with one-token blocks (dllm/models/autoregressive.py)."""
        return self.attention == "causal" or (self.attention == "block_causal" and self.block_size == 1)

    def __post_init__(self):
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_heads
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if self.attention == "block_causal" and not self.block_size:
            raise ValueError("block_size must be a positive integer for block_causal attention")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )


class LayerKV(Protocol):
    """What a KV cache offers one layer (dllm.cache.StepView): store this forward's K/V (post-RoPE)
    and return the attention of its queries over the cached and fresh keys, [B, H, L, hd]."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...


def attention_mask(
    q_pos: torch.Tensor, k_pos: torch.Tensor, k_valid: torch.Tensor, kind: str, block_size: int | None
) -> torch.Tensor:
    """Boolean mask, True = may attend.

    q_pos [B, Lq], k_pos [B, Lk] absolute positions; k_valid [B, Lk] (False for padding).
    Returns [B, 1, Lq, Lk]. A query with no allowed key (a padding query under a causal rule)
    is allowed every valid key so softmax never sees an all -inf row; its output is ignored.
    """
    allowed = k_valid[:, None, :].expand(-1, q_pos.shape[1], -1)  # [B, Lq, Lk]
    if kind == "causal":
        allowed = allowed & (k_pos[:, None, :] <= q_pos[:, :, None])
    elif kind == "block_causal":
        allowed = allowed & (k_pos[:, None, :] // block_size <= q_pos[:, :, None] // block_size)
    empty = ~allowed.any(-1, keepdim=True)
    allowed = allowed | (empty & k_valid[:, None, :])
    return allowed[:, None]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """positions [B, L] -> cos, sin [B, 1, L, head_dim] (computed in float32, then cast)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # [B, L, hd/2]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # [B, 1, L, hd]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, hd]; rotate-half convention (first half pairs with second half)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: CoreConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv, self.hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = Linear(cfg.hidden_size, self.n_heads * self.hd, bias=cfg.qkv_bias)
        self.k_proj = Linear(cfg.hidden_size, self.n_kv * self.hd, bias=cfg.qkv_bias)
        self.v_proj = Linear(cfg.hidden_size, self.n_kv * self.hd, bias=cfg.qkv_bias)
        self.o_proj = Linear(self.n_heads * self.hd, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, cache: LayerKV | None = None):
        b, l, _ = x.shape
        q = self.q_proj(x).view(b, l, self.n_heads, self.hd).transpose(1, 2)  # [B, H, L, hd]
        k = self.k_proj(x).view(b, l, self.n_kv, self.hd).transpose(1, 2)  # [B, Hkv, L, hd]
        v = self.v_proj(x).view(b, l, self.n_kv, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # K stored post-RoPE by caches
        if cache is not None:  # the cache's kernels (Triton on GPU) replace the masked SDPA
            out = cache.attend(self.layer, q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.n_kv != self.n_heads)
        return self.o_proj(out.transpose(1, 2).reshape(b, l, self.n_heads * self.hd))


class MLP(nn.Module):
    def __init__(self, cfg: CoreConfig):
        super().__init__()
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: CoreConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """input_ids [B, L], positions [B, L] -> logits [B, L, V] (row i scored as the model was trained)."""

    def __init__(self, cfg: CoreConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.gradient_checkpointing = False

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cache: LayerKV | None = None,
        out: slice | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """mask: bool [B, 1, Lq, Lk] from :func:`attention_mask` (unused with a ``cache``, whose view
        knows each row's visible keys).
        ``out`` selects the positions whose logits are computed (the vocabulary projection is
        the largest matmul of a small-block decode step; the window is all a sampler reads): a slice
        shared by every row, or a long tensor [B, W] of per-row positions (ragged batches)."""
        h = self.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, h.dtype)
        for block in self.layers:
            if self.gradient_checkpointing and self.training:
                h = torch.utils.checkpoint.checkpoint(block, h, cos, sin, mask, cache, use_reentrant=False)
            else:
                h = block(h, cos, sin, mask, cache)
        if isinstance(out, torch.Tensor):
            h = h.gather(1, out[..., None].expand(-1, -1, h.shape[-1]))  # [B, W, hidden]
        elif out is not None:
            h = h[:, out]
        return vocab_logits(self.lm_head, self.norm(h)).float()


def vocab_logits(head: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """h [..., d] -> logits [..., V] = h Wᵀ through the vocabulary projection ``head``.

    On CPU, without autograd, a plain bias-free head over a real vocabulary (V ≥ 8192) with 2-64
    rows (a decode step's batch, or a small block's window) is computed as (W Hᵀ)ᵀ: MKL runs that
    tall product 1.3-2.8x faster than ``F.linear``'s wide one there (SmolLM2's 49152 x 576 head), and
    a batched AR step spends about a third of its matmul time in it. It loses on small heads and
    from ~128 rows (`python bench/vocab_projection/run.py`, bench/vocab_projection/bench.md). The
    same dot products in another blocking: equal to ``F.linear`` within fp32 rounding
    (tests/test_models.py). Where kernels/linear's oneDNN path runs (CPU float32 inference) it beats
    both at nearly every row count (4.6 against 8.6 ms at one row, 8.8 against 21 at nine: bench/cpu_linear)
    and is taken instead; the tall product is then what ``DLLM_KERNELS=torch`` runs. Anything else
    (CUDA, training, a LoRA-wrapped head, one row, where both are the same matrix-vector product) is
    ``head(h)``; so is any device but the CPU, where this was measured."""
    if isinstance(head, Linear) and head.takes_onednn(h):
        return head(h)  # oneDNN on the prepacked head: faster than both products at every row count here
    rows = h.numel() // h.shape[-1]
    if (h.device.type != "cpu" or torch.is_grad_enabled() or not isinstance(head, nn.Linear) or head.bias is not None
            or not 2 <= rows <= TALL_HEAD_MAX_ROWS or head.out_features < TALL_HEAD_MIN_VOCAB):
        return head(h)
    w = head.weight  # [V, d]
    out = (w @ h.reshape(rows, -1).t()).t().contiguous()  # [V, rows] -> [rows, V]
    return out.view(*h.shape[:-1], w.shape[0])
