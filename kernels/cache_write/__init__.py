"""Commit K/V into the preallocated cache at per-row offsets (in place)."""

from dllm.kernels import pick
from dllm.kernels.cache_write.reference import cache_write_reference


def cache_write(k_cache, v_cache, k, v, rows, dst_start, src_start, count) -> None:
    """k_cache, v_cache [N, Hkv, S, D] (written in place); k, v [n, Hkv, L, D];
    rows, dst_start, src_start, count [n] int64: for every i, slots
    ``[dst_start[i], dst_start[i] + count[i])`` of cache row ``rows[i]`` receive
    ``k[i, :, src_start[i] : src_start[i] + count[i]]`` (same for v). Rows must be distinct."""
    if pick(k) == "triton":
        from dllm.kernels.cache_write.triton import cache_write_triton

        return cache_write_triton(k_cache, v_cache, k, v, rows, dst_start, src_start, count)
    return cache_write_reference(k_cache, v_cache, k, v, rows, dst_start, src_start, count)


__all__ = ["cache_write", "cache_write_reference"]
