"""KV cache policies side by side: {caches} × {samplers} at several generation lengths, in one process.

At each generation length every (cache, sampler) entry decodes the same items, taking turns batch
by batch (:func:`dllm.eval.bench.bench`), so machine noise hits them alike. Per entry: accuracy,
NFE, tokens per forward, generated tokens/s and its ratio to no cache + the first sampler, time
per decode step, agreement with the same sampler without a cache (identical outputs, accuracy
difference) and the cache's bytes per row. Then one forward of two entries split into attention,
MLP, the rest of the model and the decode loop's own time.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections import defaultdict
from pathlib import Path

import torch

from dllm.eval.bench import bench
from dllm.eval.plots import pyplot
from dllm.eval.tasks import get_task
from dllm.generate import generate


def step_ms(rows: list[dict]) -> float:
    """Milliseconds per decode step: batch wall time over the batch's forward count (rows of one
    batch are consecutive and decode together, so the batch runs max(NFE) forwards)."""
    wall, steps, i = 0.0, 0, 0
    while i < len(rows):
        batch = rows[i:i + rows[i]["batch_size"]]
        wall += batch[0]["time"]
        steps += max(r["nfe"] for r in batch)
        i += len(batch)
    return 1000 * wall / max(steps, 1)


def cache_bytes_per_row(model, length: int) -> int:
    """2 (K and V) × layers × kv heads × head dim × length × bytes."""
    c = model.core.cfg
    return 2 * c.num_layers * c.num_kv_heads * c.head_dim * length * model.core.embed_tokens.weight.element_size()


def cache_bench(model, samplers: dict, caches: list[str], tasks: list[str], n_items: int, gen_lengths: list[int],
                decode: dict, batch_size: int, progress: bool = True) -> dict:
    """-> {gen_length: {entry: figures}}; entry = "<cache> + <sampler name>"; the first cache and
    the first sampler form the reference entry (speed-ups divide by its tokens/s). ``decode``: the
    generate() keywords every entry shares; gen_length comes from ``gen_lengths``, the cache from
    ``caches``, and every position is decoded (stop_at_eos=False), so caches are compared on all of it."""
    first = next(iter(samplers))
    items = [it for t in tasks for it in get_task(t).items("test", n_items)]
    prompt_max = max(len(model.tokenizer(it.prompt)["input_ids"]) for it in items)
    out = {}
    for g in gen_lengths:
        entries = {f"{c} + {s}": {"sampler": samp, "cache": c} for s, samp in samplers.items() for c in caches}
        base = f"{caches[0]} + {first}"
        rows: dict[str, list[dict]] = {}
        every_position = {**decode, "gen_length": g, "stop_at_eos": False}
        res = bench(model, entries, base, tasks, n_items, every_position, batch_size, progress, rows)
        per = {}
        for name in entries:
            cache, s = name.split(" + ")
            uncached = f"{caches[0]} + {s}"
            fig = dict(res[name]["all"])
            same = [a["output"] == b["output"] for a, b in zip(rows[name], rows[uncached])]
            fig.update(cache=cache, sampler=s, ms_per_step=step_ms(rows[name]),
                       same_as_uncached=100.0 * sum(same) / len(same),
                       acc_vs_uncached=fig["accuracy"] - res[uncached]["all"]["accuracy"],
                       speedup=fig["tokens_per_second"] / max(res[base]["all"]["tokens_per_second"], 1e-9),
                       cache_bytes_per_row=0 if cache == "none" else cache_bytes_per_row(model, prompt_max + g))
            per[name] = fig
        out[g] = per
    return out


def profile(model, prompts: list[str], sampler, cache: str, gen: dict) -> dict:
    """One generation with timers on every attention and MLP module and on the whole model, split
    by forward kind: ``full`` (the whole canvas: every uncached forward, and a cache's block
    refresh) and ``cached`` (a cached step feeding only part of the canvas). Milliseconds per forward
    in attention, MLP and the rest of the model (embedding, norms, vocabulary projection), and the
    decode loop's own time outside the model (sampler, bookkeeping, Python) per forward."""
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    cur: dict[str, float] = defaultdict(float)
    forwards: list[dict] = []
    handles = []

    def timed(module, key):
        def pre(_m, args):
            sync()
            cur["_t" + key] = time.perf_counter()
            if key == "model":
                cur["fed"] = args[0].shape[1]

        def post(_m, _a, _o):
            sync()
            cur[key] += time.perf_counter() - cur["_t" + key]
            if key == "model":
                forwards.append({"fed": cur["fed"], "model": cur["model"], "attention": cur["attention"],
                                 "mlp": cur["mlp"]})
                cur["model"] = cur["attention"] = cur["mlp"] = 0.0

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))

    timed(model.core, "model")
    for layer in model.core.layers:
        timed(layer.self_attn, "attention")
        timed(layer.mlp, "mlp")
    try:
        start = time.perf_counter()
        generate(model, prompts, sampler, cache=cache, **gen)
        sync()
        wall = time.perf_counter() - start
    finally:
        for h in handles:
            h.remove()
    width = max(f["fed"] for f in forwards)
    out = {"forwards": len(forwards), "ms_per_forward": 1000 * wall / len(forwards),
           "loop_ms": 1000 * (wall - sum(f["model"] for f in forwards)) / len(forwards)}
    for kind, fs in (("full", [f for f in forwards if f["fed"] == width]),
                     ("cached", [f for f in forwards if f["fed"] < width])):
        if fs:
            k = len(fs)
            out[kind] = {"forwards": k, "fed_tokens": sum(f["fed"] for f in fs) / k,
                         "model_ms": 1000 * sum(f["model"] for f in fs) / k,
                         "attention_ms": 1000 * sum(f["attention"] for f in fs) / k,
                         "mlp_ms": 1000 * sum(f["mlp"] for f in fs) / k,
                         "other_model_ms": 1000 * sum(f["model"] - f["attention"] - f["mlp"] for f in fs) / k}
    return out


