"""``dllm bench_serve``: a live ``dllm serve`` under load, side by side with the same server (a)
serving one request at a time (max_batch=1) and (b) batching statically (a batch runs to
completion before the next is taken). Streams every request with the ``openai`` client and
reports generated tokens/s, TTFT and inter-chunk latency p50/p99 and tokens per forward per
concurrency, against the Python API's latency and its time to finish the first block.

    dllm bench_serve                      # -> bench/serve/bench.md, bench.json
    dllm bench_serve concurrency=[1,4,16,64] requests=64 sampler=threshold
"""

from __future__ import annotations

import json
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
from dllm.eval.plots import pyplot
from dllm.eval.tasks import get_task, task_list
from dllm.testing import free_port


def start_server(cfg: DictConfig, max_batch: int, batching: str = "continuous"):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dllm.cli", "serve", f"port={port}", f"max_batch={max_batch}",
                             f"batching={batching}", f"model={cfg.model}", f"sampler={cfg.sampler}",
                             f"decode.cache={cfg.decode.cache}", "max_queue=4096"],
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


def one(client, url: str, served: str, prompt: str, max_tokens: int) -> dict:
    """One streamed request, read as Server-Sent Events with a light client (httpx and json): the
    server's latency, not a client library's parsing, is what is measured. The tests call the
    server with the official ``openai`` client."""
    body = {"model": served, "prompt": prompt, "max_tokens": max_tokens, "stream": True}
    t0 = time.perf_counter()
    times, stats = [], {}
    with client.stream("POST", url + "/v1/completions", json=body) as resp:
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                times.append(time.perf_counter())
            stats = chunk.get("dllm", stats)
    return {"ttft": (times[0] if times else time.perf_counter()) - t0, "end": time.perf_counter() - t0,
            "gaps": [b - a for a, b in zip(times, times[1:])], "stats": stats}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


def load_level(url: str, served: str, prompts: list[str], concurrency: int, max_tokens: int) -> dict:
    import httpx

    with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            res = list(pool.map(lambda p: one(client, url, served, p, max_tokens), prompts))
        wall = time.perf_counter() - t0
    gen = sum(r["stats"].get("gen_tokens", 0) for r in res)
    nfe = sum(r["stats"].get("nfe", 0) for r in res)
    committed = sum(r["stats"].get("committed", 0) for r in res)
    return {"tok_s": gen / wall, "ttft_p50": pct([r["ttft"] for r in res], 0.5),
            "ttft_p99": pct([r["ttft"] for r in res], 0.99), "gap_p50": pct([g for r in res for g in r["gaps"]], 0.5),
            "gap_p99": pct([g for r in res for g in r["gaps"]], 0.99), "tok_fwd": committed / max(nfe, 1),
            "latency_p50": pct([r["end"] for r in res], 0.5), "wall": wall, "gen_tokens": gen}


