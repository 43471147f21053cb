"""Torch reference of the window attention (also the CPU path): gather the rows' cache, build the
visibility mask, softmax in float32 through SDPA."""

import torch
import torch.nn.functional as F


def visible(kv_len, q_pos0, lq: int, s: int, block_size: int):
    """[n, 1, Lq, S] bool: slot j visible to query i of row r."""
    slots = torch.arange(s, device=kv_len.device)
    vis = (slots[None, None, :] < kv_len[:, None, None]).expand(-1, lq, -1)  # [n, Lq, S]
    if block_size:
        qpos = q_pos0[:, None] + torch.arange(lq, device=kv_len.device)[None]  # [n, Lq]
        vis = vis & (slots[None, None, :] // block_size
                     <= torch.div(qpos, block_size, rounding_mode="floor")[..., None])
    return vis[:, None]


def all_visible(kv_len, q_pos0, s: int, block_size: int) -> bool:
    """Every query sees every slot [0, s): all rows attend s slots and, block-causal, the first
    query's block holds the last slot (so every later query's does too)."""
    if not bool((kv_len == s).all()):
        return False
    return not block_size or bool(((s - 1) // block_size <= torch.div(q_pos0, block_size, rounding_mode="floor")).all())


def window_attention_reference(q, k_cache, v_cache, rows, kv_len, q_pos0, block_size: int = 0,
                               scale: float | None = None, max_len: int | None = None):
    n, h, lq, d = q.shape
    s = max_len if max_len is not None else (int(kv_len.max()) if n else 0)
    s = max(s, 1)
    if n == k_cache.shape[0] and bool((rows == torch.arange(n, device=rows.device)).all()):
        k, v = k_cache[:, :, :s], v_cache[:, :, :s]  # every row, in order: a view, no copy
    else:
        k, v = k_cache[rows, :, :s], v_cache[rows, :, :s]  # [n, Hkv, S, D]
    dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    if all_visible(kv_len, q_pos0, s, block_size):  # an AR step, equal rows: no mask, SDPA's fast path
        return F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), scale=scale,
                                              enable_gqa=k.shape[1] != h).to(q.dtype)
    vis = visible(kv_len, q_pos0, lq, s, block_size)
    empty = ~vis.any(-1, keepdim=True)  # [n, 1, Lq, 1]: no visible key
    out = F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), attn_mask=vis | empty, scale=scale,
                                         enable_gqa=k.shape[1] != h)
    return out.masked_fill(empty, 0.0).to(q.dtype)
