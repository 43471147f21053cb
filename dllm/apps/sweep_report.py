"""``dllm sweep_report <sweep dir>``: gather every run of a ``dllm eval --multirun`` sweep into one
CSV, one Markdown table and two Pareto plots (accuracy vs tokens/forward, accuracy vs tokens/s)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from dllm.errors import DllmError
from dllm.eval.plots import pyplot

COLUMNS = ["run", "accuracy", "nfe", "tokens_per_forward", "real_tokens_per_forward", "tokens_per_second", "latency",
           "items", "cache", "block_length", "gen_length", "model", "sampler"]


def gather(folder: Path) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in sorted(folder.rglob("summary.json"))]  # values with "/" nest folders
    if not rows:
        raise DllmError(f"no finished runs (*/summary.json) under {folder}: run `dllm eval --multirun ... "
                        f"sweep_dir={folder}` first")
    return rows


def pareto(rows: list[dict], x: str) -> set[str]:
    """Runs no other run beats on both accuracy and ``x``."""
    front = set()
    for r in rows:
        if not any(o["accuracy"] >= r["accuracy"] and o[x] >= r[x] and (o["accuracy"], o[x]) != (r["accuracy"], r[x])
                   for o in rows):
            front.add(r["run"])
    return front


def short_labels(rows: list[dict]) -> dict[str, str]:
    """Run name -> only the overrides that differ between runs (``cache=dual, threshold=0.8``)."""
    parsed = {r["run"]: dict(kv.partition("=")[::2] for kv in r["run"].split(",")) for r in rows}
    keys = {k for d in parsed.values() for k in d}
    varying = [k for k in sorted(keys) if len({d.get(k) for d in parsed.values()}) > 1]
    return {run: ", ".join(f"{k.split('.')[-1]}={d.get(k)}" for k in varying) or run for run, d in parsed.items()}


def plot(rows: list[dict], x: str, label: str, path: Path, title: str) -> None:
    plt = pyplot()

    front = pareto(rows, x)
    names = short_labels(rows)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for r in rows:
        on = r["run"] in front
        ax.scatter(r[x], r["accuracy"], s=70 if on else 35, color="C3" if on else "C0", zorder=3)
        ax.annotate(names[r["run"]], (r[x], r["accuracy"]), textcoords="offset points", xytext=(5, 3), fontsize=6)
    pts = sorted((r[x], r["accuracy"]) for r in rows if r["run"] in front)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], color="C3", lw=1, label="Pareto front")
    ax.set_xlabel(label)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(folder: str | Path, out: str | Path | None = None) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise DllmError(f"sweep_dir {folder} is not a folder: give the sweep_dir of a `dllm eval --multirun` sweep")
    out = Path(out) if out else folder
    if out.exists() and not out.is_dir():
        raise DllmError(f"--out {out} is a file, not a folder")
    rows = gather(folder)  # before anything is made: a wrong folder creates nothing
    out.mkdir(parents=True, exist_ok=True)
    with (out / "sweep.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    front = pareto(rows, "tokens_per_forward") | pareto(rows, "tokens_per_second")
    lines = [f"# Sweep {folder}", "", f"{len(rows)} runs; ★ = on a Pareto front (accuracy vs tokens/forward or "
             "tokens/s).", "", "| run | acc % | NFE | tok/fwd | real tok/fwd | tok/s | latency s | items |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["accuracy"]):
        star = " ★" if r["run"] in front else ""
        lines.append(f"| {r['run']}{star} | {r['accuracy']:.1f} | {r['nfe']:.2f} | {r['tokens_per_forward']:.2f} | "
                     f"{r['real_tokens_per_forward']:.2f} | {r['tokens_per_second']:.1f} | {r['latency']:.3f} | "
                     f"{r['items']} |")
    lines += ["", "![accuracy vs tokens per forward](pareto_tpf.png)", "",
              "![accuracy vs tokens per second](pareto_tps.png)", ""]
    (out / "sweep.md").write_text("\n".join(lines))
    plot(rows, "tokens_per_forward", "tokens per forward", out / "pareto_tpf.png",
         f"{folder}: accuracy vs tokens/forward")
    plot(rows, "tokens_per_second", "generated tokens per second", out / "pareto_tps.png",
         f"{folder}: accuracy vs tokens/s")
    return out / "sweep.md"


def main() -> None:
    ap = argparse.ArgumentParser(prog="dllm sweep_report", description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir")
    ap.add_argument("--out", default=None, help="where to write sweep.csv/.md and the PNGs (default: the sweep dir)")
    args = ap.parse_args(sys.argv[1:])
    try:
        md = report(args.sweep_dir, args.out)
    except DllmError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(md.read_text())
    print(f"wrote {md}")
