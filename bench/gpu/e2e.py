"""Issue 19 on a lent GPU: decode tokens/s end to end at LLaDA-8B and Fast-dLLM v2 (7B) shapes.

    python bench/gpu/e2e.py OUT_DIR [--models llada8b,fast_dllm_v2_7b] [--batches 1,8,32]
                            [--contexts 1024,4096] [--gen-length 64] [--nocache-steps 4] [--no-kernel]

Randomly initialised models with the real shapes, bf16 (at a fixed number of tokens per step the
weights don't change the speed). Each row: a prompt of ``context`` random tokens, ``gen_length``
new tokens in blocks (LLaDA: 32-token blocks; Fast-dLLM v2: its 32-token model blocks, and 8-token
sub-blocks for ``sub_block``), decoded by :class:`dllm.samplers.LLaDASampler` on a fixed schedule:
one token per step (``steps = gen_length``) and four (``steps = gen_length / 4``). Timed: the
engine's steps (``dllm.engine.Engine``, the loop ``dllm.generate`` drives), from the first step to
the last, block refreshes and graph captures included; tokens/s = batch × tokens committed per row
/ seconds.

Variants (the cache's attention, with the decode loop the same):
  none            no cache: the whole canvas every step. Every step costs the same forward, so it runs
                  only the first ``--nocache-steps`` steps (an 8B forward over 32 × 4K tokens takes
                  seconds) and its tokens/s is those steps' tokens / their time
  <c>_sdpa        cache <c> with the torch reference kernels (``DLLM_KERNELS=torch``): the write by
                  indexing, the attention by ``F.scaled_dot_product_attention`` over the cache
  <c>_triton      cache <c> with dllm's Triton kernels (the write fused into the attention)
  <c>_graphs      the same plus CUDA graphs for the decode steps (``DLLM_CUDA_GRAPHS=1``)
with <c> = dual for LLaDA, block and sub_block for Fast-dLLM v2. A run that does not fit in memory
is recorded as OOM and the others go on. ``--kernel`` (default on) adds the attention alone at 4K
context, batch 1: fused write + attention, the two launches, and SDPA, with bytes of K/V read per µs.

Writes e2e.json (every run, as it finishes) and e2e.md (tables of tokens/s and ratios).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import time
from pathlib import Path

import torch

MODELS = {
    # LLaDA-8B-Instruct's config.json: bidirectional, no QKV bias, mask id 126336
    "llada8b": dict(core=dict(vocab_size=126464, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32,
                              intermediate_size=12288, rope_theta=500000.0, max_length=8192),
                    family="llada", mask=126336, ends=(126081, 126348), pad=126081, shifted=False,
                    caches=(("dual", 32),)),
    # Fast_dLLM_v2_7B (Qwen2.5-7B-Instruct + |<MASK>|): GQA 28/4, QKV bias, 32-token blocks, shifted
    "fast_dllm_v2_7b": dict(core=dict(vocab_size=152064, hidden_size=3584, num_layers=28, num_heads=28,
                                      num_kv_heads=4, intermediate_size=18944, rope_theta=1000000.0,
                                      rms_norm_eps=1e-6, qkv_bias=True, max_length=32768,
                                      attention="block_causal", block_size=32),
                            family="fast_dllm_v2", mask=151665, ends=(151645, 151643), pad=151643, shifted=True,
                            caches=(("block", 32), ("sub_block", 8))),
}
SCHEDULES = (("1/step", 1), ("4/step", 4))


class NullTokenizer:
    """The engine decodes nothing; results are ids (random weights produce no text worth reading)."""

    def decode(self, ids, skip_special_tokens=True):
        return ""


def build(name: str):
    from dllm.models.core import CoreConfig, Transformer
    from dllm.models.wrapper import DiffusionLM

    spec = MODELS[name]
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            core = Transformer(CoreConfig(**spec["core"])).eval()  # default init: the speed doesn't read weights
    finally:
        torch.set_default_dtype(torch.float32)
    return DiffusionLM(core, NullTokenizer(), family=spec["family"], mask_token_id=spec["mask"],
                       eos_token_ids=spec["ends"], pad_token_id=spec["pad"], shifted=spec["shifted"], name=name)


@contextlib.contextmanager
def variant_env(kernel: str, graphs: bool):
    from dllm import kernels

    old = os.environ.get("DLLM_CUDA_GRAPHS")
    os.environ["DLLM_CUDA_GRAPHS"] = "1" if graphs else "0"  # read when the engine builds its Forwarder
    try:
        with kernels.use(kernel):
            yield
    finally:
        if old is None:
            os.environ.pop("DLLM_CUDA_GRAPHS", None)
        else:
            os.environ["DLLM_CUDA_GRAPHS"] = old


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def decode(model, batch: int, context: int, cache: str, block: int, per_step: int, gen_length: int,
           max_steps: int | None) -> dict:
    """One timed decode: ``batch`` rows of ``context`` prompt tokens; -> seconds, steps, tokens/s."""
    from dllm.engine import Engine, row, settings
    from dllm.samplers import LLaDASampler

    g = torch.Generator().manual_seed(context + batch)
    specials = torch.tensor([model.mask_token_id, model.pad_token_id, *model.eos_token_ids])
    ids = torch.randint(0, min(100000, model.core.cfg.vocab_size), (batch, context), generator=g)
    safe = next(i for i in range(model.core.cfg.vocab_size) if i not in specials)
    prompts = ids.masked_fill(torch.isin(ids, specials), safe).tolist()  # no MASK or end token in a prompt
    s = settings(model, LLaDASampler(), gen_length=gen_length, block_length=block, steps=gen_length // per_step,
                 cache=cache, stop_at_eos=False)
    rows = [row(model, p, s) for p in prompts]
    engine = Engine(model)
    engine.reserve(batch, max(r.width for r in rows), batch if s.cache.cached else 0, max(r.end for r in rows))
    for r in rows:
        engine.admit(r)
    sync()
    t0, steps = time.perf_counter(), 0
    while engine.live and (max_steps is None or steps < max_steps):
        engine.step()
        steps += 1
    sync()
    sec = time.perf_counter() - t0
    board = engine.board
    tokens = sum(gen_length if r.done else int(((board.x[r.slot] != board.mask_id) & board.gen[r.slot]).sum())
                 for r in rows)  # committed answer tokens (a capped run stops mid-generation)
    graphs = engine.forward.graphs
    return dict(seconds=sec, steps=steps, tokens=tokens, tok_s=tokens / sec,
                graph_counts=dict(graphs.counts) if graphs is not None else None)


def variants(spec: dict):
    yield "none", "none", 32, "torch", False  # no cache: plain SDPA forwards, no cache kernels involved
    for cache, block in spec["caches"]:
        yield f"{cache}_sdpa", cache, block, "torch", False
        yield f"{cache}_triton", cache, block, "triton", False
        yield f"{cache}_graphs", cache, block, "triton", True


def run_model(name: str, args, out: dict, save) -> None:
    model = build(name)
    spec = MODELS[name]
    with variant_env("triton", True):  # warm-up: Triton compiles, cuBLAS heuristics, CUDA graph pools
        for _, cache, block, _, _ in variants(spec):
            decode(model, 1, 256, cache, block, 4, 32, 3)
    for batch in args.batches:
        for context in args.contexts:
            for sched, per_step in SCHEDULES:
                for label, cache, block, kernel, graphs in variants(spec):
                    rec = dict(model=name, batch=batch, context=context, schedule=sched, variant=label)
                    try:
                        with variant_env(kernel, graphs):
                            rec.update(decode(model, batch, context, cache, block, per_step, args.gen_length,
                                              args.nocache_steps if cache == "none" else None))
                    except torch.cuda.OutOfMemoryError:
                        rec["error"] = "OOM"
                    gc.collect()  # the run's engine, store and graphs
                    torch.cuda.empty_cache()
                    out["runs"].append(rec)
                    print(json.dumps(rec), flush=True)
                    save()
    del model
    torch.cuda.empty_cache()


def cuda_time(fn, iters: int = 20, warmup: int = 5) -> float:
    """Median milliseconds of fn() over ``iters`` calls, CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def kernel_alone(out: dict) -> None:
    """One layer's attention at LLaDA-8B heads (32 × 128), batch 1, a 32-token window over 4K cached
    tokens, bf16: fused, two launches, SDPA over the cache; K/V bytes read per second."""
    import torch.nn.functional as F

    from dllm.kernels.cache_write.triton import cache_write_triton
    from dllm.kernels.fused_window_attention.triton import fused_window_attention_triton
    from dllm.kernels.window_attention.triton import window_attention_triton

    res = []
    for context in (1024, 4096):
        total, w = context + 32, 32
        bf = dict(device="cuda", dtype=torch.bfloat16)
        kc, vc = torch.randn(1, 32, total, 128, **bf), torch.randn(1, 32, total, 128, **bf)
        q, k, v = torch.randn(1, 32, w, 128, **bf), torch.randn(1, 32, w, 128, **bf), torch.randn(1, 32, w, 128, **bf)
        one = lambda x: torch.tensor([x], device="cuda")  # noqa: E731
        rows, dst, src, cnt, kv_len, q0 = one(0), one(context), one(0), one(w), one(total), one(context)

        def two():
            cache_write_triton(kc, vc, k, v, rows, dst, src, cnt)
            return window_attention_triton(q, kc, vc, rows, kv_len, q0, max_len=total)

        def sdpa():
            kc[0, :, context:total], vc[0, :, context:total] = k[0], v[0]
            return F.scaled_dot_product_attention(q, kc, vc)

        times = dict(fused=cuda_time(lambda: fused_window_attention_triton(q, k, v, kc, vc, rows, dst, src, cnt,
                                                                             kv_len, q0, max_len=total)),
                     two_launches=cuda_time(two), sdpa=cuda_time(sdpa))
        kv_bytes = 2 * 32 * total * 128 * 2
        for name, ms in times.items():
            res.append(dict(context=context, kernel=name, us=1000 * ms, GBps=kv_bytes / (ms / 1000) / 1e9))
            print(json.dumps(res[-1]), flush=True)
    out["kernel"] = res


