"""The board: every live row's canvas in one set of tensors, one board row per decoding row.

x [N, T] long: tokens (prompt, MASK or decoded answer, pad past the row's canvas); gen [N, T]
bool: answer area; ref [N, T] long: a known output (-1 = none); step_at [N, T] long and conf_at
[N, T] float64: which forward committed each position, with what confidence (traces); carry
[N, T, C] float64: per-position memory a sampler keeps across steps (credit), zero at a row's
start, made on first use (C = the widest ``carry_width`` seen). Column =
absolute position. Board rows are handed out as requests arrive and reused when they leave; the
board grows (rows and columns) when a request does not fit.
"""

from __future__ import annotations

import torch


class Board:
    def __init__(self, device, mask_id: int, pad_id: int):
        self.device, self.mask_id, self.pad_id = device, mask_id, pad_id
        self.free: list[int] = []
        self.x = torch.full((0, 0), pad_id, dtype=torch.long, device=device)
        self.gen = torch.zeros((0, 0), dtype=torch.bool, device=device)
        self.ref = torch.full((0, 0), -1, dtype=torch.long, device=device)
        self.step_at = torch.zeros((0, 0), dtype=torch.long, device=device)
        self.conf_at = torch.zeros((0, 0), dtype=torch.float64, device=device)
        self.carry: torch.Tensor | None = None

    def grow(self, rows: int, width: int) -> None:
        n, t = self.x.shape
        if rows <= n and width <= t:
            return
        n2, t2 = max(rows, n), max(width, t)
        for name, fill in (("x", self.pad_id), ("gen", False), ("ref", -1), ("step_at", 0), ("conf_at", 0.0)):
            old = getattr(self, name)
            new = torch.full((n2, t2), fill, dtype=old.dtype, device=self.device)
            new[:n, :t] = old
            setattr(self, name, new)
        if self.carry is not None:
            carry = self.carry.new_zeros((n2, t2, self.carry.shape[2]))
            carry[:n, :t] = self.carry
            self.carry = carry
        self.free.extend(range(n, n2))

    def memory(self, width: int) -> torch.Tensor:
        """The carry tensor, at least ``width`` wide per position."""
        n, t = self.x.shape
        if self.carry is None or self.carry.shape[2] < width:
            carry = torch.zeros((n, t, width), dtype=torch.float64, device=self.device)
            if self.carry is not None:
                carry[..., :self.carry.shape[2]] = self.carry
            self.carry = carry
        return self.carry

    def place(self, row) -> int:
        """Lay ``row`` out on a free board row; returns the slot."""
        if not self.free:
            self.grow(max(1, 2 * self.x.shape[0]), row.width)
        self.grow(0, row.width)
        slot = self.free.pop(0)
        p, end = len(row.prompt), row.end
        self.x[slot] = self.pad_id
        self.x[slot, :p] = torch.tensor(row.prompt, dtype=torch.long, device=self.device)
        self.x[slot, p:end] = self.mask_id
        self.gen[slot] = False
        self.gen[slot, p:end] = True
        self.ref[slot] = -1
        if row.reference is not None:
            self.ref[slot, p:end] = row.reference.to(self.device)
        self.step_at[slot] = 0
        self.conf_at[slot] = 0.0
        if self.carry is not None:
            self.carry[slot] = 0.0
        return slot

    def release(self, slot: int) -> None:
        self.free.append(slot)
        self.free.sort()  # lowest first: deterministic placement

    def windows(self, rows, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(slots [n], columns [n, width]) of the rows' current windows."""
        slots = torch.tensor([r.slot for r in rows], device=self.device)
        starts = torch.tensor([r.a for r in rows], device=self.device)
        return slots, starts[:, None] + torch.arange(width, device=self.device)[None]

    def masked(self, slots: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """[n, W] bool: positions still MASK inside each row's answer area."""
        return (self.x[slots[:, None], cols] == self.mask_id) & self.gen[slots[:, None], cols]
