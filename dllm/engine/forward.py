"""One model forward over a ragged set of rows (design.md §3).

Rows differ in length, window, cache and place in their decode; a forward lines their fed
columns up from each row's own start ``f0`` (right-padded to the longest), and reads the logits
of each row's own window. Two kinds of forward exist: a plain one (``cache=none``: every valid
column of the row) and a cached one (the row's cache policy plans which columns are fed, written
and attended; :class:`dllm.cache.StepView` carries the per-row plan to every attention layer).
CFG rows add an unconditional twin (prompt replaced by MASK) to the same forward.
"""

from __future__ import annotations

import torch

from dllm.cache import KVStore, StepView
from dllm.engine.graphs import StepGraphs, graphs_enabled


def combine_cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Unsupervised CFG (LLaDA): uncond + (s + 1)(cond - uncond); scale [n] broadcast per row."""
    s = scale.to(cond.dtype)[:, None, None]
    return uncond + (s + 1) * (cond - uncond)


class Forwarder:
    def __init__(self, model, board, graphs: bool | None = None):
        """``graphs``: run cached decode steps through CUDA graphs (:mod:`dllm.engine.graphs`); None
        reads ``DLLM_CUDA_GRAPHS`` (default off)."""
        self.model, self.board = model, board
        self.graphs = StepGraphs(model) if graphs_enabled(graphs) else None
        self.store: KVStore | None = None
        self.free: list[int] = []
        mask_id, pad_id = model.mask_token_id, model.pad_token_id
        self.banned = [mask_id] + ([pad_id] if pad_id not in model.eos_token_ids else [])
        self.block_size = model.block_size if model.attention_kind == "block_causal" else 0

    # --- KV store rows -------------------------------------------------------------------------
    def reserve(self, rows: int, length: int) -> None:
        """Preallocate ``rows`` store rows of ``length`` slots (what ``generate`` knows up front)."""
        if self.store is None:
            cfg = self.model.core.cfg
            dtype = self.model.core.embed_tokens.weight.dtype
            self.store = KVStore(cfg.num_layers, 0, cfg.num_kv_heads, 0, cfg.head_dim, dtype, self.model.device)
        n = self.store.k.shape[1]
        self.store.grow(rows, length)
        self.free.extend(range(n, self.store.k.shape[1]))

    def attach(self, row) -> None:
        """Give a cached row its store rows (two with CFG)."""
        if not row.settings.cache.cached:
            return
        need = 2 if row.settings.cfg_scale else 1
        have = 0 if self.store is None else self.store.k.shape[1]
        if len(self.free) < need:
            self.reserve(max(have * 2, have + need), row.end)
        self.reserve(0, row.end)
        row.kv = tuple(self.free.pop(0) for _ in range(need))

    def detach(self, row) -> None:
        self.free.extend(row.kv)
        self.free.sort()
        row.kv = ()

    @property
    def nbytes(self) -> int:
        return 0 if self.store is None else self.store.nbytes

    # --- forwards ------------------------------------------------------------------------------
    def __call__(self, rows, windows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Window logits [n, Wmax, V] of ``rows`` (all plain or all cached) and the tokens fed per row
        [n]. ``windows`` [n, W] replaces each row's window first (draft candidates; rows may repeat,
        and each candidate writes a private copy of its row's cache)."""
        dev = self.board.device
        width = max(r.window for r in rows)
        slots, cols = self.board.windows(rows, width)
        last = torch.tensor([r.b - 1 for r in rows], device=dev)[:, None]
        cols = torch.minimum(cols, last)  # a narrower window repeats its last column (never read)
        cfg = [i for i, r in enumerate(rows) if r.settings.cfg_scale]
        if rows[0].settings.cache.cached:
            logits, fed = self.cached(rows, slots, cols, windows, cfg)
        else:
            logits, fed = self.plain(rows, slots, cols, windows, cfg)
        logits[..., self.banned] = float("-inf")  # never propose MASK (or a pad that is not an end token)
        return logits, fed

    def unconditional(self, x: torch.Tensor, idx: torch.Tensor, rows, cfg: list[int]) -> torch.Tensor:
        """Twins of the CFG rows: the prompt (columns before the answer) replaced by MASK."""
        start = torch.tensor([rows[i].gen_start for i in cfg], device=x.device)[:, None]
        return x[cfg].masked_fill(idx[cfg] < start, self.model.mask_token_id)

    def finish(self, out: torch.Tensor, fed: torch.Tensor, rows, cfg: list[int]):
        if not cfg:
            return out, fed
        n = len(rows)
        scale = torch.tensor([rows[i].settings.cfg_scale for i in cfg], device=out.device)
        out, twins = out[:n].clone(), out[n:]
        out[cfg] = combine_cfg(out[cfg], twins, scale)
        fed = fed.clone()
        fed[cfg] *= 2
        return out, fed

    def place(self, x: torch.Tensor, rows, cols: torch.Tensor, f0, windows: torch.Tensor | None) -> torch.Tensor:
        if windows is None:
            return x
        at = cols[:, :windows.shape[1]] - f0
        inside = at < x.shape[1]  # an autoregressive model never feeds its one-token window
        at = at.clamp_max(x.shape[1] - 1)
        return x.scatter(1, at, torch.where(inside, windows, x.gather(1, at)))

    def plain(self, rows, slots, cols, windows, cfg):
        dev = self.board.device
        length = max(r.width for r in rows)
        idx = torch.arange(length, device=dev)[None].expand(len(rows), -1)
        x = self.place(self.board.x[slots, :length], rows, cols, 0, windows)
        end = torch.tensor([r.end for r in rows], device=dev)
        valid = idx < end[:, None]
        if cfg:
            x = torch.cat([x, self.unconditional(x, idx, rows, cfg)])
            idx, valid, cols = (torch.cat([t, t[cfg]]) for t in (idx, valid, cols))
        out = self.model(x, idx, valid, window=cols)
        return self.finish(out, end, rows, cfg)

    def cached(self, rows, slots, cols, windows, cfg):
        dev = self.board.device
        candidates = windows is not None
        plans = [r.settings.cache.plan(r, first=not candidates and r.refreshed != r.a) for r in rows]
        f0, f1, w0, kv_end = (torch.tensor(v, device=dev) for v in zip(*plans))
        length = int((f1 - f0).max())
        idx = f0[:, None] + torch.arange(length, device=dev)[None]  # [n, L] canvas columns fed
        x = self.place(self.board.x[slots[:, None], idx.clamp_max(self.board.x.shape[1] - 1)], rows, cols, f0[:, None],
                       windows)
        end = torch.tensor([r.end for r in rows], device=dev)
        stop = torch.minimum(end, f1)  # last fed valid column (exclusive)
        count = (stop - w0).clamp_min(0)  # columns written: [w0, stop)
        fed = (stop - f0).clamp_min(0)
        kv = torch.tensor([r.kv[0] for r in rows], device=dev)
        if cfg:
            x = torch.cat([x, self.unconditional(x, idx, rows, cfg)])
            kv = torch.cat([kv, torch.tensor([rows[i].kv[1] for i in cfg], device=dev)])
            idx, f0, w0, count, kv_end, cols = (torch.cat([t, t[cfg]]) for t in (idx, f0, w0, count, kv_end, cols))
        store = self.store
        if candidates:  # each candidate writes its own window: a private copy of its row
            store, kv = store.gather(kv), torch.arange(len(kv), device=dev)
        view = StepView(store, kv, dst=w0, src=w0 - f0, count=count, kv_len=kv_end, q_pos0=f0,
                        block_size=self.block_size)
        if self.graphs is not None:
            out = self.graphs(x, idx, view, f0, cols, candidates)
        else:
            out = self.model.forward_cached(x, idx, view, f0, cols)
        self.left_logits(rows, out, [p[0] for p in plans])
        if not candidates:
            for r in rows:
                r.refreshed = r.a
                r.settings.cache.advance(r)
        return self.finish(out, fed, rows, cfg)

    @staticmethod
    def left_logits(rows, out: torch.Tensor, f0: list[int]) -> None:
        """Shifted block-causal rows: the first window position's logits come from column a-1. A
        forward that fed a-1 keeps them on the row; a forward that did not (its plan saw them kept)
        reads them back (out [n, W, V]; f0: each row's first fed column)."""
        for i, r in enumerate(rows):
            if not r.settings.cache.keeps_left(r):
                continue
            if f0[i] <= r.a - 1:
                r.left = (r.a - 1, out[i, 0].clone())
            else:
                out[i, 0] = r.left[1]
