"""Can a grown dllm-tiny-lists learn to copy its new tokens? A short training run per arm (issue 17).

    python bench/tiny_printable/copy_ab.py <grown model> --start run|mean|random --data pb|short|random
        [--steps 600] [--lr 3e-4] [--batch 32] [--threads 2] [--out bench/tiny_printable/copy_ab.md]

``--steps 0`` only measures the model (a probe of a run's checkpoint).

The printable retrain (recipe tiny_printable) learned the ParallelBench format but not its names: at
a name's position it spreads ~1/32 over all first (or last) names even with every other token shown.
This trains one arm for ``--steps`` steps on the 2-core CPU and reports, every 100 steps, the cloze
accuracy on the new tokens of 12 ``parallelbench/waiting_line/copy`` test items (one answer token
masked, the rest shown) in the official prompt and in dllm's own short format (``copy: [...]``), and
the accuracy of copying random token strings (``copy: <ids>`` -> the same ids, all of them masked).

``--start``: ``run`` continues the given checkpoint; ``mean`` / ``random`` grow dllm-tiny-lists to the
checkpoint's tokenizer with the new rows at the mean of their pieces' rows / drawn at the old rows' std.
``--data``: ``pb`` the ParallelBench copy/reverse/sort/insert_index items with dllm's own copy/reverse;
``short`` dllm's own copy/reverse format with ParallelBench's names; ``random`` 3/4 random-string
copies beside ``short``. The table rows are appended to ``--out``.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path

import torch

from dllm.eval.tasks import get_task
from dllm.eval.tasks.names import FULL_NAMES
from dllm.eval.tasks.waiting_line import _prompt, apply_op, format_list
from dllm.loading import load
from dllm.training.common import collate, encode_record
from dllm.training.mdlm_sft import mdlm_loss

PB_TASKS = ["parallelbench/waiting_line/copy", "parallelbench/waiting_line/reverse", "parallelbench/waiting_line/sort",
            "parallelbench/waiting_line/insert_index", "waiting_line/copy", "waiting_line/reverse"]


def grown_from_tiny(tok, rows: str):
    """dllm-tiny-lists with ``tok``'s new tokens appended: rows at the mean of their pieces or random."""
    m = load("dllm-tiny-lists")
    old, core, n_old = m.tokenizer, m.core, m.core.embed_tokens.weight.shape[0]
    parts = [[p for p in old(tok.convert_ids_to_tokens(i).replace("\u2581", " "), add_special_tokens=False)["input_ids"]
              if p != old.unk_token_id] for i in range(n_old, len(tok))]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in ("embed_tokens", "lm_head"):
            w = getattr(core, name).weight
            new = (torch.stack([w[p].mean(0) if p else w.mean(0) for p in parts]) if rows == "mean"
                   else torch.randn(len(parts), w.shape[1], generator=gen) * w[4:].std(0, keepdim=True))
            getattr(core, name).weight = torch.nn.Parameter(torch.cat([w, new]))
    core.embed_tokens.num_embeddings = core.lm_head.out_features = core.cfg.vocab_size = len(tok)
    m.tokenizer = tok
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--start", choices=["run", "mean", "random"], default="run")
    ap.add_argument("--data", choices=["pb", "short", "random"], default="pb")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--old-vocab", type=int, default=400, help="ids below are the parent's (dllm-tiny-lists: 400)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/tiny_printable/copy_ab.md")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    m = load(args.model)
    if args.start != "run":
        m = grown_from_tiny(m.tokenizer, args.start)
    tok, core = m.tokenizer, m.core
    eos, mask = tok.eos_token_id, m.mask_token_id
    rng = random.Random(0)
    copy_ids = tok("copy:", add_special_tokens=False)["input_ids"]

    def encoded(prompt: str, response: str, canvas: int):
        p, a = encode_record({"prompt": prompt, "response": response}, tok)
        return (p, a + [eos] * (canvas - len(a))) if len(a) < canvas else None

    def random_row(r: random.Random):  # a string of 3-16 random ids to copy: the copy map of every token
        s = [r.randrange(4, len(tok)) for _ in range(r.randint(3, 16))]
        return copy_ids + s, s + [eos] * (32 - len(s))

    if args.data == "pb":
        pool = [encoded(it.prompt, it.reference, 48) for t in PB_TASKS for it in get_task(t).items("train", 1500)]
    else:
        pool = []
        for i in range(8000):
            op, names = ("copy", "reverse")[i % 2], rng.sample(FULL_NAMES, 3 + i % 4)
            pool.append(encoded(_prompt(op, names, None, None), format_list(apply_op(op, names)), 32))
    pool = [x for x in pool if x]
    test = get_task("parallelbench/waiting_line/copy").items("test", 12)

    def logits(ids: list[int]) -> torch.Tensor:
        x = torch.tensor([ids])
        with torch.no_grad():
            return m(x, torch.arange(x.shape[1])[None], torch.ones_like(x, dtype=torch.bool))[0]

    def cloze(rewrite) -> float:  # the new tokens of the answer, one masked at a time, the rest shown
        hit = n = 0
        for it in test:
            p, a = encode_record({"prompt": rewrite(it.prompt), "response": it.reference}, tok)
            canvas = a + [eos] * (48 - len(a))
            for j in (j for j in range(len(a)) if a[j] >= args.old_vocab):
                x = p + canvas
                x[len(p) + j] = mask
                hit, n = hit + int(logits(x)[len(p) + j].argmax() == a[j]), n + 1
        return hit / n

    def random_copy() -> float:
        r, hit, n = random.Random(5), 0, 0
        for _ in range(20):
            p, a = random_row(r)
            k = a.index(eos)
            pred = logits(p + [mask] * k + a[k:])[len(p):len(p) + k].argmax(-1)
            hit, n = hit + int((pred == torch.tensor(a[:k])).sum()), n + k
        return hit / n

    def short_format(prompt: str) -> str:
        return "copy: " + re.findall(r"\[[^\]]*\]", prompt)[-1]

    out = Path(args.out)
    head = (f"# Copying the grown tokens (bench/tiny_printable/copy_ab.py)\n\nmodel: {args.model}\n\n"
            "| start | data | lr | step | name cloze, official prompt | name cloze, `copy: [...]` | random-string copy "
            "| s/step |\n|---|---|---|---|---|---|---|---|\n")
    before = out.read_text() if out.exists() else head

    rows = []

    def report(step: int, seconds: float) -> None:  # the table so far, rewritten whole (atomic) at each report
        arm = f"{args.start} | {args.data} | {args.lr:g}" if args.steps else "probe | - | -"  # --steps 0: measure only
        row = (f"| {arm} | {step} | {cloze(lambda s: s):.2f} | "
               f"{cloze(short_format):.2f} | {random_copy():.2f} | {seconds:.2f} |")
        print(row, flush=True)
        rows.append(row)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(before + "\n".join(rows) + "\n")
        tmp.replace(out)

    opt = torch.optim.AdamW(core.parameters(), lr=args.lr, weight_decay=0.01)
    gen, t0 = torch.Generator().manual_seed(0), time.time()
    report(0, 0.0)
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, step / 20)
        n_random = 3 * args.batch // 4 if args.data == "random" else 0
        batch = [random_row(rng) for _ in range(n_random)] + rng.sample(pool, args.batch - n_random)
        loss = mdlm_loss(m, *collate(batch, eos, "cpu"), gen, mask)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(core.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            report(step, (time.time() - t0) / step)


if __name__ == "__main__":
    main()
