"""Attention of a fed window's queries over a row's cached keys (slots [0, kv_len)), with the
window's own fresh K/V already written into the cache by :func:`dllm.kernels.cache_write`."""

from dllm.kernels import pick
from dllm.kernels.window_attention.reference import window_attention_reference


def window_attention(q, k_cache, v_cache, rows, kv_len, q_pos0, block_size: int = 0, scale: float | None = None,
                     num_splits: int | None = None, max_len: int | None = None):
    """q [n, H, Lq, D] (query i of row r sits at absolute position ``q_pos0[r] + i``);
    k_cache, v_cache [N, Hkv, S, D], slot = absolute position, K after RoPE; rows [n] int64 (cache
    row of each query row); kv_len [n]: slots [0, kv_len) are attended. ``block_size`` 0 =
    bidirectional; > 0 = block-causal (slot j visible iff j // block_size <= position // block_size).
    H must be a multiple of Hkv (grouped-query heads). Returns [n, H, Lq, D] in q's dtype; a query
    with no visible key gets zeros. ``max_len`` = int(kv_len.max()) when the caller knows it (saves a
    device-to-host sync per call)."""
    if pick(q) == "triton":
        from dllm.kernels.window_attention.triton import window_attention_triton

        return window_attention_triton(q, k_cache, v_cache, rows, kv_len, q_pos0, block_size, scale, num_splits,
                                       max_len=max_len)
    return window_attention_reference(q, k_cache, v_cache, rows, kv_len, q_pos0, block_size, scale, max_len)


__all__ = ["window_attention", "window_attention_reference"]
