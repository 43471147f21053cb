"""Triton kernels against their torch references, on CPU under TRITON_INTERPRET=1 (and compiled on
a GPU when one is present: those tests are marked ``gpu`` and skipped without CUDA)."""

import os

import torch

if not torch.cuda.is_available():  # CPU: interpret the kernels (set before they are first imported)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import dllm  # noqa: E402
from dllm import kernels  # noqa: E402
from dllm.kernels.cache_write import cache_write_reference  # noqa: E402
from dllm.kernels.fused_window_attention import fused_window_attention_reference  # noqa: E402
from dllm.kernels.window_attention import window_attention_reference  # noqa: E402

triton = pytest.importorskip("triton")
from dllm.kernels.cache_write.triton import cache_write_triton  # noqa: E402
from dllm.kernels.fused_window_attention.triton import fused_window_attention_triton  # noqa: E402
from dllm.kernels.window_attention.triton import window_attention_triton  # noqa: E402


def gpu(fn):
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")(fn))
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
cpu_interpreted = pytest.mark.skipif(not INTERPRETED, reason="the CPU parity tests need TRITON_INTERPRET=1")

# (rows fed n, cache rows N, query heads, kv heads, window Lq, head dim, slots S, block size, splits)
SHAPES = [
    (1, 1, 4, 4, 7, 16, 45, 0, 1),  # GQA 1, window and keys not multiples of the tiles
    (3, 5, 4, 1, 33, 32, 70, 0, 1),  # GQA 4, a window over two query tiles
    (2, 3, 8, 2, 5, 16, 130, 8, 3),  # block-causal, keys split three ways
    (4, 4, 4, 1, 17, 16, 100, 16, 2),  # block-causal, GQA 4, every cache row in order
]


def case(seed, n, N, h, hkv, lq, d, s, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, h, lq, d, generator=g)
    kc, vc = torch.randn(N, hkv, s, d, generator=g), torch.randn(N, hkv, s, d, generator=g)
    rows = torch.randperm(N, generator=g)[:n]
    kv_len = torch.randint(1, s + 1, (n,), generator=g)
    q_pos0 = torch.randint(-4, s, (n,), generator=g)  # negative: padding queries left of a row's start
    to = dict(device=device)
    return (q.to(dtype=dtype, **to), kc.to(dtype=dtype, **to), vc.to(dtype=dtype, **to), rows.to(**to),
            kv_len.to(**to), q_pos0.to(**to))


@cpu_interpreted
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_window_attention_matches_reference(shape, seed):
    n, N, h, hkv, lq, d, s, bs, splits = shape
    q, kc, vc, rows, kv_len, q_pos0 = case(seed, n, N, h, hkv, lq, d, s)
    want = window_attention_reference(q, kc, vc, rows, kv_len, q_pos0, bs)
    got = window_attention_triton(q, kc, vc, rows, kv_len, q_pos0, bs, num_splits=splits, poison=True, block_m=16,
                                  block_n=16)
    assert not torch.isnan(got).any(), "the kernel left output slots unwritten"
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@cpu_interpreted
def test_window_attention_query_with_nothing_visible_is_zero():
    q, kc, vc, rows, kv_len, _ = case(3, 2, 2, 4, 2, 5, 16, 40)
    q_pos0 = torch.tensor([-20, 3])  # row 0: every query left of position 0 sees no block-causal key
    got = window_attention_triton(q, kc, vc, rows, kv_len, q_pos0, 8, num_splits=2, poison=True)
    want = window_attention_reference(q, kc, vc, rows, kv_len, q_pos0, 8)
    assert torch.equal(got[0], torch.zeros_like(got[0]))
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@cpu_interpreted
@pytest.mark.parametrize("n,N,hkv,length,d", [(1, 2, 1, 9, 16), (3, 3, 4, 33, 32), (2, 5, 2, 70, 8)])
def test_cache_write_matches_reference(n, N, hkv, length, d):
    g = torch.Generator().manual_seed(n * 7 + length)
    k, v = torch.randn(n, hkv, length, d, generator=g), torch.randn(n, hkv, length, d, generator=g)
    s = length + 20
    rows = torch.randperm(N, generator=g)[:n]
    src = torch.randint(0, 4, (n,), generator=g)
    count = torch.randint(0, length - 3, (n,), generator=g)
    dst = torch.randint(0, s - length, (n,), generator=g)
    want_k, want_v = torch.full((N, hkv, s, d), float("nan")), torch.full((N, hkv, s, d), float("nan"))
    got_k, got_v = want_k.clone(), want_v.clone()
    cache_write_reference(want_k, want_v, k, v, rows, dst, src, count)
    cache_write_triton(got_k, got_v, k, v, rows, dst, src, count, block_t=16)
    torch.testing.assert_close(got_k, want_k, equal_nan=True, atol=0, rtol=0)  # untouched slots stay NaN
    torch.testing.assert_close(got_v, want_v, equal_nan=True, atol=0, rtol=0)
    i = 0
    assert torch.equal(want_k[rows[i], :, dst[i]:dst[i] + count[i]], k[i, :, src[i]:src[i] + count[i]])


