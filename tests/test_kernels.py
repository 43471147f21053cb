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
from dllm.kernels.window_attention import window_attention_reference  # noqa: E402

triton = pytest.importorskip("triton")
from dllm.kernels.cache_write.triton import cache_write_triton  # noqa: E402
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
