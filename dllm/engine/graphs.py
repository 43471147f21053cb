"""CUDA graphs for the cached decode step (issue 19); off unless ``DLLM_CUDA_GRAPHS=1``.

A dual-cache step of an 8B model feeds one window (32 tokens) through 32 layers: some 20 small
kernels per layer, each launched from Python, cost more than the window's arithmetic. A CUDA graph
records the whole cached forward once and replays it with one launch (what SGLang, vLLM and dInfer
do for their decode steps).

What is captured: :meth:`DiffusionLM.forward_cached` for one exact shape (rows n, fed columns L,
window width W), the key, taken from the buckets (:class:`Buckets`: batch sizes and a widest
window). A replay copies the step's inputs and per-row plan (:class:`dllm.cache.StepView`'s
tensors) into the graph's static buffers; the store is the same tensor, so the graph writes and
reads the same cache rows an eager forward would. A shape is captured after its first eager run
(which is also the warm-up: Triton compiles, cuBLAS picks its kernels) and replayed from then on.

Exact shapes, not padding to the next bucket: a padded batch would run the GEMMs at another size,
where cuBLAS may pick another algorithm, and the logits would no longer equal eager's bit for bit.

Eager (never captured): CPU tensors; the torch kernel backend (the reference syncs with the host);
draft candidates (each call writes a private copy of the store); shapes outside the buckets (the
refresh forwards feed the whole canvas: one per block); a step whose keys the attention kernel would
split (the captured launch fixes its split for the store's full length; eager splits by this step's
longest row: the outputs would differ); and every new shape once ``max_graphs`` are held (each holds
its logits buffer, [n, W, vocabulary] float32).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import torch

from dllm import kernels
from dllm.cache import StepView
from dllm.errors import check

ENV = "DLLM_CUDA_GRAPHS"


def graphs_enabled(flag: bool | None = None) -> bool:
    """``flag`` if given, else the environment: ``DLLM_CUDA_GRAPHS=1`` turns capture on (default 0)."""
    if flag is not None:
        return bool(flag)
    value = os.environ.get(ENV, "0")
    check(value in ("0", "1"), f"{ENV} must be 0 or 1, got {value!r}")
    return value == "1"


@dataclass(frozen=True)
class Buckets:
    """Which step shapes are captured. ``batch_sizes``: rows per forward (CFG twins count);
    ``max_fed``: fed columns per row, and window width (a decode window plus the shifted models'
    extra column; ``block`` and ``sub_block`` refreshes feed a model block); ``max_graphs``: graphs
    held at once."""

    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    max_fed: int = 80
    max_graphs: int = 16

    def admits(self, n: int, fed: int, width: int) -> bool:
        return n in self.batch_sizes and 0 < fed <= self.max_fed and 0 < width <= self.max_fed


def one_split(n: int, heads: int, fed: int, lengths: tuple[int, ...], device) -> bool:
    """The attention kernel keeps the keys in one split at every length of ``lengths`` (the step's
    longest row, the store's capacity) for ``n`` rows × ``heads`` heads × ``fed`` queries."""
    if device.type != "cuda":
        return True
    from dllm.kernels.window_attention.triton import auto_splits

    return all(auto_splits(n, heads, fed, s, 16, device) == 1 for s in lengths)


class Captured:
    """One shape's graph: static inputs, the view the graph reads them through, its logits."""

    def __init__(self, model, x, idx, view: StepView, f0, cols, pool):
        self.inputs = [t.clone() for t in (x, idx, f0, cols, *plan(view))]
        x, idx, f0, cols, rows, dst, src, count, kv_len, q_pos0 = self.inputs
        self.view = StepView(view.store, rows, dst, src, count, kv_len, q_pos0, view.block_size)
        self.view.max_len = view.store.k.shape[3]  # every slot: kv_len changes between replays, the launch doesn't
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph, pool=pool):
            self.out = model.forward_cached(x, idx, self.view, f0, cols)  # [n, W, V] float32

    def replay(self, x, idx, view: StepView, f0, cols) -> torch.Tensor:
        for static, new in zip(self.inputs, (x, idx, f0, cols, *plan(view))):
            static.copy_(new)
        self.graph.replay()
        return self.out.clone()  # the next replay overwrites self.out; callers edit logits in place


def plan(view: StepView) -> tuple[torch.Tensor, ...]:
    """The per-row tensors of a step's view, [n] int64 each."""
    return view.rows, view.dst, view.src, view.count, view.kv_len, view.q_pos0


class StepGraphs:
    """Runs the cached forward of a :class:`dllm.engine.forward.Forwarder` through CUDA graphs where
    it can, eagerly elsewhere; ``counts`` tallies replays, captures and each eager reason."""

    def __init__(self, model, buckets: Buckets | None = None):
        self.model, self.buckets = model, buckets or Buckets()
        self.graphs: dict[tuple[int, int, int], Captured] = {}
        self.store_k: torch.Tensor | None = None  # the store the graphs write (grown stores are new tensors)
        self.pool = None
        self.counts: Counter = Counter()

    def eager_reason(self, x: torch.Tensor, view: StepView, cols: torch.Tensor, candidates: bool) -> str | None:
        """Why this forward (ids x [n, L], windows cols [n, W]) runs eagerly; None: replay or capture."""
        n, fed = x.shape
        if not x.is_cuda:
            return "cpu"
        if kernels.pick(x) != "triton":
            return "torch kernels"
        if candidates:
            return "candidates"
        if not self.buckets.admits(n, fed, cols.shape[1]):
            return "shape outside the buckets"
        lengths = (view.max_len, view.store.k.shape[3])
        if not one_split(n, self.model.core.cfg.num_heads, fed, lengths, x.device):
            return "keys split"
        held = self.graphs if self.store_k is view.store.k else {}
        if (n, fed, cols.shape[1]) not in held and len(held) >= self.buckets.max_graphs:
            return "graph limit"
        return None

    def __call__(self, x, idx, view: StepView, f0, cols, candidates: bool = False) -> torch.Tensor:
        """Same arguments and result as ``model.forward_cached(x, idx, view, f0, cols)``."""
        reason = self.eager_reason(x, view, cols, candidates)
        if reason is not None:
            self.counts[f"eager: {reason}"] += 1
            return self.model.forward_cached(x, idx, view, f0, cols)
        if self.store_k is not view.store.k:  # a grown store: the graphs point at the old tensors
            self.graphs.clear()
            self.store_k = view.store.k
        key = (x.shape[0], x.shape[1], cols.shape[1])
        graph = self.graphs.get(key)
        if graph is not None:
            self.counts["replay"] += 1
            return graph.replay(x, idx, view, f0, cols)
        out = self.model.forward_cached(x, idx, view, f0, cols)  # this step's result, and the warm-up
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        self.graphs[key] = Captured(self.model, x, idx, view, f0, cols, self.pool)
        self.counts["capture"] += 1
        return out


__all__ = ["ENV", "Buckets", "StepGraphs", "graphs_enabled"]
