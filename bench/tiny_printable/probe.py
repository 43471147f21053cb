"""Probe a grown model (issue 17): does it know the answer tokens of a task, and are its new rows distinct?

    python bench/tiny_printable/probe.py <model> [--task parallelbench/waiting_line/copy] [--canvas 64]

Prints, on 12 test items: top-1 accuracy with the answer all MASK (one forward), cloze accuracy (one
answer token masked at a time, 8 per item), how often end-of-text wins inside the answer, and the
geometry of the new tokens' rows (ids past ``--old-vocab``): mean pairwise cosine and mean norm of their
input and output rows beside the old rows'. A copy circuit can only carry a new token whose rows
are distinct.
"""

from __future__ import annotations

import argparse

import torch

from dllm.eval.tasks import get_task
from dllm.loading import load
from dllm.training.common import encode_record


def row_geometry(weight: torch.Tensor, ids: list[int]) -> tuple[float, float]:
    """Mean pairwise cosine and mean norm of ``weight``'s rows ``ids``."""
    x = torch.nn.functional.normalize(weight[ids], dim=-1)
    n = len(ids)
    return float(((x @ x.T).sum() - n) / (n * n - n)), float(weight[ids].norm(dim=-1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--task", default="parallelbench/waiting_line/copy")
    ap.add_argument("--canvas", type=int, default=64)
    ap.add_argument("--items", type=int, default=12)
    ap.add_argument("--old-vocab", type=int, default=400, help="ids below are the parent's (dllm-tiny-lists: 400)")
    args = ap.parse_args()
    m = load(args.model)
    tok, eos = m.tokenizer, m.tokenizer.eos_token_id

    def logits(ids: list[int]) -> torch.Tensor:
        x = torch.tensor([ids])
        with torch.no_grad():
            return m(x, torch.arange(x.shape[1])[None], torch.ones_like(x, dtype=torch.bool))[0]

    full = n = eos_wins = cloze = n_cloze = 0
    for item in get_task(args.task).items("test", args.items):
        prompt, answer = encode_record({"prompt": item.prompt, "response": item.reference}, tok)
        answer = answer + [eos]
        k = len(answer)
        pred = logits(prompt + [m.mask_token_id] * max(args.canvas, k))[len(prompt):len(prompt) + k].argmax(-1)
        full += int((pred == torch.tensor(answer)).sum())
        n += k
        eos_wins += int((pred[:-1] == eos).sum())
        canvas = answer + [eos] * (max(args.canvas, k) - k)
        for j in range(1, k - 1, max(1, (k - 2) // 8)):
            x = prompt + canvas
            x[len(prompt) + j] = m.mask_token_id
            cloze += int(logits(x)[len(prompt) + j].argmax() == canvas[j])
            n_cloze += 1
    print(f"{args.task}: answer all MASK top-1 {full / n:.2f} (end-of-text wins at {eos_wins} of {n - args.items}) "
          f"| cloze {cloze / n_cloze:.2f}")
    old = list(range(4, args.old_vocab))
    new = list(range(args.old_vocab, len(tok)))
    if new:
        for name in ("embed_tokens", "lm_head"):
            w = getattr(m.core, name).weight.detach()
            (co, no), (cn, nn) = row_geometry(w, old), row_geometry(w, new)
            print(f"{name}: old rows cos {co:.3f} norm {no:.2f} | new rows cos {cn:.3f} norm {nn:.2f}")


if __name__ == "__main__":
    main()
