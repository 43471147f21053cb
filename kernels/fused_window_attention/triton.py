"""Triton window attention with the cache write fused in: one launch per layer instead of two.

The grid is the window attention's (query tile, row × head, key split). Two things change:

- the write: the programs of the first query head of each kv-head group, first key split, copy
  the fed K/V rows into the cache; query tile ``t`` of ``T`` copies tokens ``t·BM, (t + T)·BM, ...``
  so every token is written once, by one program;
- the read: the slots this launch writes (``[dst, dst + count)``) are read from the fed K/V, not
  from the cache, and every other slot from the cache. No program reads a cache slot that another
  program of the same launch writes, so there is no race and no grid-wide barrier, and the keys a
  program sees are exactly those of "write, then attend" (cast to the cache dtype, as the write
  casts them). The result equals the two-launch path bit for bit.
"""


import triton
import triton.language as tl

from dllm.kernels.window_attention.triton import launch_fitting, launch_plan, merge_splits


@triton.jit
def _fused_window_attn_kernel(Q, K, V, KC, VC, O, LSE, ROWS, KVLEN, QPOS0, DST, SRC, CNT,
                              s_qn, s_qh, s_qm, s_qd,
                              s_kn, s_kh, s_kl, s_kd,  # fed K
                              s_vn, s_vh, s_vl, s_vd,  # fed V
                              s_cn, s_ch, s_cs, s_cd,  # K and V caches share a layout
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
    dst = tl.load(DST + i)
    src = tl.load(SRC + i)
    cnt = tl.load(CNT + i)
    d_idx = tl.arange(0, BLOCK_D)
    d_ok = d_idx < D
    k_base = K + i * s_kn + kvh * s_kh  # fed K/V of (row i, kv head)
    v_base = V + i * s_vn + kvh * s_vh
    kc_base = KC + row * s_cn + kvh * s_ch  # cache of (store row, kv head)
    vc_base = VC + row * s_cn + kvh * s_ch

    if h % GROUP == 0:  # one writer per (row, kv head): the group's first query head, first split
        if split == 0:
            stride = tl.num_programs(0) * BLOCK_M
            for t0 in range(pid_m * BLOCK_M, cnt, stride):
                t = t0 + tl.arange(0, BLOCK_M)  # [BM] token index within the copy
                m = (t < cnt)[:, None] & d_ok[None, :]
                c_off = (dst + t)[:, None] * s_cs + d_idx[None, :] * s_cd
                kw = tl.load(k_base + (src + t)[:, None] * s_kl + d_idx[None, :] * s_kd, mask=m)
                tl.store(kc_base + c_off, kw.to(KC.dtype.element_ty), mask=m)
                vw = tl.load(v_base + (src + t)[:, None] * s_vl + d_idx[None, :] * s_vd, mask=m)
                tl.store(vc_base + c_off, vw.to(VC.dtype.element_ty), mask=m)

    m_idx = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM] query index in the window
    q_mask = (m_idx < LQ)[:, None] & d_ok[None, :]
    q = tl.load(Q + i * s_qn + h * s_qh + m_idx[:, None] * s_qm + d_idx[None, :] * s_qd, mask=q_mask, other=0.0)
    q_blk = m_idx * 0  # [BM] block of each query's position (block-causal only)
    if BLOCK_SIZE > 0:  # Triton's // truncates toward zero: negative positions (padding queries) -> -1
        q_blk = tl.where((q_pos0 + m_idx) < 0, -1, (q_pos0 + m_idx) // BLOCK_SIZE)

    lo = split * split_len
    hi = tl.minimum(lo + split_len, kv_len)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(lo, hi, BLOCK_N):
        n_idx = start + tl.arange(0, BLOCK_N)  # [BN] slot = key position
        live = n_idx < hi
        fresh = (n_idx >= dst) & (n_idx < dst + cnt)  # [BN] written by this launch: read from the fed K/V
        c_mask = (live & ~fresh)[:, None] & d_ok[None, :]
        f_mask = (live & fresh)[:, None] & d_ok[None, :]
        c_off = n_idx[:, None] * s_cs + d_idx[None, :] * s_cd
        f_at = (src + n_idx - dst)[:, None]  # [BN, 1] fed index of a fresh slot
        k = tl.load(kc_base + c_off, mask=c_mask, other=0.0)
        k_new = tl.load(k_base + f_at * s_kl + d_idx[None, :] * s_kd, mask=f_mask, other=0.0)
        k = tl.where(f_mask, k_new.to(KC.dtype.element_ty), k)
        s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale  # [BM, BN]
        vis = live[None, :] & (m_idx < LQ)[:, None]
        if BLOCK_SIZE > 0:
            vis = vis & ((n_idx // BLOCK_SIZE)[None, :] <= q_blk[:, None])
        s = tl.where(vis, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(vc_base + c_off, mask=c_mask, other=0.0)
        v_new = tl.load(v_base + f_at * s_vl + d_idx[None, :] * s_vd, mask=f_mask, other=0.0)
        v = tl.where(f_mask, v_new.to(VC.dtype.element_ty), v)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v).to(tl.float32)
        m_i = m_new

    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    o_ptr = O + split * s_os + i * s_on + h * s_oh + m_idx[:, None] * s_om + d_idx[None, :] * s_od
    tl.store(o_ptr, out.to(O.dtype.element_ty), mask=q_mask)
    lse = tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("-inf"))
    tl.store(LSE + split * s_ls + i * s_ln + h * s_lh + m_idx * s_lm, lse, mask=m_idx < LQ)


def fused_window_attention_triton(q, k, v, k_cache, v_cache, rows, dst, src, count, kv_len, q_pos0,
                                  block_size: int = 0, scale: float | None = None, num_splits: int | None = None,
                                  block_m: int = 16, block_n: int = 128, poison: bool = False,
                                  max_len: int | None = None, num_warps: int = 8, num_stages: int | None = None):
    """See :func:`dllm.kernels.fused_window_attention`. Tiles, warps, stages and ``poison`` as in
    :func:`dllm.kernels.window_attention.triton.window_attention_triton` (the tuned defaults there)."""
    assert k_cache.stride() == v_cache.stride(), "the K and V caches must share a layout"
    n, h, lq, d, hkv, scale, block_m, split_len, splits, num_stages, o, lse = launch_plan(
        q, k_cache, kv_len, scale, num_splits, block_m, block_n, poison, max_len, num_stages)
    if n == 0 or lq == 0:
        return o[0] if splits == 1 else merge_splits(o, lse).to(q.dtype)
    grid = (triton.cdiv(lq, block_m), n * h, splits)
    block_d = max(16, triton.next_power_of_2(d))
    launch_fitting(_fused_window_attn_kernel, grid, q, block_d, block_n, num_stages,
                   q, k, v, k_cache, v_cache, o, lse, rows, kv_len, q_pos0, dst, src, count,
                   *q.stride(), *k.stride(), *v.stride(), *k_cache.stride(), *o.stride(), *lse.stride(),
                   lq, h, h // hkv, d, scale, split_len,
                   BLOCK_SIZE=block_size, BLOCK_M=block_m, BLOCK_D=block_d, num_warps=num_warps)
    if splits == 1:
        return o[0]
    return merge_splits(o, lse).to(q.dtype)
