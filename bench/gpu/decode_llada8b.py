"""GPU check for issue 5 (run on a lent GPU: `python bench/gpu/decode_llada8b.py OUT_DIR`).

1. A randomly initialised model with LLaDA-8B's shapes (32 layers, d 4096, 32 heads of 128, SwiGLU
   12288, vocabulary 126464) in bf16: one decode forward of a 32-token block over 1K and 4K cached
   tokens, batch 1 — dual-cache forward with the Triton kernels, the same forward with torch SDPA
   over the cache, and the uncached forward over the whole canvas. Plus the attention kernel alone
   (32 layers' worth of calls) and its achieved memory bandwidth (bytes of K and V read / time).
2. dllm-tiny on the GPU: the same cached generations with the Triton kernels and with the torch
   reference (share of identical outputs), and tokens/s of no cache + one token per step against
   dual cache + threshold 0.9.
Writes decode_llada8b.json and .md into OUT_DIR.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import dllm
from dllm import kernels
from dllm.cache import KVStore, StepView
from dllm.kernels.window_attention.triton import window_attention_triton
from dllm.models.core import CoreConfig, Transformer

LLADA_8B = dict(vocab_size=126464, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32,
                intermediate_size=12288, rope_theta=500000.0, max_length=8192)


def cuda_time(fn, iters=20, warmup=5) -> float:
    """Median milliseconds of fn() over iters, CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]


class SDPAView(StepView):
    """Same cache, attention by torch SDPA (bf16, flash/efficient backends; every slot visible)."""

    def attend(self, layer, q, k, v):
        kc, vc = self.store.k[layer], self.store.v[layer]
        s0, n = int(self.dst[0]), k.shape[2]
        kc[0, :, s0:s0 + n] = k[0]
        vc[0, :, s0:s0 + n] = v[0]
        length = int(self.kv_len[0])
        return F.scaled_dot_product_attention(q, kc[:, :, :length], vc[:, :, :length])


def llada8b(rows: list) -> None:
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        core = Transformer(CoreConfig(**LLADA_8B)).eval()
    torch.set_default_dtype(torch.float32)
    cfg, w = core.cfg, 32
    for ctx in (1024, 4096):
        total = ctx + w
        store = KVStore(cfg.num_layers, 1, cfg.num_kv_heads, total, cfg.head_dim, torch.bfloat16, "cuda")
        ids = torch.randint(0, cfg.vocab_size, (1, total), device="cuda")
        pos = torch.arange(total, device="cuda")[None]
        one = lambda v: torch.tensor([v], device="cuda")  # noqa: E731
        view_args = dict(store=store, rows=one(0), dst=one(ctx), src=one(0), count=one(w), kv_len=one(total),
                         q_pos0=one(ctx), block_size=0)
        out = slice(0, w)
        with torch.no_grad():
            with kernels.use("triton"):
                t_triton = cuda_time(lambda: core(ids[:, ctx:], pos[:, ctx:], None, cache=StepView(**view_args),
                                                  out=out))
            t_sdpa = cuda_time(lambda: core(ids[:, ctx:], pos[:, ctx:], None, cache=SDPAView(**view_args), out=out))
            t_full = cuda_time(lambda: core(ids, pos, None, out=slice(ctx, total)), iters=10)
            from dllm.kernels.window_attention.triton import auto_splits
            splits = auto_splits(1, cfg.num_heads, w, total, 32, torch.device("cuda"))
            # the attention kernel alone, 32 layers' worth of calls
            q = torch.randn(1, cfg.num_heads, w, cfg.head_dim, device="cuda", dtype=torch.bfloat16)
            kc, vc = store.k[0], store.v[0]
            a = (q, kc, vc, one(0), one(total), one(ctx))
            t_kernel = cuda_time(lambda: [window_attention_triton(*a, max_len=total) for _ in range(cfg.num_layers)]) \
                / cfg.num_layers
            t_kernel1 = cuda_time(lambda: [window_attention_triton(*a, num_splits=1, max_len=total)
                                           for _ in range(cfg.num_layers)]) \
                / cfg.num_layers
            t_sdpa_attn = cuda_time(lambda: [F.scaled_dot_product_attention(q, kc[:, :, :total], vc[:, :, :total])
                                             for _ in range(cfg.num_layers)]) / cfg.num_layers
        kv_bytes = 2 * cfg.num_kv_heads * total * cfg.head_dim * 2
        rows.append(dict(context=ctx, forward_triton_ms=t_triton, forward_sdpa_ms=t_sdpa, forward_nocache_ms=t_full,
                         kernel_us=1000 * t_kernel, kernel_nosplit_us=1000 * t_kernel1, sdpa_attn_us=1000 * t_sdpa_attn,
                         kernel_GBps=kv_bytes / (t_kernel / 1000) / 1e9,
                         kernel_nosplit_GBps=kv_bytes / (t_kernel1 / 1000) / 1e9,
                         sdpa_GBps=kv_bytes / (t_sdpa_attn / 1000) / 1e9,
                         cache_GiB=store.nbytes / 2**30, auto_splits=splits))
        print(rows[-1], flush=True)
        del store
    core = None  # drop the weights (the lambdas above hold the name) before empty_cache
    torch.cuda.empty_cache()


