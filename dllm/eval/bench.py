"""Samplers side by side on the same items in one process, always with the one-token-per-step
baseline and the oracle ceiling; a Markdown table and a Pareto plot (accuracy vs tokens/forward).

Samplers take turns batch by batch (baseline, then the others, then the oracle on the baseline's
outputs), so machine noise hits every sampler alike and speed ratios within one table hold.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tqdm import tqdm

from dllm.eval.plots import pyplot
from dllm.eval.runner import run_batch, summarize
from dllm.eval.tasks import get_task
from dllm.samplers import OracleSampler


def bench(model, entries: dict[str, dict], baseline: str, tasks: list[str], n_items: int, gen: dict,
          batch_size: int = 16, progress: bool = True, rows_out: dict | None = None,
          oracle: bool = True) -> dict[str, dict[str, dict]]:
    """entries: name -> {"sampler": Sampler, **generate overrides (steps, stop_at_eos, cache, ...)}.
    Returns {sampler: {task: summary}} with "oracle" added; the oracle's reference is the
    baseline's output on each item (decoded with the baseline's settings). ``rows_out`` receives
    the per-item rows of every entry."""
    assert baseline in entries, f"baseline {baseline!r} must be one of the entries {list(entries)}"
    order = [baseline] + [n for n in entries if n != baseline]
    items = [it for name in tasks for it in get_task(name).items("test", n_items)]
    rows: dict[str, list[dict]] = {n: [] for n in order + (["oracle"] if oracle else [])}
    def kwargs(name):
        return {**gen, **{k: v for k, v in entries[name].items() if k not in ("sampler", "model")}}

    def model_of(name):  # an entry may bring its own model (a distilled student beside its teacher)
        return entries[name].get("model", model)

    for name in order:  # warm-up (thread pools, allocator) outside the timed loop
        run_batch(model_of(name), entries[name]["sampler"], items[:1], kwargs(name))
    bar = tqdm(total=len(items), desc="bench", disable=not progress)
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        ref = None
        for name in order:
            e = entries[name]
            out, res = run_batch(model_of(name), e["sampler"], chunk, kwargs(name))
            rows[name] += out
            if name == baseline:
                ref = res.ids
        if oracle:  # off where the baseline is an AR model (its ceiling is one token per forward)
            out, _ = run_batch(model_of(baseline), OracleSampler(), chunk, kwargs(baseline), reference=ref)
            rows["oracle"] += out
        bar.update(len(chunk))
    bar.close()
    for name, rs in rows.items():  # output identical to the baseline's, item by item
        for r, b in zip(rs, rows[baseline]):
            r["same"] = r["output"] == b["output"]
    if rows_out is not None:
        rows_out.update(rows)
    result = {}
    for name, rs in rows.items():
        result[name] = {t: summarize([r for r in rs if r["task"] == t]) for t in tasks}
        result[name]["all"] = summarize(rs)
    return result


def bench_table(result: dict[str, dict[str, dict]], baseline: str) -> str:
    base = result[baseline]
    head = ["task", "sampler", "acc %", "NFE", "tok/fwd", "real tok/fwd", "tok/s", "speed-up", "= baseline %",
            "fwd tokens", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    tasks = list(base)
    for t in tasks:
        for name, per_task in result.items():
            s = per_task[t]
            b = base[t]["tokens_per_second"]
            speed = f"{s['tokens_per_second'] / b:.2f}x" if b > 0 else "—"
            lines.append(f"| {t} | {name} | {s['accuracy']:.1f} | {s['nfe']:.2f} | {s['tokens_per_forward']:.2f} | "
                         f"{s['real_tokens_per_forward']:.2f} | {s['tokens_per_second']:.1f} | {speed} | "
                         f"{s['same_as_baseline']:.0f} | {s['forward_tokens']:.0f} | {s['wall_time']:.2f} |")
    return "\n".join(lines)


def pareto_plot(result: dict[str, dict[str, dict]], path: Path, title: str) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, per_task in result.items():
        s = per_task["all"]
        marker = "*" if name == "oracle" else "o"
        ax.scatter(s["tokens_per_forward"], s["accuracy"], s=140 if marker == "*" else 60, marker=marker, zorder=3)
        ax.annotate(name, (s["tokens_per_forward"], s["accuracy"]), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)
    ax.set_xlabel("tokens per forward (answer area)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=10)  # a long title wraps, not cut at the edge
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def overview_table(result: dict[str, dict[str, dict]], baseline: str) -> str:
    """One row per sampler over all tasks, with ratios to the baseline and to the oracle."""
    base, orc = result[baseline]["all"], result.get("oracle", {}).get("all")
    lines = ["| sampler | acc % | Δacc | NFE | fewer forwards | tok/fwd | % of oracle tok/fwd | tok/s | speed-up "
             "| = baseline % |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, per_task in result.items():
        s = per_task["all"]
        of_oracle = f"{100 * s['tokens_per_forward'] / max(orc['tokens_per_forward'], 1e-9):.0f}" if orc else "–"
        lines.append(f"| {name} | {s['accuracy']:.1f} | {s['accuracy'] - base['accuracy']:+.1f} | {s['nfe']:.2f} | "
                     f"{base['nfe'] / max(s['nfe'], 1e-9):.2f}x | {s['tokens_per_forward']:.2f} | {of_oracle} | "
                     f"{s['tokens_per_second']:.1f} | "
                     f"{s['tokens_per_second'] / max(base['tokens_per_second'], 1e-9):.2f}x | "
                     f"{s['same_as_baseline']:.0f} |")
    return "\n".join(lines)


def write_outputs(result, baseline: str, out_dir: str | Path, title: str, command: str) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "bench.md"
    import os
    import platform

    import torch

    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} with "
               f"{torch.get_num_threads()} threads")
    md.write_text(f"# {title}\n\nCommand: `{command}`  \nMachine: {machine}; all samplers in one process, "
                  f"taking turns batch by batch.\n\n## All tasks\n\n{overview_table(result, baseline)}\n\n"
                  f"![pareto](pareto.png)\n\n## Per task\n\n{bench_table(result, baseline)}\n")
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    pareto_plot(result, out / "pareto.png", title)
    return md
