"""The torch path of the fused op, planned once per forward (the CPU path; issue 20).

What the reference builds on every call — the write's index tensors, whether the rows are the
cache's rows in order, whether every query sees every slot, the visibility mask — depends only on
the forward's per-row plan, never on the layer. A :class:`WindowPlan` builds them once (one host
sync) and every layer reuses them: each layer then costs its copy into the cache, a view or gather
of the cache, and one SDPA call. It computes exactly what
:func:`dllm.kernels.fused_window_attention.reference.fused_window_attention_reference` computes
(the same ops on the same operands; ``tests/test_cache.py`` checks them equal bit for bit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dllm.kernels.window_attention.reference import all_visible, visible


class WindowPlan:
    """One forward's write and attention plan: rows, dst, src, count, kv_len, q_pos0 [n] int64 as
    for :func:`dllm.kernels.fused_window_attention`; ``lq`` queries and ``length`` fed K/V per row;
    ``cache_rows`` the store's row count N; ``max_len`` = int(kv_len.max()) when known."""

    SLICES = 4  # up to this many rows write by slice copies (an AR step, a small batch): no index tensors

    def __init__(self, rows, dst, src, count, kv_len, q_pos0, block_size: int, lq: int, length: int,
                 cache_rows: int, max_len: int | None = None):
        n, dev = rows.shape[0], rows.device
        self.n = n
        # --- the write: slots [dst, dst + count) of store row `rows` take fed tokens [src, src + count)
        if n <= self.SLICES:
            self.slices = [(i, r, d, s, c) for i, (r, d, s, c) in
                           enumerate(zip(rows.tolist(), dst.tolist(), src.tolist(), count.tolist())) if c > 0]
        else:
            self.slices = None
            j = torch.arange(length, device=dev)[None]  # [1, L]
            take = j < count[:, None]  # [n, L]: the j-th fed token of row i is written
            self.i = torch.arange(n, device=dev)[:, None].expand(-1, length)[take]  # [M]
            self.src = (src[:, None] + j)[take]
            self.dst = (dst[:, None] + j)[take]
            self.r = rows[:, None].expand(-1, length)[take]
            self.any_write = self.r.numel() > 0
        # --- the attention: slots [0, s) of each row's cache, masked unless every query sees every slot
        s = max_len if max_len is not None else (int(kv_len.max()) if n else 0)
        self.s = max(s, 1)
        in_order = n == cache_rows and bool((rows == torch.arange(n, device=dev)).all())
        self.rows = None if in_order else rows  # None: the cache rows in order, read as a view
        self.mask = self.empty = None
        if not all_visible(kv_len, q_pos0, self.s, block_size):
            vis = visible(kv_len, q_pos0, lq, self.s, block_size)  # [n, 1, Lq, S]
            empty = ~vis.any(-1, keepdim=True)  # [n, 1, Lq, 1]: a query with no visible key
            self.mask = vis | empty
            self.empty = empty if bool(empty.any()) else None

    def write(self, k_cache, v_cache, k, v) -> None:
        """k_cache, v_cache [N, Hkv, S, D] written in place from k, v [n, Hkv, L, D]."""
        if self.slices is not None:
            for i, r, d, s, c in self.slices:
                k_cache[r, :, d:d + c] = k[i, :, s:s + c].to(k_cache.dtype)
                v_cache[r, :, d:d + c] = v[i, :, s:s + c].to(v_cache.dtype)
            return
        if self.any_write:  # advanced indices around a slice put the indexed dimension first: [M, Hkv, D]
            k_cache[self.r, :, self.dst] = k[self.i, :, self.src].to(k_cache.dtype)
            v_cache[self.r, :, self.dst] = v[self.i, :, self.src].to(v_cache.dtype)

    def attend(self, q, k_cache, v_cache, scale: float | None = None):
        """q [n, H, Lq, D] over the cache -> [n, H, Lq, D] in q's dtype."""
        s = self.s
        if self.rows is None:
            k, v = k_cache[:, :, :s], v_cache[:, :, :s]  # a view, no copy
        else:
            k, v = k_cache[self.rows, :, :s], v_cache[self.rows, :, :s]  # [n, Hkv, S, D]
        dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        out = F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), attn_mask=self.mask, scale=scale,
                                             enable_gqa=k.shape[1] != q.shape[1])
        if self.empty is not None:
            out = out.masked_fill(self.empty, 0.0)
        return out.to(q.dtype)

    def __call__(self, q, k, v, k_cache, v_cache, scale: float | None = None):
        self.write(k_cache, v_cache, k, v)
        return self.attend(q, k_cache, v_cache, scale)
