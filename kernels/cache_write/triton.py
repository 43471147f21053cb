"""Triton cache write: program (row i, kv head h, token tile t) copies a [BLOCK_T, D] tile of K
and V from the step's tensors into the cache row ``rows[i]`` at slot ``dst_start[i] + t·BLOCK_T``."""

import triton
import triton.language as tl


@triton.jit
def _cache_write_kernel(KC, VC, K, V, ROWS, DST, SRC, CNT,
                        s_cn, s_ch, s_cs, s_cd,  # cache strides (K and V caches share a layout)
                        s_n, s_h, s_l, s_d,  # step K/V strides
                        D, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    i = tl.program_id(0)
    h = tl.program_id(1)
    t = tl.program_id(2) * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T] token index within the copy
    d = tl.arange(0, BLOCK_D)
    cnt = tl.load(CNT + i)
    r = tl.load(ROWS + i)
    dst = tl.load(DST + i) + t
    src = tl.load(SRC + i) + t
    m = (t < cnt)[:, None] & (d < D)[None, :]
    src_off = i * s_n + h * s_h + src[:, None] * s_l + d[None, :] * s_d
    dst_off = r * s_cn + h * s_ch + dst[:, None] * s_cs + d[None, :] * s_cd
    kv = tl.load(K + src_off, mask=m)
    tl.store(KC + dst_off, kv.to(KC.dtype.element_ty), mask=m)
    vv = tl.load(V + src_off, mask=m)
    tl.store(VC + dst_off, vv.to(VC.dtype.element_ty), mask=m)


def cache_write_triton(k_cache, v_cache, k, v, rows, dst_start, src_start, count, block_t: int = 32) -> None:
    n, hkv, length, d = k.shape
    if n == 0 or length == 0:
        return
    assert k_cache.stride() == v_cache.stride() and k.stride() == v.stride(), "K and V must share a layout"
    grid = (n, hkv, triton.cdiv(length, block_t))
    _cache_write_kernel[grid](k_cache, v_cache, k, v, rows, dst_start, src_start, count,
                              *k_cache.stride(), *k.stride(), d,
                              BLOCK_T=block_t, BLOCK_D=triton.next_power_of_2(d))