def markdown(out: dict) -> str:
    lines = [f"# Issue 19: decode tokens/s end to end ({out.get('device', '?')})", "",
             f"torch {out.get('torch')}, triton {out.get('triton')}; random bf16 weights; gen_length "
             f"{out['args']['gen_length']}; no cache timed over its first {out['args']['nocache_steps']} steps.", ""]
    runs = out["runs"]
    for name in dict.fromkeys(r["model"] for r in runs):
        labels = list(dict.fromkeys(r["variant"] for r in runs if r["model"] == name))
        cached = [lb for lb in labels if lb != "none"]
        ratios = [(f"{c}/{c.rsplit('_', 1)[0]}_sdpa", c, c.rsplit("_", 1)[0] + "_sdpa")
                  for c in cached if not c.endswith("_sdpa")]
        ratios += [(f"{c}/none", c, "none") for c in cached if c.endswith("_graphs")]
        lines += [f"## {name}", "", "| schedule | batch | context | " + " | ".join(f"{lb} tok/s" for lb in labels)
                  + " | " + " | ".join(r[0] for r in ratios) + " |",
                  "|" + "---|" * (3 + len(labels) + len(ratios))]
        keys = dict.fromkeys((r["schedule"], r["batch"], r["context"]) for r in runs if r["model"] == name)
        for sched, batch, context in keys:
            got = {r["variant"]: r for r in runs if (r["model"], r["schedule"], r["batch"], r["context"])
                   == (name, sched, batch, context)}
            tps = {lb: got[lb].get("tok_s", math.nan) if lb in got else math.nan for lb in labels}
            cells = [f"{tps[lb]:.1f}" if lb in got and "error" not in got[lb] else got.get(lb, {}).get("error", "-")
                     for lb in labels]
            cells += [f"{tps[a] / tps[b]:.2f}x" if tps[a] == tps[a] and tps[b] == tps[b] else "-" for _, a, b in ratios]
            lines.append(f"| {sched} | {batch} | {context} | " + " | ".join(cells) + " |")
        lines.append("")
    if "kernel" in out:
        lines += ["## The attention alone (one layer, batch 1, 32 heads × 128, 32-token window, bf16)", "",
                  "| context | kernel | µs | K/V GB/s |", "|---|---|---|---|"]
        lines += [f"| {r['context']} | {r['kernel']} | {r['us']:.1f} | {r['GBps']:.0f} |" for r in out["kernel"]]
    return "\n".join(lines) + "\n"


