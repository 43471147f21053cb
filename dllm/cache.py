"""KV cache policies: what the decode loop feeds the model at each step (design.md §3).

Every policy answers one question for the loop — ``logits(rows, a, b)``: the window logits of the
live rows — and decides what to recompute:

=========  ==================  ===========================================================
policy     models              what one forward feeds (window = decode block [a, b))
=========  ==================  ===========================================================
none       any                 the whole canvas
prefix     bidirectional       first forward of a block: the whole canvas (refreshes every
                               slot; it is also the block's first decode step); later: the
                               window and everything after it, over the cached prefix
dual       bidirectional       refresh as prefix; later: the window only, over the cached
                               prefix and the (stale) cached suffix
block      block-causal        the current model block (plus completed blocks not yet
                               cached), over the cached completed blocks. Completed blocks
                               are computed once, from their final tokens: exact
sub_block  block-causal        decode windows are sub-blocks of the model block: the first
                               forward of a sub-block is a ``block`` forward (refreshes the
                               model block's K/V); later ones feed the sub-block only
=========  ==================  ===========================================================

Storage (:class:`KVStore`) is preallocated per layer, one row per canvas row (two with CFG),
``slot = absolute position`` (left padding never stored), K after RoPE. Rows are addressed by
index, so rows that finish simply stop being fed. Shifted models (Dream, Fast-dLLM v2) need the
hidden state of the token left of the window for its first position (algorithms.md §0.1): the
cached policies feed that one extra query (its key is already cached for ``block``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm.canvas import Canvas
from dllm.errors import DllmError, check
from dllm.kernels import cache_write, window_attention

CACHES = ("none", "prefix", "dual", "block", "sub_block")
BIDIRECTIONAL = ("prefix", "dual")
BLOCK_CAUSAL = ("block", "sub_block")


class KVStore:
    """K and V of every layer: k, v [layers, rows, kv_heads, length, head_dim]. Exactly
    2 × layers × kv_heads × head_dim × length × bytes per row."""

    def __init__(self, layers: int, rows: int, kv_heads: int, length: int, head_dim: int, dtype, device):
        shape = (layers, rows, kv_heads, length, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def bytes_per_row(self) -> int:
        return self.nbytes // self.k.shape[1]

    def gather(self, rows: torch.Tensor) -> "KVStore":
        """A copy holding ``rows`` (repeats allowed): FreeDave's candidates each get their own row."""
        out = KVStore.__new__(KVStore)
        out.k, out.v = self.k[:, rows].clone(), self.v[:, rows].clone()
        return out


