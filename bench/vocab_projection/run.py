"""The vocabulary projection on CPU: ``F.linear`` (what ``nn.Linear`` runs) against the (W Hᵀ)ᵀ form
``dllm.models.core.vocab_logits`` takes at inference, on the heads of SmolLM2-135M (49152 x 576) and
dllm-tiny, for 1..512 rows. The two take turns in one process, median of repeats; writes bench.md.

    python bench/vocab_projection/run.py [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HEADS = {"SmolLM2-135M (V 49152, d 576)": (49152, 576), "dllm-tiny (V 837, d 128)": (837, 128)}
ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 512)


def timed(fn, reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lines = [f"# Vocabulary projection on CPU: F.linear vs (W Hᵀ)ᵀ ({platform.machine()}, "
             f"{args.threads} threads, torch {torch.__version__})", "",
             "Command: `python bench/vocab_projection/run.py`; median of "
             f"{args.rounds} rounds taking turns.", "",
             "| head | rows | F.linear ms | (W Hᵀ)ᵀ ms | speed-up | max abs diff |", "|---|---|---|---|---|---|"]
    for name, (v, d) in HEADS.items():
        w = torch.randn(v, d) / d ** 0.5
        for rows in ROWS:
            h = torch.randn(rows, d)
            reps = max(1, int(2e8 // (v * d * max(rows, 4))))
            fast = lambda: (w @ h.t()).t().contiguous()  # noqa: E731
            slow = lambda: F.linear(h, w)  # noqa: E731
            fast(), slow()
            a, b = [], []
            for _ in range(args.rounds):
                a.append(timed(slow, reps))
                b.append(timed(fast, reps))
            ta, tb = statistics.median(a) * 1e3, statistics.median(b) * 1e3
            diff = (fast() - slow()).abs().max().item()
            lines.append(f"| {name} | {rows} | {ta:.3f} | {tb:.3f} | {ta / tb:.2f}x | {diff:.1e} |")
            print(lines[-1], flush=True)
    out = Path(__file__).with_name("bench.md")
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
