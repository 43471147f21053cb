"""The window's fresh K/V written into the cache and the window's queries attended over the cache,
in one launch on the GPU (issue 19: the separate write kernel was one extra launch per layer)."""

from dllm.kernels import pick
from dllm.kernels.fused_window_attention.reference import fused_window_attention_reference


def fused_window_attention(q, k, v, k_cache, v_cache, rows, dst, src, count, kv_len, q_pos0, block_size: int = 0,
                           scale: float | None = None, num_splits: int | None = None, max_len: int | None = None):
    """q [n, H, Lq, D]; k, v [n, Hkv, L, D] the fed tokens' K (after RoPE) and V; k_cache, v_cache
    [N, Hkv, S, D] (written in place); rows, dst, src, count, kv_len, q_pos0 [n] int64.

    Same result as :func:`dllm.kernels.cache_write` (slots ``[dst[i], dst[i] + count[i])`` of cache
    row ``rows[i]`` receive ``k[i, :, src[i] : src[i] + count[i]]``) followed by
    :func:`dllm.kernels.window_attention` over slots ``[0, kv_len)`` — see those two for the
    conventions (block-causal visibility, grouped-query heads, ``max_len``). Rows must be distinct.
    Returns [n, H, Lq, D] in q's dtype."""
    if pick(q) == "triton":
        from dllm.kernels.fused_window_attention.triton import fused_window_attention_triton

        return fused_window_attention_triton(q, k, v, k_cache, v_cache, rows, dst, src, count, kv_len, q_pos0,
                                             block_size, scale, num_splits, max_len=max_len)
    return fused_window_attention_reference(q, k, v, k_cache, v_cache, rows, dst, src, count, kv_len, q_pos0,
                                            block_size, scale, max_len)


__all__ = ["fused_window_attention", "fused_window_attention_reference"]
