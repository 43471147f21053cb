"""Learn2PD — a learned parallel-decoding filter with end-of-text prediction (arXiv 2509.25188;
algorithms.md §6)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dllm.errors import check
from dllm.samplers import ops
from dllm.samplers.base import Decision, Sampler, StepState

FILTER_FILE = "learn2pd_filter.safetensors"


class Learn2PDFilter(nn.Module):
    """Linear(W→H) → ReLU → Linear(H→W): the block's confidence vector (every position, decoded
    ones included) -> one logit per position, σ = P(current argmax is already final)."""

    def __init__(self, block_length: int = 32, hidden: int = 32):
        super().__init__()
        self.block_length, self.hidden = block_length, hidden
        self.net = nn.Sequential(nn.Linear(block_length, hidden), nn.ReLU(), nn.Linear(hidden, block_length))

    def forward(self, conf: torch.Tensor) -> torch.Tensor:
        return self.net(conf)

    def save(self, folder: str | Path, metrics: dict | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / FILTER_FILE),
                  metadata={"block_length": str(self.block_length), "hidden": str(self.hidden)})
        (folder / "learn2pd_filter.json").write_text(json.dumps({"block_length": self.block_length,
                                                                 "hidden": self.hidden, **(metrics or {})}, indent=1))
        return folder / FILTER_FILE

    @classmethod
    def load(cls, path: str | Path) -> "Learn2PDFilter":
        """A filter file, or a folder (a model folder or built-in model name) holding one."""
        from dllm.loading import BUILTIN

        p = BUILTIN.get(str(path), Path(path))
        p = p / FILTER_FILE if p.is_dir() else p
        check(p.exists(), f"filter file {p} does not exist (train one: dllm train recipe=learn2pd_filter)")
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        filt = cls(int(meta.get("block_length", 32)), int(meta.get("hidden", 32)))
        filt.load_state_dict(load_file(str(p)))
        return filt.eval()


class Learn2PDSampler(Sampler):
    """Commit the schedule's top token (steps = gen_length -> one per forward) plus every masked
    position the filter accepts: σ(filter(c_block)) > θ (strict, θ = 0.96 by default).

    End-of-text prediction (``eotp``): when an accepted masked position proposes an end token, the
    canvas is cut right after the first such position (the rest becomes end-of-text, never
    decoded). ``eot_most_confident`` adds the reference's aggressive branch: with no accepted end
    token, cut after the masked position whose end-token proposal is most confident (here within
    the active block, which is what the cached reference variants do). Every cut is counted in the
    stats (``truncations``).
    """

    fixed_window = True  # the filter reads exactly block_length scores: no multi-block windows

    def __init__(self, filter: str = "dllm-tiny", threshold: float = 0.96, eotp: bool = True,
                 eot_most_confident: bool = False):
        ops.check_unit_interval("threshold", threshold)
        self.filter_path, self.threshold = filter, threshold
        self.eotp, self.eot_most_confident = eotp, eot_most_confident
        self._filter = Learn2PDFilter.load(filter)

    def step(self, state: StepState) -> Decision:
        w = state.logits.shape[1]
        check(w == self._filter.block_length,
              f"Learn2PD filter input size {self._filter.block_length} differs from the block length {w}")
        tokens, conf = ops.propose(state.logits)  # greedy proposals, float64 confidences
        with torch.no_grad():
            accept = torch.sigmoid(self._filter(conf.float()).double()) > self.threshold
        masked = state.masked
        score = conf.masked_fill(~masked, ops.NEG_INF)
        quota = ops.transfer_quota(state.block_masked, state.steps_per_block, state.block_step)
        commit = ops.at_least_one(ops.top_k_mask(score, quota) | (accept & masked), score, masked)
        end_at = None
        if self.eotp:
            ends = torch.isin(tokens, torch.tensor(state.end_token_ids, device=tokens.device)) & masked
            accepted_end = ends & accept
            has = accepted_end.any(-1)
            first = torch.where(has, accepted_end.int().argmax(-1), -1)
            if self.eot_most_confident:
                best = conf.masked_fill(~ends, ops.NEG_INF).argmax(-1)
                first = torch.where(~has & ends.any(-1), best, first)
            end_at = first
            cut = (end_at >= 0)[:, None] & (torch.arange(w, device=tokens.device)[None] == end_at[:, None])
            commit = commit | cut  # the end token at the cut is committed with it
        return Decision(commit=commit & masked, tokens=tokens, confidence=conf, end_at=end_at)
