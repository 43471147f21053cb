"""Torch reference of the cache write (also the CPU path): one advanced-indexing copy."""

import torch


def cache_write_reference(k_cache, v_cache, k, v, rows, dst_start, src_start, count) -> None:
    n, _, length, _ = k.shape
    if n <= 4:  # a few rows (an AR step, a small batch): plain slice copies beat building indices
        for i, (r, d, s, c) in enumerate(zip(rows.tolist(), dst_start.tolist(), src_start.tolist(), count.tolist())):
            if c > 0:
                k_cache[r, :, d:d + c] = k[i, :, s:s + c].to(k_cache.dtype)
                v_cache[r, :, d:d + c] = v[i, :, s:s + c].to(v_cache.dtype)
        return
    j = torch.arange(length, device=k.device)[None]  # [1, L]
    take = j < count[:, None]  # [n, L]: the j-th token of row i is written
    if not bool(take.any()):
        return
    i = torch.arange(n, device=k.device)[:, None].expand(-1, length)[take]  # [M]
    src = (src_start[:, None] + j)[take]  # [M]
    dst = (dst_start[:, None] + j)[take]  # [M]
    r = rows[:, None].expand(-1, length)[take]  # [M]
    # advanced indices around a slice put the indexed dimension first: [M, Hkv, D]
    k_cache[r, :, dst] = k[i, :, src].to(k_cache.dtype)
    v_cache[r, :, dst] = v[i, :, src].to(v_cache.dtype)
