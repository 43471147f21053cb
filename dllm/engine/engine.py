"""The decode loop, written once (design.md §2), as a step function over live rows.

    admit(row)        lay a prepared request out on the board, give it cache rows
    step()            one forward over every live row (one per forward kind: plain, cached),
                      the samplers (one call per group of rows that share sampler, window and
                      schedule step), commit, record, retire rows that are done
    retire(row)       take a row out now (a server's cancel or stop string)

Rows keep their own window, sampler and cache state, so rows at different windows, with
different samplers and prompt lengths, share a forward, and a row's tokens never depend on its
neighbours. ``dllm.generate`` and the server both drive this one step function.
"""

from __future__ import annotations

import itertools

import torch

from dllm.engine.board import Board
from dllm.engine.forward import Forwarder
from dllm.engine.recorder import Recorder
from dllm.engine.row import Row
from dllm.samplers.base import StepState


def retire_finished(board: Board, slots: torch.Tensor, end_ids: torch.Tensor) -> torch.Tensor:
    """Rows whose text is complete: an end token is committed and nothing before it is still MASK.
    Later positions cannot change the text, so they are filled with that end token. -> bool [n]."""
    x, gen = board.x[slots], board.gen[slots]
    is_end = torch.isin(x, end_ids) & gen
    has_end = is_end.any(-1)
    first = torch.where(has_end, is_end.int().argmax(-1), x.shape[1])  # [n]
    col = torch.arange(x.shape[1], device=x.device)[None]
    before = (x == board.mask_id) & gen & (col < first[:, None])
    done = has_end & ~before.any(-1)
    end_tok = x.gather(1, first.clamp_max(x.shape[1] - 1)[:, None])  # [n, 1]
    fill = done[:, None] & gen & (col > first[:, None]) & (x == board.mask_id)
    board.x[slots] = torch.where(fill, end_tok, x)
    return done