@dataclass
class StepView:
    """One forward's instructions to every attention layer: write the fed K/V (per-row slots),
    then attend the fed queries over slots [0, kv_len). All per-row tensors are [n] int64."""

    store: KVStore
    rows: torch.Tensor  # store row of each fed row
    dst: torch.Tensor  # first slot written
    src: torch.Tensor  # first fed index written
    count: torch.Tensor  # tokens written
    kv_len: torch.Tensor  # slots attended
    q_pos0: torch.Tensor  # absolute position of the first fed column
    block_size: int  # 0 = bidirectional

    def __post_init__(self):
        self.max_len = int(self.kv_len.max()) if len(self.kv_len) else 0  # one host sync per forward, not per layer

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [n, H, L, D], k, v [n, Hkv, L, D] (post-RoPE) -> [n, H, L, D]."""
        kc, vc = self.store.k[layer], self.store.v[layer]
        cache_write(kc, vc, k, v, self.rows, self.dst, self.src, self.count)
        return window_attention(q, kc, vc, self.rows, self.kv_len, self.q_pos0, self.block_size, max_len=self.max_len)


def cfg_canvas(model, canvas: Canvas, rows: torch.Tensor, x: torch.Tensor):
    """Unsupervised CFG: the unconditional copy has the prompt replaced by MASK."""
    prompt = canvas.valid[rows] & ~canvas.gen[rows]
    return torch.cat([x, x.masked_fill(prompt, model.mask_token_id)])


def combine_cfg(both: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    cond, uncond = both.chunk(2)
    return uncond + (cfg_scale + 1) * (cond - uncond)


class CachePolicy:
    """No cache: every forward feeds the whole canvas."""

    name = "none"

    def setup(self, model, canvas: Canvas, cfg_scale: float) -> None:
        self.model, self.canvas, self.cfg_scale = model, canvas, cfg_scale

    @property
    def nbytes(self) -> int:
        return 0

    def rows_x(self, rows: torch.Tensor, a: int, b: int, windows: torch.Tensor | None) -> torch.Tensor:
        x = self.canvas.x[rows]
        if windows is not None:
            x = x.clone()
            x[:, a:b] = windows
        return x

    def logits(self, rows: torch.Tensor, a: int, b: int, windows: torch.Tensor | None = None):
        """-> (window logits [n, b-a, V], tokens fed per row [n]). ``windows`` [n, b-a] replaces the
        window first (candidates; ``rows`` may repeat)."""
        c, m = self.canvas, self.model
        x, pos, valid = self.rows_x(rows, a, b, windows), c.positions[rows], c.valid[rows]
        fed = valid.sum(-1)
        if not self.cfg_scale:
            return m(x, pos, valid, window=(a, b)), fed
        both = m(cfg_canvas(m, c, rows, x), torch.cat([pos, pos]), torch.cat([valid, valid]),
                 window=(a, b))
        return combine_cfg(both, self.cfg_scale), 2 * fed


class KVCachePolicy(CachePolicy):
    """Shared machinery of the cached policies; subclasses only say what a forward feeds (:meth:`plan`)."""

    def setup(self, model, canvas: Canvas, cfg_scale: float) -> None:
        super().setup(model, canvas, cfg_scale)
        cfg = model.core.cfg
        n = canvas.x.shape[0]
        self.pad = canvas.valid.int().argmax(-1)  # [n] first valid column (slot 0)
        self.end = self.pad + canvas.valid.sum(-1)  # [n] one past the last valid column
        length = int((self.end - self.pad).max())
        dtype = model.core.embed_tokens.weight.dtype
        self.store = KVStore(cfg.num_layers, n * (2 if cfg_scale else 1), cfg.num_kv_heads, length, cfg.head_dim,
                             dtype, canvas.x.device)
        self.block_size = model.block_size if model.attention_kind == "block_causal" else 0
        self.refreshed = torch.full((n,), -1, dtype=torch.long, device=canvas.x.device)  # window last refreshed
        self.cached_col = torch.zeros(n, dtype=torch.long, device=canvas.x.device)  # exact slots end (block)

    @property
    def nbytes(self) -> int:
        return self.store.nbytes

    def need(self, a: int) -> int:
        """First column whose output the window needs (the token left of it for shifted models)."""
        return a - 1 if self.model.shifted and a > 0 else a

    def plan(self, rows, a: int, b: int, first: bool):
        """-> (f0, f1) fed columns, w0 [n] first column written per row, kv_end [n] last column
        (exclusive) attended per row. ``first``: the rows' first forward in this window."""
        raise NotImplementedError

    def logits(self, rows: torch.Tensor, a: int, b: int, windows: torch.Tensor | None = None):
        c, m = self.canvas, self.model
        candidates = windows is not None
        first = not candidates and bool((self.refreshed[rows] != a).any())
        f0, f1, w0, kv_end = self.plan(rows, a, b, first)
        pad, end = self.pad[rows], self.end[rows]
        stop = torch.clamp(end, max=f1)  # last fed valid column (exclusive) per row
        ws = torch.maximum(w0, pad)
        we = torch.clamp(stop, min=ws)
        fed = torch.clamp(stop - torch.clamp(pad, min=f0), min=0)  # valid columns fed per row
        x = self.rows_x(rows, a, b, windows)
        pos = c.positions[rows, f0:f1]
        store_rows = rows
        if self.cfg_scale:  # unconditional copies live in store rows n..2n-1
            x = cfg_canvas(m, c, rows, x)
            pos = torch.cat([pos, pos])
            store_rows = torch.cat([rows, rows + c.x.shape[0]])
            pad, ws, we, kv_end = (torch.cat([t, t]) for t in (pad, ws, we, kv_end))
        store = self.store
        if candidates:  # each candidate writes its own window: a private copy of its row
            store, store_rows = self.store.gather(store_rows), torch.arange(len(store_rows), device=rows.device)
        view = StepView(store, store_rows, dst=ws - pad, src=ws - f0, count=we - ws, kv_len=kv_end - pad,
                        q_pos0=f0 - pad, block_size=self.block_size)
        out = m.forward_cached(x[:, f0:f1], pos, view, f0, (a, b))
        if self.cfg_scale:
            out, fed = combine_cfg(out, self.cfg_scale), 2 * fed
        if not candidates:
            self.refreshed[rows] = a
            self.advance(rows, a)
        return out, fed

    def advance(self, rows, a: int) -> None:
        pass


