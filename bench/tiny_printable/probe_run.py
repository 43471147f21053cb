"""Probe a running printable-dllm-tiny-lists run's checkpoint: dllm's own twelve tasks (gen 32) and four
ParallelBench-format tasks (gen 48), one token per forward, and append one row to a markdown table.

    python bench/tiny_printable/probe_run.py runs/dllm-tiny-printable-x3 --out bench/tiny_printable/expand.md

The checkpoint is copied first (the run rewrites it every 50 steps). dllm-tiny-lists's own-task figures
(its card, 100 items) are the bar: within 2 points on each task.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from dllm.eval.runner import evaluate
from dllm.eval.tasks import task_list
from dllm.loading import load
from dllm.samplers import LLaDASampler

PB = ["parallelbench/waiting_line/copy", "parallelbench/waiting_line/reverse",
      "parallelbench/waiting_line/insert_index", "parallelbench/puzzle/sudoku_n4_12"]
CARD = {"waiting_line/copy": 100, "waiting_line/reverse": 100, "waiting_line/sort": 79, "waiting_line/shuffle": 14,
        "waiting_line/insert_index": 99, "waiting_line/insert_random": 36, "waiting_line/remove_index": 100,
        "waiting_line/remove_random": 39, "waiting_line/replace_index": 96, "waiting_line/replace_random": 28,
        "latin_square/4x4": 97, "sudoku/4x4": 97}  # dllm-tiny-lists's card, one token per forward, 100 items


def load_run(src: Path):
    """-> (step, model) of a run folder's checkpoint, copied first (the run rewrites it every 50
    steps), or ("-", model) of a model folder."""
    if not (src / "checkpoint").exists():
        return "-", load(str(src))
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(src / "checkpoint", Path(tmp) / "c")
        step = json.loads((Path(tmp) / "c" / "recipe.json").read_text())["step"]
        return step, load(str(Path(tmp) / "c" / "model"))


def append_row(out: Path, first: str, cols: list[str], label: str, cells: list[str], intro: str = "") -> None:
    """Append one row to the markdown table in ``out``, its header (after ``intro``) first when the file lacks it."""
    text = out.read_text() if out.exists() else ""
    header = f"| {first} | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1) + "\n"
    if header.splitlines()[0] not in text:
        text += ("\n" if text else "") + intro + header
    text += f"| {label} | " + " | ".join(cells) + " |\n"
    out.write_text(text)
    print(text.splitlines()[-1])


def short(name: str) -> str:
    return name.split("/")[-1].replace("_n4_12", "").replace("4x4", name.split("/")[0].split("_")[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run folder (its checkpoint/ is probed) or a model folder")
    ap.add_argument("--out", required=True, help="markdown file the row is appended to")
    ap.add_argument("--own-items", type=int, default=100)
    ap.add_argument("--pb-items", type=int, default=20)
    ap.add_argument("--own", nargs="*", default=None, help="own tasks to probe (default: all twelve)")
    ap.add_argument("--pb", nargs="*", default=PB, help="ParallelBench-format tasks to probe")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    src = Path(args.run)
    step, model = load_run(src)
    own, pb = args.own or task_list("trained"), args.pb
    window = dict(gen_length=32, block_length=32)
    a = evaluate(model, LLaDASampler(), own, args.own_items, window, batch_size=50)
    b = evaluate(model, LLaDASampler(), pb, args.pb_items, dict(gen_length=48, block_length=48), batch_size=20)
    cols = [short(t) for t in own] + ["own mean", "worst drop vs card"] + [f"PB {short(t)}" for t in pb]
    drops = [CARD[t] - a[t]["accuracy"] for t in own if t in CARD]
    cells = ([f"{a[t]['accuracy']:.0f}" for t in own] + [f"{sum(a[t]['accuracy'] for t in own) / len(own):.1f}",
             f"{max(drops):+.0f}"] + [f"{b[t]['accuracy']:.0f}" for t in pb])
    append_row(Path(args.out), "step", cols, f"{src.name} {step}", cells)


if __name__ == "__main__":
    main()
