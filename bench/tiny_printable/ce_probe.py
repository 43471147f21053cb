"""How far a printable-dllm-tiny-lists run has got on the ParallelBench format before its accuracy moves:
the cross-entropy (nats a token) and argmax accuracy of the answers' content tokens (end-of-text
padding left out) with a fraction r of the answer masked, for a few tasks, on 16 train items each.
One forward per (task, r): a minute on one core. Appends one row to a markdown table.

    python bench/tiny_printable/ce_probe.py runs/dllm-tiny-printable-short --out bench/tiny_printable/expand.md

A model that copies has near-zero loss at every r on ``copy`` (dllm-tiny-lists on its own copy: 0.001);
a model that only knows the format sits near log(number of names).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from probe_run import append_row, load_run  # beside this script

from dllm.eval.tasks import get_task
from dllm.training import common

TASKS = ["parallelbench/waiting_line/copy", "parallelbench/waiting_line/reverse", "parallelbench/puzzle/sudoku_n4_12",
         "waiting_line/copy"]


@torch.no_grad()
def content_ce(model, task: str, ratios, n: int = 16, canvas: int = 64, seed: int = 0,
               after_prompt: bool = False) -> list[tuple[float, float]]:
    """-> per ratio (mean content-token CE, content-token argmax accuracy) over n train items, the answers
    tokenized as the run was trained (``after_prompt``: recipe.answer_tokens=after_prompt)."""
    tok = model.tokenizer
    rows = [{"prompt": it.prompt, "response": it.reference} for it in get_task(task).items("train", n)]
    eos = tok.eos_token_id
    examples, _ = common.encode_examples(rows, tok, canvas, 512, lambda p, a: a + [eos] * (canvas - len(a)),
                                         after_prompt)
    ids, positions, valid, answer = common.collate(examples, tok.pad_token_id or eos, "cpu")[:4]
    content = answer & (ids != eos)  # [B, L]
    gen = torch.Generator().manual_seed(seed)
    out = []
    for r in ratios:
        masked = content & (torch.rand(ids.shape, generator=gen) < r)
        logits = model(ids.masked_fill(masked, model.mask_token_id), positions, valid)  # [B, L, V]
        ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")  # [B, L]
        right = logits.argmax(-1) == ids
        out.append((float((ce * masked).sum() / masked.sum()), float((right & masked).sum() / masked.sum())))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run folder (its checkpoint/ is probed) or a model folder")
    ap.add_argument("--out", required=True, help="markdown file the row is appended to")
    ap.add_argument("--tasks", nargs="*", default=TASKS)
    ap.add_argument("--ratios", nargs="*", type=float, default=[0.3, 1.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--answer-tokens", choices=["alone", "after_prompt"], default=None,
                    help="how answers are tokenized (default: as the run's recipe.json says, else alone)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    src = Path(args.run)
    step, model = load_run(src)
    model.eval()
    recipe = src / "checkpoint" / "recipe.json"
    trained = json.loads(recipe.read_text()).get("answer_tokens", "alone") if recipe.exists() else "alone"
    how = args.answer_tokens or trained
    cells = [f"{ce:.2f} / {acc:.0%}" for t in args.tasks
             for ce, acc in content_ce(model, t, args.ratios, after_prompt=how == "after_prompt")]
    cols = [f"{t.split('/')[0].replace('parallelbench', 'PB')} {t.split('/')[-1]} r={r}" for t in args.tasks
            for r in args.ratios]
    append_row(Path(args.out), "run, step", cols, f"{src.name} {step}", cells,
               intro="CE (nats a content token) / argmax accuracy, r of the answer masked:\n\n")


if __name__ == "__main__":
    main()