class PrefixCache(KVCachePolicy):
    name = "prefix"

    def plan(self, rows, a, b, first):
        width = self.canvas.x.shape[1]
        if first:  # the refresh: every slot recomputed from the current canvas
            return 0, width, torch.zeros_like(rows), self.end[rows]
        f0 = self.need(a)
        return f0, width, torch.full_like(rows, f0), self.end[rows]


class DualCache(KVCachePolicy):
    name = "dual"

    def plan(self, rows, a, b, first):
        if first:
            return 0, self.canvas.x.shape[1], torch.zeros_like(rows), self.end[rows]
        f0 = self.need(a)
        return f0, b, torch.full_like(rows, f0), self.end[rows]


class BlockCache(KVCachePolicy):
    name = "block"
    def block_end(self, b: int) -> int:
        """Column one past the model block holding column b-1 (columns are aligned to blocks)."""
        bs = self.block_size
        return min(-(-b // bs) * bs, self.canvas.x.shape[1])

    def plan(self, rows, a, b, first):
        cached = self.cached_col[rows]
        f0 = min(int(cached.min()), self.need(a))
        # an autoregressive model scores the one-token window from the column left of it, which never
        # sees the window (causal): feed up to the last committed token, no placeholder column
        f1 = a if getattr(self.model, "autoregressive", False) else self.block_end(b)
        return f0, f1, cached, torch.clamp(self.end[rows], max=f1)

    def advance(self, rows, a):
        # everything left of the model block holding `a` was fed from its final tokens and written
        start = (a // self.block_size) * self.block_size
        self.cached_col[rows] = torch.clamp(self.cached_col[rows], min=start)


class SubBlockCache(BlockCache):
    name = "sub_block"

    def plan(self, rows, a, b, first):
        if first:  # a new sub-block: refresh the model block's K/V (a `block` forward)
            return super().plan(rows, a, b, first)
        f0 = self.need(a)
        f1 = self.block_end(b)
        w0 = torch.clamp(self.cached_col[rows], min=f0)  # completed blocks are never rewritten
        return f0, b, w0, torch.clamp(self.end[rows], max=f1)


POLICIES = {"none": CachePolicy, "prefix": PrefixCache, "dual": DualCache, "block": BlockCache,
            "sub_block": SubBlockCache}


def make_cache(cache, model, block_length: int) -> CachePolicy:
    """A policy from its name (or a policy instance), checked against the model."""
    if isinstance(cache, CachePolicy):
        policy = cache
    else:
        check(cache in POLICIES, f"cache must be one of {CACHES}, got {cache!r}")
        policy = POLICIES[cache]()
    if policy.name == "none":
        return policy
    kind = model.attention_kind
    check(hasattr(model, "forward_cached"),
          f"cache={policy.name} needs a native dllm model; {type(model).__name__} supports cache=none only")
    if policy.name in BIDIRECTIONAL and kind != "bidirectional":
        raise DllmError(f"cache={policy.name} is for bidirectional models, but this model's attention is {kind}: "
                        f"use cache=block or cache=sub_block")
    if policy.name in BLOCK_CAUSAL and kind != "block_causal":
        raise DllmError(f"cache={policy.name} is for block-causal models, but this model's attention is {kind}: "
                        f"use cache=prefix or cache=dual")
    if policy.name == "block":
        check(model.block_size % block_length == 0,
              f"cache=block: block_length ({block_length}) must divide the model's block size ({model.block_size})")
    if policy.name == "sub_block":
        check(block_length < model.block_size and model.block_size % block_length == 0,
              f"cache=sub_block decodes sub-blocks of block_length tokens inside the model's {model.block_size}-token "
              f"blocks: block_length ({block_length}) must be smaller than {model.block_size} and divide it")
    return policy


__all__ = ["CACHES", "CachePolicy", "PrefixCache", "DualCache", "BlockCache", "SubBlockCache", "KVStore", "StepView",
           "make_cache"]
