"""Torch reference of the fused op (also the CPU path): the separate cache write, then the window
attention over the cache it just wrote (:mod:`dllm.kernels.cache_write`,
:mod:`dllm.kernels.window_attention`)."""

from dllm.kernels.cache_write.reference import cache_write_reference
from dllm.kernels.window_attention.reference import window_attention_reference


def fused_window_attention_reference(q, k, v, k_cache, v_cache, rows, dst, src, count, kv_len, q_pos0,
                                     block_size: int = 0, scale: float | None = None, max_len: int | None = None):
    cache_write_reference(k_cache, v_cache, k, v, rows, dst, src, count)
    return window_attention_reference(q, k_cache, v_cache, rows, kv_len, q_pos0, block_size, scale, max_len)