def python_api(cfg: DictConfig, prompts: list[str]):
    """The reference point of latency: ``dllm.generate`` in process, one prompt at a time. -> (its
    table row, ``call(prompt) -> (latency s, time to finish the first block s)``)."""
    from hydra import compose

    from dllm.apps.common import build
    from dllm.generate import decode_window, generate

    node = compose(config_name="serve", overrides=[f"model={cfg.model}", f"sampler={cfg.sampler}",
                                                   f"decode.cache={cfg.decode.cache}"])
    model, sampler = build(node.model), build(node.sampler)
    window = decode_window(model, None)
    gen_length = -(-cfg.max_tokens // window) * window

    def first_block(p: str) -> float:
        """The time to finish the first block alone: what a block-by-block stream waits for."""
        t = time.perf_counter()
        generate(model, [p], sampler, gen_length=window, stop_at_eos=False, cache=node.decode.cache)
        return time.perf_counter() - t

    def call(p: str) -> tuple[float, float]:
        t = time.perf_counter()
        generate(model, [p], sampler, gen_length=gen_length, cache=node.decode.cache)
        return time.perf_counter() - t, first_block(p)

    call(prompts[0])  # warm-up, as the servers get
    ends, gen, nfe, committed = [], 0, 0, 0
    t0 = time.perf_counter()
    for p in prompts:
        t = time.perf_counter()
        st = generate(model, [p], sampler, gen_length=gen_length, cache=node.decode.cache).stats[0]
        ends.append(time.perf_counter() - t)
        gen, nfe, committed = gen + st.gen_tokens, nfe + st.nfe, committed + st.committed
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()  # the compute ceiling of batching here: max_batch prompts per generate call
    batched = sum(st.gen_tokens for i in range(0, len(prompts), cfg.max_batch)
                  for st in generate(model, prompts[i:i + cfg.max_batch], sampler, gen_length=gen_length,
                                     cache=node.decode.cache).stats)
    batched_tok_s = batched / (time.perf_counter() - t0)
    firsts = [first_block(p) for p in prompts]
    nan = float("nan")
    return {"server": "python API dllm.generate (no server)", "concurrency": 0, "tok_s": gen / wall,
            "ttft_p50": nan, "ttft_p99": nan, "gap_p50": nan, "gap_p99": nan, "tok_fwd": committed / max(nfe, 1),
            "latency_p50": pct(ends, 0.5), "first_block_p50": pct(firsts, 0.5), "wall": wall, "gen_tokens": gen,
            "batched_tok_s": batched_tok_s}, call


def paired(url: str, served: str, prompts: list[str], max_tokens: int, api) -> dict:
    """Concurrency 1, each prompt sent to the server right after the Python API ran it: the two
    latencies are measured seconds apart, so this machine's drifting speed cancels in their ratio."""
    import httpx

    api_end, api_first, end, ttft, ratio, multi = [], [], [], [], [], []
    with httpx.Client(timeout=600) as client:
        for p in prompts:
            a, f = api(p)
            r = one(client, url, served, p, max_tokens)
            api_end.append(a), api_first.append(f), end.append(r["end"]), ttft.append(r["ttft"])
            ratio.append(r["end"] / a)
            if r["stats"].get("nfe", 1) > 1:  # answers of one forward stream whole: TTFT = the first block
                multi.append((r["ttft"], f))
    return {"api_p50": pct(api_end, 0.5), "first_block_p50": pct(api_first, 0.5), "latency_p50": pct(end, 0.5),
            "ttft_p50": pct(ttft, 0.5), "ratio_p50": pct(ratio, 0.5) / 1000,
            "ratio_of_means": sum(end) / sum(api_end), "multi": len(multi),
            "multi_ttft_p50": pct([t for t, _ in multi], 0.5), "multi_first_block_p50": pct([f for _, f in multi], 0.5)}


@one_line_errors
def run(cfg: DictConfig) -> None:
    try:
        import httpx  # noqa: F401
    except ImportError as e:
        raise DllmError("dllm bench_serve needs httpx: pip install -e '.[serve]'") from e
    check(cfg.requests > 0, f"requests must be a positive integer, got {cfg.requests}")
    names = task_list(cfg.tasks)  # items taken in turn from each task's held-out split
    per = -(-cfg.requests // len(names))
    pools = [get_task(n).items("test", per) for n in names]
    prompts = [pool[i].prompt for i in range(per) for pool in pools if i < len(pool)][: cfg.requests]
    api_row, api = python_api(cfg, prompts)
    rows, pairs = [api_row], {}
    servers = ((f"continuous (max_batch={cfg.max_batch})", cfg.max_batch, "continuous"),
               (f"static (max_batch={cfg.max_batch})", cfg.max_batch, "static"), ("one at a time", 1, "continuous"))
    for label, max_batch, batching in servers:
        proc, url = start_server(cfg, max_batch, batching)
        try:
            load_level(url, cfg.served_name, prompts[:2], 2, cfg.max_tokens)  # warm-up
            for c in tqdm(list(cfg.concurrency), desc=label):
                rows.append({"server": label, "concurrency": c,
                             **load_level(url, cfg.served_name, prompts, c, cfg.max_tokens)})
            pairs[label] = paired(url, cfg.served_name, prompts, cfg.max_tokens, api)
        finally:
            proc.terminate()
            proc.wait(10)
    write_report(cfg, rows, len(prompts), servers, pairs)


def write_report(cfg: DictConfig, rows: list[dict], n: int, servers, pairs: dict) -> None:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok_s = {(r["server"], r["concurrency"]): r["tok_s"] for r in rows}
    one, static = servers[2][0], servers[1][0]
    api = rows[0]
    lines = [f"# dllm serve under load ({cfg.model}, sampler {cfg.sampler}, cache {cfg.decode.cache}, {n} streamed "
             f"requests per level, max_tokens {cfg.max_tokens})", "",
             f"Python API, one request at a time: latency p50 {api['latency_p50']:.1f} ms, first block finished "
             f"p50 {api['first_block_p50']:.1f} ms, {api['tok_s']:.1f} tok/s. In batches of {cfg.max_batch} (one "
             f"`generate` call each, no server): {api['batched_tok_s']:.1f} tok/s = "
             f"{api['batched_tok_s'] / api['tok_s']:.2f}x, the most batching can give on this machine.", "",
             "| server | concurrency | tok/s | vs one-at-a-time | vs static | TTFT p50 ms | TTFT p99 ms | "
             "chunk gap p50 ms | chunk gap p99 ms | latency p50 ms | latency vs API | tok/fwd |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows[1:]:
        c = r["concurrency"]
        lines.append(f"| {r['server']} | {c} | {r['tok_s']:.1f} | {r['tok_s'] / tok_s[(one, c)]:.2f}x | "
                     f"{r['tok_s'] / tok_s[(static, c)]:.2f}x | {r['ttft_p50']:.0f} | {r['ttft_p99']:.0f} | "
                     f"{r['gap_p50']:.0f} | {r['gap_p99']:.0f} | {r['latency_p50']:.0f} | "
                     f"{r['latency_p50'] / api['latency_p50']:.2f}x | {r['tok_fwd']:.2f} |")
    lines += ["", "Concurrency 1, paired: each streamed request right after `dllm.generate` ran the same prompt in "
              "process (the targets: server latency <= 1.2x the API's, TTFT below the API's time to finish the "
              "first block).", "",
              "| server | API latency p50 ms | server latency p50 ms | latency ratio, p50 of pairs | "
              "ratio of mean latencies | API first block p50 ms | TTFT p50 ms | requests of > 1 forward | "
              "their API first block p50 ms | their TTFT p50 ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, p in pairs.items():
        lines.append(f"| {label} | {p['api_p50']:.1f} | {p['latency_p50']:.1f} | {p['ratio_p50']:.2f}x | "
                     f"{p['ratio_of_means']:.2f}x | {p['first_block_p50']:.1f} | {p['ttft_p50']:.1f} | {p['multi']} | "
                     f"{p['multi_first_block_p50']:.1f} | {p['multi_ttft_p50']:.1f} |")
    tmp = out / "bench.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out / "bench.md")
    tmp = out / "bench.json.tmp"
    tmp.write_text(json.dumps({"levels": rows, "paired_c1": pairs}, indent=1))
    tmp.replace(out / "bench.json")
    plot(rows[1:], [s[0] for s in servers], out / "bench.png")
    print("\n".join(lines))


def plot(rows: list[dict], labels: list[str], path: Path) -> None:
    plt = pyplot()

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for label in labels:
        rs = [r for r in rows if r["server"] == label]
        ax1.plot([r["concurrency"] for r in rs], [r["tok_s"] for r in rs], marker="o", label=label)
        ax2.plot([r["concurrency"] for r in rs], [r["ttft_p50"] for r in rs], marker="o", label=label)
    for ax, title in ((ax1, "generated tokens/s"), (ax2, "TTFT p50 (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent streamed requests")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax2.set_yscale("log")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".tmp.png"), dpi=110)
    path.with_suffix(".tmp.png").replace(path)
    plt.close(fig)


@hydra.main(config_path="pkg://dllm.conf", config_name="bench_serve", version_base=None)
def main(cfg: DictConfig) -> None:
    run(cfg)
