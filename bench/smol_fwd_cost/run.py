"""Where dllm-smol-bd's decode time goes against its AR parent's: every ``forward_cached`` call timed and
grouped by the number of columns it feeds, in one process, the two decoders taking turns prompt by prompt
(one untimed pass over the prompts first). Writes bench.md.

A sub-block decode (Fast-dLLM v2: windows of 8 inside model blocks of 32) has three kinds of forward:
the sub-block's narrow steps (its 8 columns + the one left of it), the refresh that starts each sub-block
(the whole 32-column model block, recomputed because the block attends both ways), and the block entry
(the finished block written from its final tokens + the new block's refresh, 64 columns). The parent feeds
one column a forward. The student's "fwd cost vs parent" in ``dllm bench_smol`` is the mix of these.

    python bench/smol_fwd_cost/run.py [--dtype bfloat16] [--prompts 24] [--threshold 0.7] [--out bench/smol_fwd_cost]
"""

from __future__ import annotations

import argparse
import collections
import platform
import time
from pathlib import Path

import torch
from tqdm import tqdm

import dllm
from dllm.apps.bench_smol import heldout_prompts, write_atomic


def timed(model, tag: str, log: dict, fresh: dict) -> None:
    """Wrap ``model.forward_cached`` so that each call's wall time lands in log[(tag, columns fed)], or in
    log[(tag, 0)] for a generation's first forward (the prompt prefill; fresh[tag] is set before each)."""
    inner = model.forward_cached

    def forward_cached(x, *args, **kwargs):
        t = time.perf_counter()
        out = inner(x, *args, **kwargs)
        log[(tag, 0 if fresh[tag] else x.shape[1])].append(time.perf_counter() - t)
        fresh[tag] = False
        return out

    model.forward_cached = forward_cached


def kind(tag: str, width: int, block: int) -> str:
    if width == 0:
        return f"{tag}: prompt prefill" + ("" if tag == "parent" else " + first block")
    if tag == "parent":
        return "parent: one column" if width == 1 else f"parent: {width} columns"
    if width <= block // 4 + 1:
        return "student: sub-block step (8 + 1 columns)"
    if width == block or width == block + 1:
        return "student: sub-block refresh (the 32-column block)"
    if width == 2 * block:
        return "student: block entry (finished block + new block, 64 columns)"
    return f"student: {width} columns"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--student", default="dllm-smol-bd")
    ap.add_argument("--out", default="bench/smol_fwd_cost")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = heldout_prompts("data/smol/prompts.jsonl", a.prompts, "heldout", ["gsm8k", "lists"])
    parent = dllm.load("smollm2-135m-instruct", dtype=a.dtype)
    student = dllm.load(a.student, dtype=a.dtype)
    log: dict = collections.defaultdict(list)
    fresh: dict = {}
    timed(parent, "parent", log, fresh)
    timed(student, "student", log, fresh)
    decoders = [("parent", parent, dllm.samplers.LLaDASampler(), "block", {}),
                ("student", student, dllm.samplers.ThresholdSampler(threshold=a.threshold, fallback="leftmost"),
                 "sub_block", {"block_length": 8})]
    tot = collections.defaultdict(float)
    for timed_pass in (False, True):
        log.clear()
        tot.clear()
        for k, r in enumerate(tqdm(rows, desc="timed" if timed_pass else "warm-up")):
            for tag, model, sampler, cache, kw in decoders[k % 2:] + decoders[:k % 2]:  # taking turns
                fresh[tag] = True
                t = time.perf_counter()
                with torch.no_grad():
                    res = dllm.generate(model, [r["prompt"]], sampler, cache=cache, gen_length=64, **kw)
                tot[tag, "wall"] += time.perf_counter() - t
                tot[tag, "nfe"] += res.stats[0].nfe
                tot[tag, "gen"] += res.stats[0].gen_tokens
    block = student.block_size
    groups: dict = collections.defaultdict(list)
    for (tag, width), times in log.items():
        groups[kind(tag, width, block)] += times
    one = sum(groups["parent: one column"]) / max(len(groups["parent: one column"]), 1)
    lines = [f"# dllm-smol-bd's forwards against its parent's ({a.prompts} held-out scored prompts, {a.dtype}, "
             f"threshold {a.threshold}, sub-block cache, batch 1, {a.threads} threads)", "",
             f"Command: `python bench/smol_fwd_cost/run.py --dtype {a.dtype} --prompts {a.prompts} "
             f"--threshold {a.threshold}` on {platform.processor() or platform.machine()}, torch {torch.__version__}",
             "", "| forward | count | mean ms | vs one parent column | share of its decoder's forward time |",
             "|---|---|---|---|---|"]
    share = {tag: sum(sum(v) for (t, _), v in log.items() if t == tag) for tag in ("parent", "student")}
    for name in sorted(groups):
        ts = groups[name]
        tag = name.split(":")[0]
        lines.append(f"| {name} | {len(ts)} | {1e3 * sum(ts) / len(ts):.1f} | {sum(ts) / len(ts) / one:.2f}x | "
                     f"{100 * sum(ts) / share[tag]:.0f} % |")
    lines += ["", "| decoder | forwards | generated tokens | tok/fwd | ms a forward (all of decode) | tok/s |",
              "|---|---|---|---|---|---|"]
    for tag in ("parent", "student"):
        w, n, g = tot[tag, "wall"], tot[tag, "nfe"], tot[tag, "gen"]
        lines.append(f"| {tag} | {n:.0f} | {g:.0f} | {g / n:.2f} | {1e3 * w / n:.1f} | {g / w:.1f} |")
    ratio = (tot["student", "gen"] / tot["student", "wall"]) / (tot["parent", "gen"] / tot["parent", "wall"])
    lines += ["", f"Student tokens/s ÷ parent's: **{ratio:.2f}×**."]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "bench.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
