"""KV cache policies: what the decode loop feeds the model at each step (design.md §3).

Every policy answers one question for the engine — ``plan(row, first)``: which of a row's columns
one forward feeds, writes and attends — and so decides what to recompute:

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

Multi-block decoding (``multi_block`` < 1): the window [a, b) is the row's span — the active block
plus, once it is committed past the knob, the next one. Every plan reads the span as its window:
the refresh (prefix, dual, sub_block) still happens once, on the active block's first forward; the
joined block is fed fresh on every forward of the span (as the window always is) and its slots are
rewritten each time; ``block`` still writes completed model blocks once, from their final tokens,
so it stays exact. When the active block is clean the next one becomes active (a new refresh).

Storage (:class:`KVStore`) is preallocated per layer, one store row per decoding row (two with
CFG), ``slot = absolute position = canvas column``, K after RoPE. Store rows are handed out by the
engine as requests arrive and taken back when they leave; rows that finish simply stop being fed.
Plans are per row, so one ragged forward serves rows at different windows and caches. Shifted
models (Dream, Fast-dLLM v2) need the hidden state of the token left of the window for its first
position (algorithms.md §0.1): the cached policies feed that one extra query (its key is already
cached for ``block``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm.errors import DllmError, check
from dllm.kernels import fused_window_attention, pick
from dllm.kernels.fused_window_attention.planned import WindowPlan

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

    def grow(self, rows: int, length: int) -> None:
        """Make room for at least ``rows`` rows of ``length`` slots (kept contents stay in place)."""
        _, n, _, s, _ = self.k.shape
        if rows <= n and length <= s:
            return
        for name in ("k", "v"):
            old = getattr(self, name)
            new = old.new_zeros((old.shape[0], max(rows, n), old.shape[2], max(length, s), old.shape[4]))
            new[:, :n, :, :s] = old
            setattr(self, name, new)

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
        self.backend: str | None = None  # the kernel backend, picked at the first layer
        self.plan: WindowPlan | None = None  # the torch path's indices and mask, built at the first layer

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [n, H, L, D], k, v [n, Hkv, L, D] (post-RoPE) -> [n, H, L, D]. One launch on the GPU (the
        write fused into the attention); on the CPU the write, then the attention, planned once per
        forward (:class:`WindowPlan`: every layer shares the rows' indices and visibility mask)."""
        kc, vc = self.store.k[layer], self.store.v[layer]
        if self.backend is None:
            self.backend = pick(q)
        if self.backend == "triton":
            return fused_window_attention(q, k, v, kc, vc, self.rows, self.dst, self.src, self.count, self.kv_len,
                                          self.q_pos0, self.block_size, max_len=self.max_len)
        if self.plan is None:
            self.plan = WindowPlan(self.rows, self.dst, self.src, self.count, self.kv_len, self.q_pos0, self.block_size,
                                   q.shape[2], k.shape[2], kc.shape[0], self.max_len)
        return self.plan(q, k, v, kc, vc)


class CachePolicy:
    """No cache: every forward feeds the row's whole canvas (a plain forward).

    Policies are per-request and stateless: a row's cache state (``refreshed``: the window last
    refreshed; ``cached_col``: where its exact slots end) lives on the row, so rows at different
    windows share one forward and a row decodes the same alone or in any batch."""

    name = "none"
    cached = False

    def bind(self, model, block_length: int) -> "CachePolicy":
        self.shifted = bool(getattr(model, "shifted", False))
        self.autoregressive = bool(getattr(model, "autoregressive", False))
        self.block_size = model.block_size if model.attention_kind == "block_causal" else 0
        self.block_length = block_length
        return self