class Engine:
    def __init__(self, model, trace: bool = False, isolate_errors: bool = False):
        """``isolate_errors``: a sampler that fails on one group of rows retires those rows with the
        error (``row.error``) and the others go on (a server); otherwise it raises (``generate``)."""
        self.model, self.isolate_errors = model, isolate_errors
        self.board = Board(model.device, model.mask_token_id, model.pad_token_id)
        self.forward = Forwarder(model, self.board)
        self.recorder = Recorder(trace)
        self.end_ids = torch.tensor(model.eos_token_ids, device=model.device)
        self.rows: list[Row] = []

    @property
    def live(self) -> int:
        return len(self.rows)

    def reserve(self, rows: int, width: int, kv_rows: int, kv_length: int) -> None:
        """Preallocate for a known batch (``generate``): board rows and, if cached, store rows."""
        self.board.grow(rows, width)
        if kv_rows:
            self.forward.reserve(kv_rows, kv_length)

    def admit(self, row: Row) -> Row:
        row.slot = self.board.place(row)
        self.forward.attach(row)
        row.k, row.span = 0, 1
        self.rows.append(row)
        if self.advance(row, start=True)[0]:
            self.leave(row)
        return row

    def retire(self, row: Row) -> None:
        """Take a row out now: its answer so far is recorded; its board and cache rows are freed."""
        if not row.done:
            row.finished = True
            self.leave(row)

    def leave(self, row: Row) -> None:
        row.done = True
        self.recorder.finish(self.board, row)
        self.board.release(row.slot)
        self.forward.detach(row)
        self.rows.remove(row)

    def counts(self, row: Row, k: int) -> tuple[int, int]:
        """(MASK, answer positions) inside the row's window k."""
        a, b = row.windows[k]
        gen = self.board.gen[row.slot, a:b]
        return int(((self.board.x[row.slot, a:b] == self.board.mask_id) & gen).sum()), int(gen.sum())

    def advance(self, row: Row, start: bool = False) -> tuple[bool, bool]:
        """Bring the row's span up to date: drop clean windows at its front (the next one becomes
        active: a new block for the schedule), then let the following window join once the active
        one is committed past ``multi_block`` (multi-block decoding; 1 = never: block by block).
        -> (no window left, a new block started). ``start``: the row's first window is new too."""
        new = start
        while row.k < len(row.windows) and not self.counts(row, row.k)[0]:
            row.k, row.span, new = row.k + 1, max(1, row.span - 1), True
        if row.k == len(row.windows):
            return True, new
        if new:
            row.block_step, row.pending = 0, None
            row.block_masked = sum(self.counts(row, k)[0] for k in range(row.k, row.k + row.span))
        tau = row.settings.multi_block
        if row.span == 1 and tau < 1 and row.k + 1 < len(row.windows):
            masked, gen = self.counts(row, row.k)
            if 1 - masked / gen >= tau:  # the next window joins: the span is two windows wide
                row.span, row.pending = 2, None
                row.block_masked += self.counts(row, row.k + 1)[0]
        return False, new

    @staticmethod
    def group_key(row: Row) -> tuple:
        s = row.settings
        return (s.cache.cached, id(s.sampler), row.window, row.block_step, s.per_block)

    def step(self) -> list[Row]:
        """One decode step of every live row; returns the rows that left."""
        live = sorted(self.rows, key=self.group_key)
        if not live:
            return []
        logits = {}  # row -> (batch logits, index)
        for cached in (False, True):
            need = [r for r in live if r.pending is None and r.settings.cache.cached == cached]
            if need:
                out, fed = self.forward(need)
                self.recorder.count(need, fed)
                logits.update((id(r), (out, i)) for i, r in enumerate(need))
        failed = []
        for _, group in itertools.groupby(live, key=self.group_key):
            group = list(group)
            try:
                self.decide(group, logits)
            except Exception as e:
                if not self.isolate_errors:
                    raise
                for r in group:
                    r.error = f"{type(e).__name__}: {e}"
                    self.retire(r)
                failed += group
        return failed + self.settle([r for r in live if not r.done])

    def group_logits(self, rows: list[Row], logits: dict, width: int) -> torch.Tensor:
        """[g, W, V]: a slice of the forward's logits when the group is contiguous in it."""
        src = [logits.get(id(r)) for r in rows]
        if all(s is not None and s[0] is src[0][0] for s in src):
            i0 = src[0][1]
            if [s[1] for s in src] == list(range(i0, i0 + len(rows))):
                return src[0][0][i0:i0 + len(rows), :width]
        return torch.stack([r.pending if s is None else s[0][s[1], :width] for r, s in zip(rows, src)])

    def decide(self, rows: list[Row], logits: dict) -> None:
        """The sampler's step for one group of rows, committed on the board."""
        s = rows[0].settings
        width = rows[0].window
        slots, cols = self.board.windows(rows, width)
        tokens = self.board.x[slots[:, None], cols]
        masked = self.board.masked(slots, cols)
        gens = [r.generator for r in rows]
        width_c = getattr(s.sampler, "carry_width", 0)  # per-position sampler memory (credit)
        carry = self.board.memory(width_c)[slots[:, None], cols, :width_c] if width_c else None
        state = StepState(logits=self.group_logits(rows, logits, width), tokens=tokens, masked=masked,
                          block_step=rows[0].block_step, steps_per_block=s.per_block,
                          block_masked=torch.tensor([r.block_masked for r in rows], device=tokens.device),
                          end_token_ids=self.model.eos_token_ids,
                          generator=None if all(g is None for g in gens) else gens,
                          reference=self.board.ref[slots[:, None], cols] if any(r.reference is not None for r in rows)
                          else None, verify=self.verifier(rows, width), carry=carry)
        d = s.sampler.step(state)
        commit = d.commit & masked
        if not getattr(s.sampler, "may_commit_nothing", False) and not commit.any(-1).all():
            raise RuntimeError(f"{type(s.sampler).__name__} committed no token for a row that had masks")
        self.board.x[slots[:, None], cols] = torch.where(commit, d.tokens, tokens)
        self.recorder.commit(self.board, rows, slots, cols, commit, d.confidence)
        if width_c and d.carry is not None:
            self.board.carry[slots[:, None], cols, :width_c] = d.carry
        if d.end_at is not None:
            self.truncate(rows, slots, d.end_at)
        for i, r in enumerate(rows):
            r.pending = None if d.next_logits is None else d.next_logits[i]

    def verifier(self, rows: list[Row], width: int):
        def verify(drafts: torch.Tensor) -> torch.Tensor:
            """drafts [g, K, W] -> logits [g, K, W, V] in one batched forward (one forward of K× the
            tokens for each row)."""
            g, k, w = drafts.shape
            out, fed = self.forward([r for r in rows for _ in range(k)], drafts.reshape(g * k, w))
            self.recorder.count(rows, fed.view(g, k).sum(1))
            return out[:, :width].reshape(g, k, w, -1)

        return verify

    def truncate(self, rows: list[Row], slots: torch.Tensor, end_at: torch.Tensor) -> None:
        """End-of-text prediction: for each row with end_at >= 0, every answer position after window
        index end_at becomes end-of-text and is never decoded. Counted per row."""
        a = torch.tensor([r.a for r in rows], device=slots.device)
        col = torch.arange(self.board.x.shape[1], device=slots.device)[None]
        cut = (end_at >= 0)[:, None] & (col > (a + end_at)[:, None]) & self.board.gen[slots]
        self.board.x[slots] = torch.where(cut, self.end_ids[0], self.board.x[slots])
        for r, hit in zip(rows, (end_at >= 0).tolist()):
            r.stats.truncations += int(hit)

    def settle(self, rows: list[Row]) -> list[Row]:
        """After a step: retire rows whose text is complete; move rows whose window is clean on."""
        eos = [r for r in rows if r.settings.stop_at_eos]
        if eos:
            done = retire_finished(self.board, torch.tensor([r.slot for r in eos], device=self.board.device),
                                   self.end_ids)
            for r, d in zip(eos, done.tolist()):
                r.finished = r.finished or d
        left = []
        for r in rows:
            done, new = (True, False) if r.finished else self.advance(r)
            if done:
                self.leave(r)
                left.append(r)
            elif not new:
                r.block_step += 1
                limit = 2 * r.settings.block_length + r.settings.per_block  # >= 1 commit per step in the span
                if r.block_step > limit:
                    raise RuntimeError(f"window [{r.a}, {r.b}) did not finish in {limit} forwards")
        return left
