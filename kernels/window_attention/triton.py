"""Triton window attention: flash-attention forward with the keys read from the preallocated cache
through a row indirection, per-row key counts, optional block-causal visibility and grouped-query
heads, online softmax in float32.

Grid (query tile, row × head, key split). With ``num_splits`` > 1 each split handles a contiguous
share of the keys and writes its normalised partial output and log-sum-exp; the splits are merged
in torch (flash-decoding). Splitting keeps a small decode batch (one row, 32 heads) from leaving
most of the GPU idle over long contexts.
"""

import functools
import math

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources


@triton.jit
def _window_attn_kernel(Q, K, V, O, LSE, ROWS, KVLEN, QPOS0,
                        s_qn, s_qh, s_qm, s_qd,
                        s_kn, s_kh, s_ks, s_kd,
                        s_vn, s_vh, s_vs, s_vd,
                        s_os, s_on, s_oh, s_om, s_od,
                        s_ls, s_ln, s_lh, s_lm,
                        LQ, H, GROUP, D, scale, split_len,
                        BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_nh = tl.program_id(1)
    split = tl.program_id(2)
    i = pid_nh // H
    h = pid_nh % H
    kvh = h // GROUP
    row = tl.load(ROWS + i)
    kv_len = tl.load(KVLEN + i)
    q_pos0 = tl.load(QPOS0 + i)

    m_idx = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM] query index in the window
    d_idx = tl.arange(0, BLOCK_D)
    q_mask = (m_idx < LQ)[:, None] & (d_idx < D)[None, :]
    q = tl.load(Q + i * s_qn + h * s_qh + m_idx[:, None] * s_qm + d_idx[None, :] * s_qd, mask=q_mask, other=0.0)
    q_blk = m_idx * 0  # [BM] block of each query's position (block-causal only)
    if BLOCK_SIZE > 0:  # Triton's // truncates toward zero: negative positions (padding queries) -> -1
        q_blk = tl.where((q_pos0 + m_idx) < 0, -1, (q_pos0 + m_idx) // BLOCK_SIZE)

    lo = split * split_len
    hi = tl.minimum(lo + split_len, kv_len)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    k_base = K + row * s_kn + kvh * s_kh
    v_base = V + row * s_vn + kvh * s_vh
    for start in range(lo, hi, BLOCK_N):
        n_idx = start + tl.arange(0, BLOCK_N)  # [BN] slot = key position
        kv_mask = (n_idx < hi)[:, None] & (d_idx < D)[None, :]
        k = tl.load(k_base + n_idx[:, None] * s_ks + d_idx[None, :] * s_kd, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale  # [BM, BN]
        vis = (n_idx < hi)[None, :] & (m_idx < LQ)[:, None]
        if BLOCK_SIZE > 0:
            vis = vis & ((n_idx // BLOCK_SIZE)[None, :] <= q_blk[:, None])
        s = tl.where(vis, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + n_idx[:, None] * s_vs + d_idx[None, :] * s_vd, mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v).to(tl.float32)
        m_i = m_new

    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    o_ptr = O + split * s_os + i * s_on + h * s_oh + m_idx[:, None] * s_om + d_idx[None, :] * s_od
    tl.store(o_ptr, out.to(O.dtype.element_ty), mask=q_mask)
    lse = tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("-inf"))
    tl.store(LSE + split * s_ls + i * s_ln + h * s_lh + m_idx * s_lm, lse, mask=m_idx < LQ)


@functools.lru_cache(maxsize=None)
def sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def auto_splits(n: int, h: int, lq: int, max_len: int, block_m: int, device) -> int:
    """Split the keys only when the (row, head, query tile) programs would leave nearly all of the
    GPU idle over a long context. Measured on an H100 (bench/gpu/README.md): one row × 32 heads over
    4K keys ran 2x slower split 4 ways than unsplit (the fp32 partials and the merge cost more than
    the idle SMs), so splitting is the exception."""
    if device.type != "cuda":
        return 1
    sms = sm_count(device.index if device.index is not None else torch.cuda.current_device())
    programs = n * h * triton.cdiv(lq, block_m)
    if 8 * programs > sms or max_len < 8192:
        return 1
    return max(1, min(sms // programs, max_len // 4096, 8))


def launch_plan(q, k_cache, kv_len, scale, num_splits, block_m, block_n, poison, max_len, num_stages):
    """What both window-attention launchers (this one and the fused one) decide before launching:
    shapes, scale, query tile, key splits, pipeline stages and the (maybe NaN-poisoned) outputs
    o [S, n, H, Lq, D] and lse [S, n, H, Lq]."""
    if num_stages is None:
        num_stages = 3 if q.is_cuda and torch.cuda.get_device_capability(q.device)[0] >= 9 else 2
    n, h, lq, d = q.shape
    hkv = k_cache.shape[1]
    assert h % hkv == 0, f"query heads ({h}) must be a multiple of kv heads ({hkv})"
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    block_m = max(16, min(block_m, triton.next_power_of_2(lq)))
    if max_len is None:
        max_len = int(kv_len.max()) if n else 0  # a device-to-host sync: callers pass it when they can
    splits = auto_splits(n, h, lq, max_len, block_m, q.device) if num_splits is None else num_splits
    split_len = max(block_n, triton.cdiv(triton.cdiv(max(max_len, 1), splits), block_n) * block_n)
    splits = max(1, triton.cdiv(max(max_len, 1), split_len))
    alloc = (lambda *a, **kw: torch.full(*a, float("nan"), **kw)) if poison else torch.empty
    o = alloc((splits, n, h, lq, d), device=q.device, dtype=q.dtype if splits == 1 else torch.float32)
    lse = alloc((splits, n, h, lq), device=q.device, dtype=torch.float32)
    return n, h, lq, d, hkv, scale, block_m, split_len, splits, num_stages, o, lse


# (kernel, device, dtype, head tile, tuned tiles) -> the (key tile, stages) that fit its shared memory
FITS: dict[tuple, tuple[int, int]] = {}


def launch_fitting(kernel, grid, q, block_d: int, block_n: int, num_stages: int, *args, **meta) -> None:
    """``kernel[grid](*args, BLOCK_N=block_n, num_stages=num_stages, **meta)``, or, where those tiles need
    more shared memory than this GPU has, the first that fit of fewer pipeline stages, then narrower key
    tiles (the tuned defaults are bf16's at head dim 128: float32 at head dim 64 asks an H200 for 300 KB
    of its 227 KB). Each smaller key tile divides the split length, so every key is still seen once. A
    launch that does not fit fails before it runs (nothing written); the fitting tiles are remembered."""
    key = (kernel.fn.__name__, q.device.index, q.dtype, block_d, block_n, num_stages)
    tries = [FITS[key]] if key in FITS else [(bn, st) for bn in (block_n, block_n // 2, block_n // 4) if bn >= 16
                                             for st in range(num_stages, 0, -1)]
    for i, (bn, st) in enumerate(tries):
        try:
            kernel[grid](*args, BLOCK_N=bn, num_stages=st, **meta)
        except OutOfResources:
            if i == len(tries) - 1:
                raise
            continue
        FITS[key] = (bn, st)
        return


def window_attention_triton(q, k_cache, v_cache, rows, kv_len, q_pos0, block_size: int = 0,
                            scale: float | None = None, num_splits: int | None = None,
                            block_m: int = 16, block_n: int = 128, poison: bool = False,
                            max_len: int | None = None, num_warps: int = 8, num_stages: int | None = None):
    """See :func:`dllm.kernels.window_attention`. ``poison`` fills every output buffer with NaN
    first (tests: a slot the kernel fails to write shows up). Default tiles: the best of a sweep of
    36 configurations on an H100, bf16, head dim 128 (bench/gpu/README.md): 16 queries × 128 keys,
    8 warps, 3 pipeline stages on Hopper (2 elsewhere, for shared memory)."""
    n, h, lq, d, hkv, scale, block_m, split_len, splits, num_stages, o, lse = launch_plan(
        q, k_cache, kv_len, scale, num_splits, block_m, block_n, poison, max_len, num_stages)
    grid = (triton.cdiv(lq, block_m), n * h, splits)
    block_d = max(16, triton.next_power_of_2(d))
    launch_fitting(_window_attn_kernel, grid, q, block_d, block_n, num_stages,
                   q, k_cache, v_cache, o, lse, rows, kv_len, q_pos0,
                   *q.stride(), *k_cache.stride(), *v_cache.stride(), *o.stride(), *lse.stride(),
                   lq, h, h // hkv, d, scale, split_len,
                   BLOCK_SIZE=block_size, BLOCK_M=block_m, BLOCK_D=block_d, num_warps=num_warps)
    if splits == 1:
        return o[0]
    return merge_splits(o, lse).to(q.dtype)


def merge_splits(o: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """o [S, n, H, Lq, D] normalised partial outputs, lse [S, n, H, Lq] -> [n, H, Lq, D]."""
    total = torch.logsumexp(lse, 0)  # [n, H, Lq]; -inf where no split saw a key
    w = torch.exp(lse - total.clamp_min(torch.finfo(torch.float32).min)).nan_to_num_(0.0)  # empty splits weigh 0
    return (w[..., None] * o).sum(0)