def machine(model) -> str:
    dev = torch.cuda.get_device_name() if model.device.type == "cuda" else \
        f"{platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"
    return f"{dev}, torch {torch.__version__}"


def peak_memory_mb(model) -> float:
    if model.device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def tables(result: dict, profiles: dict) -> str:
    lines = []
    for g, per in result.items():
        lines += [f"### gen_length {g}", "",
                  "| cache + sampler | acc % | Δacc vs uncached | = uncached % | NFE | tok/fwd | tok/s | speed-up | "
                  "ms / step | fwd tokens | cache KiB / row |", "|" + "---|" * 11]
        for name, f in per.items():
            lines.append(f"| {name} | {f['accuracy']:.1f} | {f['acc_vs_uncached']:+.1f} | "
                         f"{f['same_as_uncached']:.0f} | "
                         f"{f['nfe']:.1f} | {f['tokens_per_forward']:.2f} | {f['tokens_per_second']:.1f} | "
                         f"{f['speedup']:.2f}x | {f['ms_per_step']:.1f} | {f['forward_tokens']:.0f} | "
                         f"{f['cache_bytes_per_row'] / 1024:.0f} |")
        lines.append("")
    names = list(next(iter(result.values()))) if result else []
    lines += [] if not result else ["### ms per decode step against generation length", "",
              "| cache + sampler | " + " | ".join(f"gen {g}" for g in result) + " | growth (last / first) |",
              "|" + "---|" * (len(result) + 2)]
    for name in names:  # (empty without a bench: profiles only)
        ms = [result[g][name]["ms_per_step"] for g in result]
        lines.append(f"| {name} | " + " | ".join(f"{m:.1f}" for m in ms) + f" | {ms[-1] / ms[0]:.2f}x |")
    lines.append("")
    if profiles:
        lines += ["### Where a forward's time goes (ms per forward, by kind)", "",
                  "`full` = the whole canvas (every uncached forward; a cache's block refresh), `cached` = a "
                  "cached step; decode loop = time outside the model per forward, over all forwards.", "",
                  "| entry | kind | forwards | tokens fed / row | model | attention | MLP | rest of model "
                  "| decode loop |",
                  "|" + "---|" * 9]
        for name, p in profiles.items():
            for kind in ("full", "cached"):
                if kind in p:
                    k = p[kind]
                    lines.append(f"| {name} | {kind} | {k['forwards']} | {k['fed_tokens']:.0f} | {k['model_ms']:.2f} | "
                                 f"{k['attention_ms']:.2f} | {k['mlp_ms']:.2f} | {k['other_model_ms']:.2f} | "
                                 f"{p['loop_ms']:.2f} |")
    return "\n".join(lines)


def step_plot(result: dict, path: Path, title: str) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    lengths = list(result)
    for name in result[lengths[0]]:
        ax.plot(lengths, [result[g][name]["ms_per_step"] for g in lengths], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(lengths, [str(g) for g in lengths])
    ax.set_xlabel("generation length (tokens)")
    ax.set_ylabel("ms per decode step")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(result: dict, profiles: dict, out_dir: str | Path, title: str, command: str, model, extra: str = "") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "bench.md"
    md.write_text(f"# {title}\n\nCommand: `{command}`  \nMachine: {machine(model)}; every entry in one process, "
                  f"taking turns batch by batch; every position decoded (stop_at_eos=false), greedy.  \n"
                  f"Peak memory of the process: {peak_memory_mb(model):.0f} MiB.\n\n{extra}"
                  f"{'![ms per step](step_time.png)' if result else ''}\n\n{tables(result, profiles)}\n")
    (out / "bench.json").write_text(json.dumps({"results": {str(g): v for g, v in result.items()},
                                                "profiles": profiles}, indent=1))
    if result:
        step_plot(result, out / "step_time.png", title)
    return md