@cpu_interpreted
@pytest.mark.parametrize("family,cache", [("llada", "dual"), ("fast_dllm_v2", "block")])
def test_generation_through_the_triton_kernels(family, cache):
    """The dispatcher routes a whole cached generation through the (interpreted) Triton kernels."""
    from dllm.samplers import ThresholdSampler
    from dllm.testing import tiny_model

    model = tiny_model(family, seed=5, num_layers=1)
    kw = dict(gen_length=16, block_length=8, cache=cache, stop_at_eos=False)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16, 17]]
    want = dllm.generate(model, prompts, ThresholdSampler(0.5), **kw)
    with kernels.use("triton"):
        got = dllm.generate(model, prompts, ThresholdSampler(0.5), **kw)
    assert all(torch.equal(a, b) for a, b in zip(want.ids, got.ids))


# (rows fed n, cache rows N, query heads, kv heads, queries Lq, fed K/V L, head dim, slots S, block size, splits)
FUSED_SHAPES = [
    (1, 2, 4, 4, 7, 7, 16, 45, 0, 1),  # batch 1, GQA 1
    (3, 5, 4, 1, 9, 9, 16, 60, 0, 1),  # batch 3, GQA 4, ragged kv lengths and windows
    (2, 3, 8, 2, 20, 20, 16, 130, 8, 3),  # block-causal, GQA 4, two query tiles write, keys split three ways
    (5, 5, 4, 2, 5, 5, 32, 40, 0, 2),  # batch 5, every cache row in order, two splits (one writes)
    (2, 4, 4, 2, 3, 20, 16, 50, 0, 1),  # fewer queries than fed tokens: one query tile writes all 20
]


def fused_case(seed, n, N, h, hkv, lq, length, d, s, dtype=torch.float32, device="cpu"):
    """Per row: ``count`` of the ``length`` fed tokens from ``src`` go to slots from ``dst``; row 0
    writes where a cached forward does (its window inside the attended slots), the rest anywhere."""
    g = torch.Generator().manual_seed(seed)
    q, kc, vc, rows, kv_len, q_pos0 = case(seed, n, N, h, hkv, lq, d, s)
    k, v = torch.randn(n, hkv, length, d, generator=g), torch.randn(n, hkv, length, d, generator=g)
    src = torch.randint(0, 3, (n,), generator=g).clamp_max(length - 1)
    count = torch.stack([torch.randint(0, int(length - a) + 1, (1,), generator=g)[0] for a in src])
    dst = torch.stack([torch.randint(0, int(s - c) + 1, (1,), generator=g)[0] for c in count])
    count[0] = length - src[0]
    dst[0] = s - count[0] - 1
    q_pos0[0], kv_len[0] = dst[0] - src[0], s - 1
    to = dict(device=device)
    return (q.to(dtype=dtype, **to), k.to(dtype=dtype, **to), v.to(dtype=dtype, **to), kc.to(dtype=dtype, **to),
            vc.to(dtype=dtype, **to), rows.to(**to), dst.to(**to), src.to(**to), count.to(**to), kv_len.to(**to),
            q_pos0.to(**to))