def parse(argv=None) -> argparse.Namespace:
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    p = argparse.ArgumentParser(description="Issue 19: end-to-end decode tokens/s at LLaDA-8B and Fast-dLLM v2 "
                                            "shapes (random bf16 weights), no cache vs cache over SDPA vs dllm's "
                                            "kernels (with and without CUDA graphs). Needs a CUDA GPU.")
    p.add_argument("out_dir", nargs="?", default="bench/gpu/results", help="where e2e.json and e2e.md go")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {list(MODELS)}")
    p.add_argument("--batches", type=ints, default=[1, 8, 32], help="rows per forward (default 1,8,32)")
    p.add_argument("--contexts", type=ints, default=[1024, 4096], help="prompt tokens (default 1024,4096)")
    p.add_argument("--gen-length", type=int, default=64, help="new tokens per row (a multiple of 32; default 64)")
    p.add_argument("--nocache-steps", type=int, default=4, help="steps timed for no cache (default 4)")
    p.add_argument("--no-kernel", action="store_true", help="skip the attention-alone timings")
    args = p.parse_args(argv)
    args.models = args.models.split(",")
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        p.error(f"--models: {bad[0]!r} is not one of {list(MODELS)}")
    if args.gen_length <= 0 or args.gen_length % 32:
        p.error(f"--gen-length must be a positive multiple of 32, got {args.gen_length}")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu/e2e.py needs a CUDA GPU (none found)")
    import triton

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               args=vars(args), runs=[])

    def save():
        (out_dir / "e2e.json").write_text(json.dumps(out, indent=1))
        (out_dir / "e2e.md").write_text(markdown(out))

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(50):  # bring the clocks up before the first timed step
        a @ a
    del a
    if not args.no_kernel:
        kernel_alone(out)
        save()
    for name in args.models:
        run_model(name, args, out, save)
    save()
    print(markdown(out))


if __name__ == "__main__":
    main()
