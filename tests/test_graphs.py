"""CUDA graphs for the cached decode step (dllm/engine/graphs.py): the flag, the buckets and the
eager fallback on the CPU; replays equal to eager forwards, bit for bit, on a GPU."""

from types import SimpleNamespace

import pytest
import torch

import dllm
from dllm import kernels
from dllm.engine import graphs
from dllm.engine.graphs import ENV, Buckets, StepGraphs, graphs_enabled
from dllm.errors import DllmError
from dllm.samplers import LLaDASampler, ThresholdSampler
from dllm.testing import tiny_model

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_flag_is_off_by_default_and_read_from_the_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert not graphs_enabled()
    monkeypatch.setenv(ENV, "1")
    assert graphs_enabled() and not graphs_enabled(False)
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(DllmError, match="DLLM_CUDA_GRAPHS must be 0 or 1"):
        graphs_enabled()
    monkeypatch.setenv(ENV, "0")
    assert graphs_enabled(True)


def test_buckets_admit_listed_batches_up_to_the_widest_window():
    b = Buckets(batch_sizes=(1, 2, 8), max_fed=33)
    assert b.admits(1, 33, 32) and b.admits(8, 9, 8)
    assert not b.admits(3, 9, 8)  # batch not a bucket: eager (padding would change the GEMM shapes)
    assert not b.admits(2, 34, 32)  # a refresh feeding the whole canvas
    assert not b.admits(2, 0, 0)


def fake_step(n=2, fed=9, width=8, cuda=True, max_len=40, capacity=64):
    """Stand-ins with the attributes the fallback decision reads (no GPU needed)."""
    x = SimpleNamespace(is_cuda=cuda, shape=(n, fed), device=torch.device("cpu"))
    store = SimpleNamespace(k=torch.zeros(1, 1, 1, capacity, 1))
    view = SimpleNamespace(max_len=max_len, store=store)
    return x, view, torch.zeros(n, width)


def test_eager_fallback_reasons(monkeypatch):
    model = SimpleNamespace(core=SimpleNamespace(cfg=SimpleNamespace(num_heads=4)))
    g = StepGraphs(model, Buckets(batch_sizes=(1, 2), max_fed=16, max_graphs=1))
    x, view, cols = fake_step(cuda=False)
    assert g.eager_reason(x, view, cols, False) == "cpu"
    monkeypatch.setattr(kernels, "pick", lambda t: "torch")
    x, view, cols = fake_step()
    assert g.eager_reason(x, view, cols, False) == "torch kernels"
    monkeypatch.setattr(kernels, "pick", lambda t: "triton")
    assert g.eager_reason(x, view, cols, True) == "candidates"
    assert g.eager_reason(*fake_step(n=3), False) == "shape outside the buckets"
    assert g.eager_reason(x, view, cols, False) is None
    g.store_k, g.graphs[(1, 9, 8)] = view.store.k, object()  # one graph held, the limit
    assert g.eager_reason(x, view, cols, False) == "graph limit"
    g.graphs = {(2, 9, 8): object()}
    assert g.eager_reason(x, view, cols, False) is None  # a held shape still replays
    _, other, _ = fake_step()  # a grown store: the held graphs are dropped, so the limit is free again
    g.graphs = {(1, 9, 8): object()}
    assert g.eager_reason(x, other, cols, False) is None
    monkeypatch.setattr(graphs, "one_split", lambda *a: False)
    assert g.eager_reason(x, view, cols, False) == "keys split"


def test_flag_on_the_cpu_changes_nothing(monkeypatch):
    """On the CPU every step falls back to eager: the same tokens with the flag on and off."""
    model = tiny_model("llada", seed=2, num_layers=1)
    kw = dict(gen_length=16, block_length=8, cache="dual", stop_at_eos=False)
    prompts = [[5, 6, 7], [8, 9, 10, 11]]
    want = dllm.generate(model, prompts, ThresholdSampler(0.5), **kw)
    monkeypatch.setenv(ENV, "1")
    got = dllm.generate(model, prompts, ThresholdSampler(0.5), **kw)
    assert all(torch.equal(a, b) for a, b in zip(want.ids, got.ids))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_replays_equal_eager_forwards_on_gpu(dtype):
    """Three steps of one shape (eager + capture, then two replays) with new windows and plans: each
    result equals an eager forward of the same step, bit for bit, and so does the store."""
    from dllm.cache import KVStore, StepView

    model = tiny_model("llada", seed=1, num_layers=2, num_heads=4, num_kv_heads=2).to("cuda", dtype)
    cfg = model.core.cfg
    n, fed, s = 2, 9, 48
    stores = [KVStore(cfg.num_layers, 3, cfg.num_kv_heads, s, cfg.head_dim, dtype, "cuda") for _ in range(2)]
    for st in stores:
        st.k.normal_(generator=torch.Generator("cuda").manual_seed(0))
        st.v.normal_(generator=torch.Generator("cuda").manual_seed(1))
    runner = StepGraphs(model)
    g = torch.Generator("cuda").manual_seed(2)
    for step in range(3):
        f0 = torch.tensor([10 + step, 20 - step], device="cuda")
        idx = f0[:, None] + torch.arange(fed, device="cuda")[None]
        x = torch.randint(0, cfg.vocab_size, (n, fed), device="cuda", generator=g)
        cols = idx[:, :8]
        on = dict(device="cuda")
        plan = dict(rows=torch.tensor([2, 0], **on), dst=f0, src=torch.zeros_like(f0),
                    count=torch.tensor([fed, fed - 3], **on), kv_len=torch.tensor([40, 44 - step], **on), q_pos0=f0,
                    block_size=0)
        with torch.no_grad():
            want = model.forward_cached(x, idx, StepView(stores[0], **plan), f0, cols)
            got = runner(x, idx, StepView(stores[1], **plan), f0, cols)
        assert torch.equal(got, want), f"step {step}"
        assert torch.equal(stores[0].k, stores[1].k) and torch.equal(stores[0].v, stores[1].v)
    assert runner.counts == {"capture": 1, "replay": 2}


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("family,cache,block", [("llada", "dual", 8), ("dream", "prefix", 8),
                                                ("fast_dllm_v2", "block", 8), ("fast_dllm_v2", "sub_block", 4)])
def test_generation_with_graphs_equals_eager_on_gpu(monkeypatch, family, cache, block):
    """Whole generations, a batch of rows of different lengths: the same tokens with graphs on and
    off, and the decode steps did replay."""
    model = tiny_model(family, seed=4, num_layers=2, **({"block_size": 8} if family == "fast_dllm_v2" else {}))
    model = model.to("cuda")
    runners = []

    class Recorded(StepGraphs):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            runners.append(self)

    monkeypatch.setattr("dllm.engine.forward.StepGraphs", Recorded)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16, 17], [9, 9], [4, 5, 6, 7, 8]]  # batch 4: a bucket
    kw = dict(gen_length=32, block_length=block, cache=cache, stop_at_eos=False)
    for sampler in (LLaDASampler(), ThresholdSampler(0.7)):
        monkeypatch.setenv(ENV, "0")
        want = dllm.generate(model, prompts, sampler, **kw)
        monkeypatch.setenv(ENV, "1")
        got = dllm.generate(model, prompts, sampler, **kw)
        assert all(torch.equal(a, b) for a, b in zip(want.ids, got.ids))
    assert sum(r.counts["replay"] for r in runners) > 0