@cpu_interpreted
@pytest.mark.parametrize("shape", FUSED_SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_fused_window_attention_matches_write_then_attend(shape, seed):
    """One launch = the reference write then the reference attention (close), = the two Triton
    launches (bit for bit), and leaves the store exactly as the reference write does."""
    n, N, h, hkv, lq, length, d, s, bs, splits = shape
    q, k, v, kc, vc, rows, dst, src, count, kv_len, q_pos0 = fused_case(seed, n, N, h, hkv, lq, length, d, s)
    kc_ref, vc_ref, kc_two, vc_two = kc.clone(), vc.clone(), kc.clone(), vc.clone()
    want = fused_window_attention_reference(q, k, v, kc_ref, vc_ref, rows, dst, src, count, kv_len, q_pos0, bs)
    tiles = dict(block_m=16, block_n=16)
    got = fused_window_attention_triton(q, k, v, kc, vc, rows, dst, src, count, kv_len, q_pos0, bs,
                                        num_splits=splits, poison=True, **tiles)
    assert not torch.isnan(got).any(), "the kernel left output slots unwritten"
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    assert torch.equal(kc, kc_ref) and torch.equal(vc, vc_ref), "the store differs from the reference write"
    cache_write_triton(kc_two, vc_two, k, v, rows, dst, src, count, block_t=16)
    two = window_attention_triton(q, kc_two, vc_two, rows, kv_len, q_pos0, bs, num_splits=splits, **tiles)
    assert torch.equal(got, two)


@cpu_interpreted
def test_fused_window_attention_through_the_step_view():
    """StepView.attend (what every cached layer calls) gives the same output and store with the
    Triton dispatch forced as with the torch reference."""
    from dllm.cache import KVStore, StepView

    q, k, v, kc, vc, rows, dst, src, count, kv_len, q_pos0 = fused_case(4, 3, 4, 4, 2, 6, 6, 16, 30)
    out, stores = [], []
    for name in ("torch", "triton"):
        store = KVStore(1, 4, 2, 30, 16, torch.float32, "cpu")
        store.k[0], store.v[0] = kc, vc
        view = StepView(store, rows, dst, src, count, kv_len, q_pos0, block_size=0)
        with kernels.use(name):
            out.append(view.attend(0, q, k, v))
        stores.append(store)
    torch.testing.assert_close(out[1], out[0], atol=2e-5, rtol=1e-4)
    assert torch.equal(stores[0].k, stores[1].k) and torch.equal(stores[0].v, stores[1].v)


class SmallSharedMemory:
    """A kernel stand-in for a GPU whose shared memory fits key tiles of at most ``max_n`` with at most
    ``max_stages`` pipeline stages: bigger launches fail as Triton's do, before running (nothing written)."""

    def __init__(self, kernel, max_n: int, max_stages: int):
        self.kernel, self.fn, self.max_n, self.max_stages, self.tried = kernel, kernel.fn, max_n, max_stages, []

    def __getitem__(self, grid):
        def launch(*args, BLOCK_N, num_stages, **meta):
            self.tried.append((BLOCK_N, num_stages))
            if BLOCK_N > self.max_n or num_stages > self.max_stages:
                raise triton.runtime.errors.OutOfResources(307200, 232448, "shared memory")
            return self.kernel[grid](*args, BLOCK_N=BLOCK_N, num_stages=num_stages, **meta)
        return launch


@cpu_interpreted
def test_tiles_too_big_for_the_gpu_fall_back_to_ones_that_fit(monkeypatch):
    """Tuned tiles that ask for more shared memory than the GPU has (float32 at head dim 64 on an H200)
    are retried smaller: the output and the store are the reference's, and the fitting tiles are kept."""
    import importlib

    fused = importlib.import_module("dllm.kernels.fused_window_attention.triton")  # the packages' names are
    plain = importlib.import_module("dllm.kernels.window_attention.triton")  # also their functions'

    monkeypatch.setattr(plain, "FITS", {})
    picky = SmallSharedMemory(fused._fused_window_attn_kernel, max_n=32, max_stages=1)
    monkeypatch.setattr(fused, "_fused_window_attn_kernel", picky)
    q, k, v, kc, vc, rows, dst, src, count, kv_len, q_pos0 = fused_case(0, 3, 5, 4, 1, 9, 9, 16, 100)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    want = fused_window_attention_reference(q, k, v, kc_ref, vc_ref, rows, dst, src, count, kv_len, q_pos0, 0)
    for launch in range(2):
        kc1, vc1 = kc.clone(), vc.clone()
        got = fused_window_attention_triton(q, k, v, kc1, vc1, rows, dst, src, count, kv_len, q_pos0, 0,
                                            num_splits=2, poison=True, block_n=64, num_stages=2)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
        assert torch.equal(kc1, kc_ref) and torch.equal(vc1, vc_ref)
    assert picky.tried == [(64, 2), (64, 1), (32, 2), (32, 1), (32, 1)]  # the second call goes straight there
    picky = SmallSharedMemory(fused._fused_window_attn_kernel, max_n=8, max_stages=1)  # nothing fits
    monkeypatch.setattr(fused, "_fused_window_attn_kernel", picky)
    with pytest.raises(triton.runtime.errors.OutOfResources):
        fused_window_attention_triton(q, k, v, kc.clone(), vc.clone(), rows, dst, src, count, kv_len, q_pos0, 0,
                                      block_n=64, num_stages=3)


def test_backend_choice():
    assert kernels.pick(torch.zeros(1)) == "torch"  # CPU tensors take the reference by default
    with kernels.use("torch"):
        assert kernels.pick(torch.zeros(1)) == "torch"
    with pytest.raises(ValueError, match="kernel backend must be one of"):
        with kernels.use("cuda"):
            pass


@gpu
@pytest.mark.skipif(INTERPRETED, reason="compiled kernels: run with TRITON_INTERPRET unset")
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-3), (torch.bfloat16, 2e-2)])
def test_window_attention_compiled_on_gpu(shape, dtype, tol):
    n, N, h, hkv, lq, d, s, bs, splits = shape
    q, kc, vc, rows, kv_len, q_pos0 = case(0, n, N, h, hkv, lq, d, s, dtype, "cuda")
    want = window_attention_reference(q.float(), kc.float(), vc.float(), rows, kv_len, q_pos0, bs)
    got = window_attention_triton(q, kc, vc, rows, kv_len, q_pos0, bs, num_splits=splits, poison=True)
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol)


