"""The canvas: [padding | prompt | MASK × gen_length] per row, its positions and its blocks.

Two layouts, chosen by the model's attention kind:

* bidirectional: prompts are left-padded so every row's generation starts at the same column;
  blocks are ``block_length`` columns from there (LLaDA's semi-autoregressive schedule).
* block_causal: blocks are aligned to *absolute* positions (``position // block_size``, as
  Fast-dLLM v2 trains them). Rows are left-padded by a multiple of the block size, so a column's
  block is the same for every row; generation starts mid-block where the prompt ends mid-block.
  Columns past a row's generation area are padding (invisible keys), so a row decodes exactly
  ``gen_length`` tokens whatever its neighbours in the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Canvas:
    x: torch.Tensor  # [B, T] long: tokens (pad | prompt | MASK/decoded | pad)
    positions: torch.Tensor  # [B, T] long: absolute positions (0 at the first prompt token)
    valid: torch.Tensor  # [B, T] bool: not padding (attention keys)
    gen: torch.Tensor  # [B, T] bool: generation area
    gen_start: torch.Tensor  # [B] long: first generation column of each row
    blocks: list[tuple[int, int]]  # column ranges [a, b) decoded left to right

    def window_masked(self, a: int, b: int, mask_id: int) -> torch.Tensor:
        """[B, b-a] bool: positions still MASK inside each row's generation area."""
        return (self.x[:, a:b] == mask_id) & self.gen[:, a:b]

    def gen_tokens(self) -> list[torch.Tensor]:
        return [row[g] for row, g in zip(self.x, self.gen)]


def build_canvas(prompts: list[list[int]], gen_length: int, block_length: int, attention_kind: str,
                 mask_id: int, pad_id: int, block_size: int | None = None, device="cpu") -> Canvas:
    lengths = [len(p) for p in prompts]
    n = len(prompts)
    if attention_kind == "block_causal":
        # unit: a multiple of both the model's block and the decode window, so columns and
        # positions agree modulo both (decode windows may be sub-blocks of the model's blocks)
        unit = math.lcm(block_size or block_length, block_length)
        full = [p // unit for p in lengths]  # completed prompt units
        top = max(full)
        pad = [unit * (top - f) for f in full]  # column block = position block + const
        ends = [pd + p + gen_length for pd, p in zip(pad, lengths)]
        width = -(-max(ends) // unit) * unit
        first = unit * top
        blocks = [(a, a + block_length) for a in range(first, width, block_length)]
    else:
        top = max(lengths)
        pad = [top - p for p in lengths]
        width = top + gen_length
        blocks = [(a, a + block_length) for a in range(top, width, block_length)]
    x = torch.full((n, width), pad_id, dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    valid = torch.zeros((n, width), dtype=torch.bool)
    gen = torch.zeros((n, width), dtype=torch.bool)
    for i, (p, pd) in enumerate(zip(prompts, pad)):
        start, end = pd + len(p), pd + len(p) + gen_length
        x[i, pd:start] = torch.tensor(p, dtype=torch.long)
        x[i, start:end] = mask_id
        valid[i, pd:end] = True
        gen[i, start:end] = True
        positions[i, pd:end] = torch.arange(end - pd)
    gen_start = torch.tensor([pd + len(p) for p, pd in zip(prompts, pad)])
    return Canvas(x.to(device), positions.to(device), valid.to(device), gen.to(device), gen_start.to(device), blocks)
