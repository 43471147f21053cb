"""``dllm train recipe=learn2pd_filter`` — label data with the oracle ("extremely greedy")
decoder and train Learn2PD's confidence filter (arXiv 2509.25188; algorithms.md §6.2–6.3).

1. the one-token-per-step baseline decodes each training prompt -> reference output y*;
2. the oracle decodes it again, committing every position whose argmax already equals y*; each
   of its steps gives one example: the active block's confidence vector (all positions) and the
   labels argmax_i == y*_i;
3. the filter (Linear → ReLU → Linear) is fitted full-batch with BCE; a validation split reports
   loss, accuracy and the false-positive rate at the acceptance threshold;
4. the filter is saved next to the model (``learn2pd_filter.safetensors``).

The labelled examples are cached in the output folder, so a rerun after an interruption skips the
decoding already done (written atomically per chunk).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dllm.errors import check
from dllm.generate import generate
from dllm.loading import BUILTIN, load
from dllm.samplers import LLaDASampler, OracleSampler, ops
from dllm.samplers.learn2pd import Learn2PDFilter
from dllm.training import common


class RecordingOracle(OracleSampler):
    """The oracle, also keeping (confidence [W], correct [W]) of every step it takes."""

    def __init__(self):
        self.features, self.labels = [], []

    def step(self, state):
        probs = ops.probs64(state.logits)
        conf, argmax = probs.max(-1)
        valid = state.reference >= 0  # whole window inside the generation area
        rows = valid.all(-1)
        self.features.append(conf[rows].float())
        self.labels.append((argmax == state.reference)[rows].float())
        return super().step(state)


def collect(model, prompts: list[str], gen_length: int, block_length: int, batch_size: int, cache: Path):
    """Label data for ``prompts``, resuming from ``cache`` (one chunk per batch)."""
    done = torch.load(cache, weights_only=True) if cache.exists() else {"n": 0, "x": [], "y": []}
    for s in tqdm(range(done["n"], len(prompts), batch_size), desc="oracle labels"):
        batch = prompts[s:s + batch_size]
        kw = dict(gen_length=gen_length, block_length=block_length, stop_at_eos=False)
        base = generate(model, batch, LLaDASampler(), **kw)
        rec = RecordingOracle()
        generate(model, batch, rec, reference=base.ids, **kw)
        done["x"].append(torch.cat(rec.features))
        done["y"].append(torch.cat(rec.labels))
        done["n"] = s + len(batch)
        tmp = cache.with_suffix(".tmp")
        torch.save(done, tmp)
        tmp.replace(cache)
    return torch.cat(done["x"]), torch.cat(done["y"])


def fit(x: torch.Tensor, y: torch.Tensor, block_length: int, hidden: int, iterations: int, lr: float,
        val_fraction: float, threshold: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    n_val = max(1, int(len(x) * val_fraction))
    val, tr = perm[:n_val], perm[n_val:]
    torch.manual_seed(seed)
    filt = Learn2PDFilter(block_length, hidden)
    opt = torch.optim.AdamW(filt.parameters(), lr=lr)
    for _ in tqdm(range(iterations), desc="filter"):
        loss = F.binary_cross_entropy_with_logits(filt(x[tr]), y[tr])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits = filt(x[val])
        val_loss = F.binary_cross_entropy_with_logits(logits, y[val]).item()
        pred = torch.sigmoid(logits) > threshold
        neg, pos = y[val] == 0, y[val] == 1
        metrics = {
            "examples": len(x), "train_loss": loss.item(), "val_loss": val_loss,
            "val_accuracy": ((torch.sigmoid(logits) > 0.5) == pos).float().mean().item(),
            f"val_false_positive_rate@{threshold}": (pred & neg).sum().item() / max(neg.sum().item(), 1),
            f"val_accepted_share@{threshold}": pred.float().mean().item(),
            "positive_share": pos.float().mean().item(),
        }
    return filt, metrics


def run(model: str = "dllm-tiny", data: str = "tasks:tiny:40", output_dir: str | None = None, gen_length: int = 32,
        block_length: int = 32, batch_size: int = 32, hidden: int = 32, iterations: int = 3000, lr: float = 3e-3,
        val_fraction: float = 0.1, threshold: float = 0.96, seed: int = 0):
    """Label, fit and save; ``output_dir`` defaults to the model's own folder."""
    check(iterations > 0, f"iterations must be a positive integer, got {iterations}")
    check(0 < val_fraction < 1, f"val_fraction must be in (0, 1), got {val_fraction}")
    m = load(model)
    folder = Path(output_dir) if output_dir else Path(BUILTIN.get(model, model))
    folder.mkdir(parents=True, exist_ok=True)
    prompts = [r["prompt"] for r in common.load_records(data)]
    x, y = collect(m, prompts, gen_length, block_length, batch_size, folder / "learn2pd_examples.pt")
    filt, metrics = fit(x, y, block_length, hidden, iterations, lr, val_fraction, threshold, seed)
    metrics.update(model=str(model), data=data, gen_length=gen_length, block_length=block_length, iterations=iterations)
    path = filt.save(folder, metrics)
    (folder / "learn2pd_examples.pt").unlink(missing_ok=True)
    print(json.dumps(metrics, indent=1))
    return path