@gpu
@pytest.mark.skipif(INTERPRETED, reason="compiled kernels: run with TRITON_INTERPRET unset")
@pytest.mark.parametrize("shape", FUSED_SHAPES + [(4, 4, 9, 3, 32, 32, 64, 300, 32, 1),  # SmolLM2's heads
                                                  (2, 2, 8, 8, 32, 32, 128, 300, 32, 2)])  # LLaDA's head dim
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-3), (torch.bfloat16, 2e-2)])
def test_fused_window_attention_compiled_on_gpu(shape, dtype, tol):
    n, N, h, hkv, lq, length, d, s, bs, splits = shape
    q, k, v, kc, vc, rows, dst, src, count, kv_len, q_pos0 = fused_case(0, n, N, h, hkv, lq, length, d, s, dtype,
                                                                         "cuda")
    kc_ref, vc_ref, kc_two, vc_two = kc.float(), vc.float(), kc.clone(), vc.clone()
    want = fused_window_attention_reference(q.float(), k.float(), v.float(), kc_ref, vc_ref, rows, dst, src, count,
                                            kv_len, q_pos0, bs)
    got = fused_window_attention_triton(q, k, v, kc, vc, rows, dst, src, count, kv_len, q_pos0, bs,
                                        num_splits=splits, poison=True)
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol)
    assert torch.equal(kc.float(), kc_ref) and torch.equal(vc.float(), vc_ref)
    cache_write_triton(kc_two, vc_two, k, v, rows, dst, src, count)
    two = window_attention_triton(q, kc_two, vc_two, rows, kv_len, q_pos0, bs, num_splits=splits)
    assert torch.equal(got, two)