def sweep(out: dict) -> None:
    """Tile sizes, warps and pipeline stages of the attention kernel, one row × 32 heads × 32
    queries of 128 over 1K and 4K keys (bf16): microseconds per call, the best first."""
    res = []
    for ctx in (1024, 4096):
        kc = torch.randn(1, 32, ctx + 32, 128, device="cuda", dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        q = torch.randn(1, 32, 32, 128, device="cuda", dtype=torch.bfloat16)
        one = lambda v: torch.tensor([v], device="cuda")  # noqa: E731
        a = (q, kc, vc, one(0), one(ctx + 32), one(ctx))
        for bm in (16, 32):
            for bn in (32, 64, 128):
                for nw in (4, 8):
                    for ns in (1, 2, 3):
                        kw = dict(num_splits=1, max_len=ctx + 32, block_m=bm, block_n=bn, num_warps=nw, num_stages=ns)
                        try:
                            t = cuda_time(lambda: [window_attention_triton(*a, **kw) for _ in range(32)], iters=10) / 32
                        except Exception as e:  # a config the compiler refuses (shared memory)
                            print("skip", kw, type(e).__name__, flush=True)
                            continue
                        res.append(dict(context=ctx, block_m=bm, block_n=bn, num_warps=nw, num_stages=ns,
                                        us=1000 * t, GBps=2 * 32 * (ctx + 32) * 128 * 2 / t / 1e6))
        best = min((r for r in res if r["context"] == ctx), key=lambda r: r["us"])
        print("best", best, flush=True)
    out["sweep"] = sorted(res, key=lambda r: (r["context"], r["us"]))


def tiny(out: dict) -> None:
    from dllm.eval.tasks import get_task

    model = dllm.load("dllm-tiny", device="cuda")
    items = [it for t in ("waiting_line/reverse", "waiting_line/sort", "sudoku/4x4", "waiting_line/insert_index")
             for it in get_task(t).items("test", 8)]
    prompts = [it.prompt for it in items]
    kw = dict(gen_length=256, block_length=32, stop_at_eos=False)
    same = {}
    for cache in ("prefix", "dual"):
        with kernels.use("triton"):
            a = dllm.generate(model, prompts, dllm.samplers.ThresholdSampler(0.9), cache=cache, **kw)
        with kernels.use("torch"):
            b = dllm.generate(model, prompts, dllm.samplers.ThresholdSampler(0.9), cache=cache, **kw)
        same[cache] = 100.0 * sum(torch.equal(x, y) for x, y in zip(a.ids, b.ids)) / len(prompts)
    speed = {}
    for name, sampler, cache in (("none + one_per_step", dllm.samplers.LLaDASampler(), "none"),
                                 ("dual + threshold_0.9", dllm.samplers.ThresholdSampler(0.9), "dual"),
                                 ("prefix + threshold_0.9", dllm.samplers.ThresholdSampler(0.9), "prefix"),
                                 ("none + threshold_0.9", dllm.samplers.ThresholdSampler(0.9), "none")):
        dllm.generate(model, prompts[:2], sampler, cache=cache, **kw)  # warm-up / compile
        torch.cuda.synchronize()
        t = time.perf_counter()
        r = dllm.generate(model, prompts, sampler, cache=cache, **kw)
        torch.cuda.synchronize()
        s = r.summary()
        s["wall"] = time.perf_counter() - t
        speed[name] = s
        print(name, s, flush=True)
    out["tiny_triton_vs_torch_identical_pct"] = same
    out["tiny_speed"] = speed


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out_dir = Path(args[0] if args else ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    import triton

    out["triton"] = triton.__version__
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(50):  # bring the clocks up before the first timed forward
        a @ a
    torch.cuda.synchronize()
    rows: list = []
    out["llada8b"] = rows
    try:
        llada8b(rows)
    finally:
        (out_dir / "decode_llada8b.json").write_text(json.dumps(out, indent=1))
    if "--sweep" in sys.argv:
        sweep(out)
        (out_dir / "decode_llada8b.json").write_text(json.dumps(out, indent=1))
    if "--skip-tiny" not in sys.argv:
        tiny(out)
    (out_dir / "decode_llada8b.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
