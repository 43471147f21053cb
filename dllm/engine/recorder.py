"""What a decode leaves behind: per-row statistics, traces and results. The :class:`Recorder` owns
them; the engine tells it what each forward fed and what each step committed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


@dataclass
class SequenceStats:
    """Per-sequence figures. Forwards count a CFG pair as one (the papers' NFE); forward_tokens
    counts every token position fed to the model (CFG doubles it)."""

    nfe: int = 0
    forward_tokens: int = 0
    committed: int = 0  # positions decoded by the model (not filled after the end token)
    gen_tokens: int = 0  # real tokens: before the first end-of-text token
    prompt_tokens: int = 0
    wall_time: float = 0.0  # seconds of the batch this row was decoded in
    stopped_early: bool = False  # retired once its text was complete
    truncations: int = 0  # end-of-text predictions that cut the canvas (Learn2PD EoTP)

    @property
    def tokens_per_forward(self) -> float:
        """Decoded answer-area tokens (end-of-text included) per forward."""
        return self.committed / max(self.nfe, 1)

    @property
    def real_tokens_per_forward(self) -> float:
        return self.gen_tokens / max(self.nfe, 1)

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens (prompt, padding and end-of-text excluded) per wall second."""
        return self.gen_tokens / max(self.wall_time, 1e-9)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(tokens_per_forward=self.tokens_per_forward, real_tokens_per_forward=self.real_tokens_per_forward,
                 tokens_per_second=self.tokens_per_second)
        return d


@dataclass
class Trace:
    """Which forward committed each generated position, and with what confidence.
    step [G] long: 1-based forward index (0 = filled after the end token); confidence [G] float64."""

    step: torch.Tensor
    confidence: torch.Tensor
    tokens: torch.Tensor
    block_length: int
    offset: int = 0  # window columns before the first generated position (block diffusion starts mid-block)


@dataclass
class GenerationResult:
    ids: list[torch.Tensor]  # generated area per row [G] (end-of-text and fill included)
    text: list[str]  # decoded up to the first end-of-text token
    stats: list[SequenceStats]
    trace: list[Trace] = field(default_factory=list)
    cache: str = "none"
    cache_bytes: int = 0  # preallocated K/V storage of the batch (0 without a cache)

    def summary(self) -> dict:
        n = len(self.stats)
        nfe = sum(s.nfe for s in self.stats)
        wall = max((s.wall_time for s in self.stats), default=0.0)
        gen = sum(s.gen_tokens for s in self.stats)
        return {
            "sequences": n,
            "nfe_per_seq": nfe / max(n, 1),
            "tokens_per_forward": sum(s.committed for s in self.stats) / max(nfe, 1),
            "real_tokens_per_forward": gen / max(nfe, 1),
            "gen_tokens": gen,
            "tokens_per_second": gen / max(wall, 1e-9),
            "wall_time": wall,
        }


class Recorder:
    """Counts forwards and commits per row, and snapshots a row's answer and trace when it leaves.
    step_at, conf_at live on the board ([N, T], per board row)."""

    def __init__(self, trace: bool = False):
        self.trace = trace

    def count(self, rows, fed) -> None:
        """One forward for each of ``rows``; ``fed`` [len(rows)] tokens each fed to the model."""
        for r, f in zip(rows, fed.tolist() if isinstance(fed, torch.Tensor) else fed):
            r.stats.nfe += 1
            r.stats.forward_tokens += int(f)

    def commit(self, board, rows, slots, cols, commit: torch.Tensor, confidence: torch.Tensor) -> None:
        """``commit`` [g, W] positions decoded now, at each row's current forward index."""
        index = torch.tensor([r.stats.nfe for r in rows], device=commit.device)[:, None]
        where = (slots[:, None], cols)
        board.step_at[where] = torch.where(commit, index, board.step_at[where])
        board.conf_at[where] = torch.where(commit, confidence.double(), board.conf_at[where])
        for r, c in zip(rows, commit.sum(-1).tolist()):
            r.stats.committed += c

    def finish(self, board, row) -> None:
        """Snapshot the row's answer area (and trace) before its board row is reused."""
        g = board.gen[row.slot]
        ids = board.x[row.slot][g].cpu()
        step = board.step_at[row.slot][g].cpu()
        row.stats.stopped_early = row.finished and bool((step == 0).any())
        trace = None
        if self.trace:
            trace = Trace(step=step, confidence=board.conf_at[row.slot][g].cpu(), tokens=ids,
                          block_length=row.settings.block_length, offset=row.gen_start - row.windows[0][0])
        row.result = (ids, trace)


__all__ = ["SequenceStats", "Trace", "GenerationResult", "Recorder"]
