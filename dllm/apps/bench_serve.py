"""``dllm bench_serve``: a live ``dllm serve`` under load, side by side with the same server serving
one request at a time (max_batch=1). Streams every request with the ``openai`` client and reports
generated tokens/s, TTFT and inter-chunk latency p50/p99 and tokens per forward per concurrency.

    dllm bench_serve                      # -> bench/serve/bench.md, bench.json
    dllm bench_serve concurrency=[1,4,16,64] requests=64 sampler=threshold
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hydra
from omegaconf import DictConfig
from tqdm import tqdm

from dllm.apps.common import one_line_errors
from dllm.errors import DllmError, check
from dllm.apps.eval import task_list
from dllm.eval.tasks import get_task


def start_server(cfg: DictConfig, max_batch: int):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "dllm.cli", "serve", f"port={port}", f"max_batch={max_batch}",
                             f"model={cfg.model}", f"sampler={cfg.sampler}", "max_queue=4096"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import httpx

    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health").status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise DllmError("the server did not become healthy in 120 s")


def one(client, prompt: str, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    times, stats = [], {}
    for chunk in client.completions.create(model=client.served, prompt=prompt, max_tokens=max_tokens, stream=True):
        if chunk.choices and chunk.choices[0].text:
            times.append(time.perf_counter())
        extra = chunk.model_extra or {}
        stats = extra.get("dllm", stats)
    return {"ttft": (times[0] if times else time.perf_counter()) - t0, "end": time.perf_counter() - t0,
            "gaps": [b - a for a, b in zip(times, times[1:])], "stats": stats}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


def load_level(url: str, served: str, prompts: list[str], concurrency: int, max_tokens: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    client.served = served
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        res = list(pool.map(lambda p: one(client, p, max_tokens), prompts))
    wall = time.perf_counter() - t0
    gen = sum(r["stats"].get("gen_tokens", 0) for r in res)
    nfe = sum(r["stats"].get("nfe", 0) for r in res)
    committed = sum(r["stats"].get("committed", 0) for r in res)
    return {"tok_s": gen / wall, "ttft_p50": pct([r["ttft"] for r in res], 0.5),
            "ttft_p99": pct([r["ttft"] for r in res], 0.99), "gap_p50": pct([g for r in res for g in r["gaps"]], 0.5),
            "gap_p99": pct([g for r in res for g in r["gaps"]], 0.99), "tok_fwd": committed / max(nfe, 1),
            "latency_p50": pct([r["end"] for r in res], 0.5), "wall": wall, "gen_tokens": gen}


def python_api(cfg: DictConfig, prompts: list[str]) -> dict:
    """The reference point of latency: ``dllm.generate`` in process, one prompt at a time."""
    from hydra import compose

    from dllm.apps.common import build
    from dllm.generate import decode_window, generate

    node = compose(config_name="serve", overrides=[f"model={cfg.model}", f"sampler={cfg.sampler}"])
    model, sampler = build(node.model), build(node.sampler)
    window = decode_window(model, None)
    gen_length = -(-cfg.max_tokens // window) * window
    ends, gen, nfe, committed = [], 0, 0, 0
    t0 = time.perf_counter()
    for p in prompts:
        t = time.perf_counter()
        st = generate(model, [p], sampler, gen_length=gen_length).stats[0]
        ends.append(time.perf_counter() - t)
        gen, nfe, committed = gen + st.gen_tokens, nfe + st.nfe, committed + st.committed
    wall = time.perf_counter() - t0
    nan = float("nan")
    return {"server": "python API dllm.generate (no server)", "concurrency": 0, "tok_s": gen / wall,
            "ttft_p50": nan, "ttft_p99": nan, "gap_p50": nan, "gap_p99": nan, "tok_fwd": committed / max(nfe, 1),
            "latency_p50": pct(ends, 0.5), "wall": wall, "gen_tokens": gen}


@one_line_errors
def run(cfg: DictConfig) -> None:
    try:
        import openai  # noqa: F401
    except ImportError as e:
        raise DllmError("dllm bench_serve needs the openai client: pip install openai") from e
    check(cfg.requests > 0, f"requests must be a positive integer, got {cfg.requests}")
    names = task_list(cfg.tasks)  # items taken in turn from each task's held-out split
    per = -(-cfg.requests // len(names))
    pools = [get_task(n).items("test", per) for n in names]
    prompts = [pool[i].prompt for i in range(per) for pool in pools if i < len(pool)][: cfg.requests]
    rows = [python_api(cfg, prompts)]
    for label, max_batch in ((f"batched (max_batch={cfg.max_batch})", cfg.max_batch), ("one at a time", 1)):
        proc, url = start_server(cfg, max_batch)
        try:
            for c in tqdm(list(cfg.concurrency), desc=label):
                rows.append({"server": label, "concurrency": c,
                             **load_level(url, cfg.served_name, prompts, c, cfg.max_tokens)})
        finally:
            proc.terminate()
            proc.wait(10)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = {r["concurrency"]: r["tok_s"] for r in rows if r["server"] == "one at a time"}
    base[0] = base[1]
    lines = [f"# dllm serve under load ({cfg.model}, sampler {cfg.sampler}, {len(prompts)} streamed requests per "
             f"level, max_tokens {cfg.max_tokens})", "",
             "| server | concurrency | tok/s | vs one-at-a-time | TTFT p50 ms | TTFT p99 ms | chunk gap p50 ms | "
             "chunk gap p99 ms | latency p50 ms | tok/fwd |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['server']} | {r['concurrency']} | {r['tok_s']:.1f} | {r['tok_s'] / base[r['concurrency']]:.2f}x "
                     f"| {r['ttft_p50']:.0f} | {r['ttft_p99']:.0f} | {r['gap_p50']:.0f} | {r['gap_p99']:.0f} | "
                     f"{r['latency_p50']:.0f} | {r['tok_fwd']:.2f} |")
    tmp = out / "bench.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out / "bench.md")
    (out / "bench.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


@hydra.main(config_path="pkg://dllm.conf", config_name="bench_serve", version_base=None)
def main(cfg: DictConfig) -> None:
    run(cfg)
