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
from dllm.apps.bench_smol import decode, heldout_prompts, write_atomic

SUB_BLOCK = 8  # the sub-block cache's window (Fast-dLLM v2's), inside the model's blocks of 32
GEN = 64


def timed(model, tag: str, log: dict) -> None:
    """Wrap ``model.forward_cached`` so that each call's wall time lands in log[(tag, columns fed)], or in
    log[(tag, 0)] for a generation's first forward: the one that feeds from column 0 (the prompt prefill)."""
    inner = model.forward_cached

    def forward_cached(x, idx, *args, **kwargs):
        t = time.perf_counter()
        out = inner(x, idx, *args, **kwargs)
        log[(tag, 0 if int(idx[:, 0].min()) == 0 else x.shape[1])].append(time.perf_counter() - t)
        return out

    model.forward_cached = forward_cached


def kind(tag: str, width: int, block: int) -> str:
    if width == 0:
        return f"{tag}: prompt prefill" + ("" if tag == "parent" else " + first block")
    if tag == "parent":
        return "parent: one column" if width == 1 else f"parent: {width} columns"
    if width <= SUB_BLOCK + 1:
        return f"student: sub-block step ({SUB_BLOCK} + 1 columns)"
    if width in (block, block + 1):
        return f"student: sub-block refresh (the {block}-column block)"
    if width == 2 * block:
        return f"student: block entry (finished block + new block, {2 * block} columns)"
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
    timed(parent, "parent", log)
    timed(student, "student", log)
    decoders = {"parent": (parent, dllm.samplers.LLaDASampler(), "block", {"gen_length": GEN}),
                "student": (student, dllm.samplers.ThresholdSampler(threshold=a.threshold, fallback="leftmost"),
                            "sub_block", {"gen_length": GEN, "block_length": SUB_BLOCK})}
    for timed_pass in (False, True):  # the first pass packs weights and grows buffers
        log.clear()
        tot = {tag: collections.Counter() for tag in decoders}
        for k, r in enumerate(tqdm(rows, desc="timed" if timed_pass else "warm-up")):
            for tag in list(decoders)[k % 2:] + list(decoders)[:k % 2]:  # taking turns
                model, sampler, cache, kw = decoders[tag]
                d = decode(model, [r], sampler, 1, kw, cache)
                tot[tag].update({key: d[key] for key in ("gen", "nfe", "wall")})
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
        w, n, g = tot[tag]["wall"], tot[tag]["nfe"], tot[tag]["gen"]
        lines.append(f"| {tag} | {n:.0f} | {g:.0f} | {g / n:.2f} | {1e3 * w / n:.1f} | {g / w:.1f} |")
    ratio = (tot["student"]["gen"] / tot["student"]["wall"]) / (tot["parent"]["gen"] / tot["parent"]["wall"])
    lines += ["", f"Student tokens/s ÷ parent's: **{ratio:.2f}×**."]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "bench.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