class KVCachePolicy(CachePolicy):
    """Shared machinery of the cached policies; subclasses only say what a forward feeds (:meth:`plan`)."""

    cached = True

    def need(self, a: int) -> int:
        """First column whose output the window needs (the token left of it for shifted models)."""
        return a - 1 if self.shifted and a > 0 else a

    def plan(self, row, first: bool) -> tuple[int, int, int, int]:
        """-> (f0, f1) columns fed, w0 first column written, kv_end columns attended (exclusive), for
        ``row`` (its window ``row.a, row.b``, valid end ``row.end``, canvas ``row.width``).
        ``first``: the row's first forward in this window."""
        raise NotImplementedError

    def advance(self, row) -> None:
        """After a forward of the row's own tokens (not a candidate's)."""

    def keeps_left(self, row) -> bool:
        """Whether the logits of the column left of the row's window are fixed while the window
        decodes, so the engine keeps them from the forward that fed that column (``row.left``)."""
        return False


class PrefixCache(KVCachePolicy):
    name = "prefix"

    def plan(self, row, first):
        if first:  # the refresh: every slot recomputed from the current canvas
            return 0, row.width, 0, row.end
        f0 = self.need(row.a)
        return f0, row.width, f0, row.end


class DualCache(KVCachePolicy):
    name = "dual"

    def plan(self, row, first):
        if first:
            return 0, row.width, 0, row.end
        f0 = self.need(row.a)
        return f0, row.b, f0, row.end


class BlockCache(KVCachePolicy):
    name = "block"

    def block_end(self, row, b: int) -> int:
        """Column one past the model block holding column b-1 (columns are positions)."""
        bs = self.block_size
        return min(-(-b // bs) * bs, row.width)

    def keeps_left(self, row):
        # shifted (Fast-dLLM v2): the window's first position is scored from column a-1. When the window
        # starts a model block, a-1 sits in a completed block, which never sees the window (block-causal),
        # so its logits are fixed for the whole block: computed once, then reused (not fed again)
        return (self.shifted and not self.autoregressive and row.a > 0 and row.a % self.block_size == 0
                and not row.settings.cfg_scale)

    def left_fed(self, row) -> int:
        """First column the window needs fed: a-1 for shifted models, unless its logits are kept."""
        kept = self.keeps_left(row) and row.left is not None and row.left[0] == row.a - 1 and row.cached_col >= row.a
        return row.a if kept else self.need(row.a)

    def plan(self, row, first):
        f0 = min(row.cached_col, self.left_fed(row))
        # an autoregressive model scores the one-token window from the column left of it, which never
        # sees the window (causal): feed up to the last committed token, no placeholder column
        f1 = row.a if self.autoregressive else self.block_end(row, row.b)
        return f0, f1, row.cached_col, min(row.end, f1)

    def advance(self, row):
        # everything left of the model block holding `a` was fed from its final tokens and written
        row.cached_col = max(row.cached_col, (row.a // self.block_size) * self.block_size)


class SubBlockCache(BlockCache):
    name = "sub_block"

    def plan(self, row, first):
        if first:  # a new sub-block: refresh the model block's K/V (a `block` forward)
            return super().plan(row, first)
        f0 = self.left_fed(row)
        w0 = max(row.cached_col, f0)  # completed blocks are never rewritten
        return f0, row.b, w0, min(row.end, self.block_end(row, row.b))


POLICIES = {"none": CachePolicy, "prefix": PrefixCache, "dual": DualCache, "block": BlockCache,
            "sub_block": SubBlockCache}


def make_cache(cache, model, block_length: int) -> CachePolicy:
    """A policy from its name (or a policy instance), checked against the model."""
    if isinstance(cache, CachePolicy):
        policy = type(cache)()
    else:
        check(cache in POLICIES, f"cache must be one of {CACHES}, got {cache!r}")
        policy = POLICIES[cache]()
    policy.bind(model, block_length)
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


__all__ = ["CACHES", "CachePolicy", "KVCachePolicy", "PrefixCache", "DualCache", "BlockCache", "SubBlockCache",
           "KVStore", "StepView", "make_cache"]
