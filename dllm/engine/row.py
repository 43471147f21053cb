"""One request as the engine decodes it: its settings, its layout and its decoding state.

Layout: a row's canvas column is its absolute position (no padding; ragged rows share a forward
by per-row offsets), ``[prompt | MASK × gen_length]`` then, for block-causal models, pad up to
the end of the last block. Decode windows are ``block_length`` columns:

* bidirectional: from the end of the prompt (LLaDA's semi-autoregressive schedule);
* block-causal: aligned to absolute positions (a multiple of both the trained block and the
  window), so the first window starts mid-prompt when the prompt ends mid-block. Windows
  holding no answer position are dropped: they would cost no forward anyway.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch

from dllm.cache import CachePolicy
from dllm.engine.recorder import SequenceStats
from dllm.samplers.base import Sampler


@dataclass(frozen=True, eq=False)
class Settings:
    """A request's decode settings, checked by :func:`dllm.engine.prepare.settings`."""

    sampler: Sampler
    gen_length: int
    block_length: int  # the decode window W
    per_block: int  # schedule steps per block (schedule-driven samplers)
    cache: CachePolicy
    cfg_scale: float = 0.0
    stop_at_eos: bool = True
    multi_block: float = 1.0  # the next window joins once the active one is committed past this fraction


def layout(prompt_len: int, gen_length: int, window: int, attention_kind: str,
           block_size: int | None) -> tuple[list[tuple[int, int]], int]:
    """-> (decode windows [a, b) in columns, canvas width)."""
    end = prompt_len + gen_length
    if attention_kind == "block_causal":
        unit = math.lcm(block_size or window, window)  # columns agree with positions modulo both
        width = -(-end // unit) * unit
        first = unit * (prompt_len // unit)
    else:
        width, first = end, prompt_len
    windows = [(a, a + window) for a in range(first, width, window) if a < end and a + window > prompt_len]
    return windows, width


def row_seed(seed: int, prompt: list[int]) -> int:
    """A row's RNG seed from (seed, its prompt): the same request draws the same numbers in any batch."""
    h = hashlib.blake2b(f"{seed}:{','.join(map(str, prompt))}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & (2**63 - 1)


@dataclass(eq=False)
class Row:
    prompt: list[int]
    settings: Settings
    windows: list[tuple[int, int]]
    width: int
    generator: torch.Generator | None = None
    reference: torch.Tensor | None = None  # [gen_length] known output (analysis samplers)
    tag: object = None  # the caller's handle (the server's job)
    stats: SequenceStats = field(default_factory=SequenceStats)
    slot: int = -1  # board row
    kv: tuple[int, ...] = ()  # KV store rows (two with CFG: conditional, unconditional)
    k: int = 0  # active window
    span: int = 1  # windows decoded together: 2 once the next one joined (multi-block decoding)
    block_step: int = 0  # forwards spent on the current window
    block_masked: int = 0  # masked positions when the window started
    refreshed: int = -1  # window start the cache last refreshed (prefix, dual, sub_block)
    cached_col: int = 0  # exact slots end here (block, sub_block)
    pending: torch.Tensor | None = None  # [W, V] logits of the current state (a verified draft)
    left: tuple[int, torch.Tensor] | None = None  # (column, logits [V]) kept for a shifted block-causal window
    done: bool = False
    finished: bool = False  # retired before its last window (end of text, stop string, cancel)
    result: object = None  # set by the recorder when the row leaves
    error: str | None = None  # why the engine retired it (isolate_errors)

    @property
    def a(self) -> int:
        return self.windows[self.k][0]

    @property
    def b(self) -> int:
        """End of the decoded span: the active window, plus the next one once it joined."""
        return self.windows[self.k + self.span - 1][1]

    @property
    def gen_start(self) -> int:
        return len(self.prompt)

    @property
    def end(self) -> int:
        """One past the last valid column (prompt + answer area)."""
        return len(self.prompt) + self.settings.gen_length

    @property
    def window(self) -> int:
        """Width of what the sampler sees now (the span)."""
        return self.b - self.a
