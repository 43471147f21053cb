"""``dllm generate``: decode prompts from the command line or a JSONL file; print text and stats."""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig
from tqdm import tqdm

from dllm.apps.common import build, decode_of, one_line_errors
from dllm.errors import DllmError, check
from dllm.generate import generate


def read_prompts(cfg: DictConfig) -> list[str]:
    check(cfg.prompt is not None or cfg.prompts_file is not None, "give prompt='...' or prompts_file=path.jsonl")
    if cfg.prompt is not None:
        return [str(cfg.prompt)]
    path = Path(cfg.prompts_file)
    check(path.is_file(),
          f"prompts_file {path} " + ("is a folder, not a JSONL file" if path.is_dir() else "does not exist"))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise DllmError(f"prompts_file {path} line {line} is not UTF-8 text (a binary file?)") from e
    except OSError as e:
        raise DllmError(f"prompts_file {path} cannot be read ({e.strerror})") from e
    prompts = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DllmError(f"prompts_file {path} line {n} is not JSON ({e.msg})") from e
        check(not isinstance(obj, dict) or "prompt" in obj,
              f"prompts_file {path} line {n}: an object needs a \"prompt\" key, got keys {sorted(obj)[:5]}")
        prompt = obj["prompt"] if isinstance(obj, dict) else obj
        check(isinstance(prompt, str) and prompt.strip() != "",
              f"prompts_file {path} line {n}: the prompt must be non-empty text, got {prompt!r:.40}")
        prompts.append(prompt)
    check(len(prompts) > 0, f"prompts_file {path} holds no prompt")
    return prompts


@one_line_errors
def run(cfg: DictConfig) -> None:
    check(cfg.batch_size > 0, f"batch_size must be a positive integer, got {cfg.batch_size}")
    prompts = read_prompts(cfg)
    out = Path(cfg.output) if cfg.output else None
    check(out is None or (out.parent.is_dir() and not out.is_dir() and os.access(out.parent, os.W_OK)),
          f"output {cfg.output} cannot be written: its folder must exist and be writable, and it must not be a folder")
    model = build(cfg.model)
    sampler = build(cfg.sampler)
    decode = decode_of(cfg)
    rows = []  # written whole at the end (temp file + rename): a failure leaves no partial file
    chunks = range(0, len(prompts), cfg.batch_size)
    for i in tqdm(chunks, desc="generate", disable=len(chunks) < 2):
        batch = prompts[i:i + cfg.batch_size]
        res = generate(model, batch, sampler, trace=bool(cfg.trace), **decode)
        for j, (prompt, text, st) in enumerate(zip(batch, res.text, res.stats)):
            print(f">>> {prompt}\n{text}")
            if isinstance(cfg.trace, str):  # trace=out.png / out.html: one picture per prompt
                from dllm.eval.trace_plot import render

                k = i + j
                path = (Path(cfg.trace) if len(prompts) == 1
                        else Path(cfg.trace).with_stem(f"{Path(cfg.trace).stem}-{k}"))
                print(f"[trace: {render(res.trace[j], model.tokenizer, path, title=prompt[:80])}]")
            print(f"[NFE {st.nfe} | tokens/forward {st.tokens_per_forward:.2f} "
                  f"(real {st.real_tokens_per_forward:.2f}) | {st.gen_tokens} tokens | "
                  f"{st.tokens_per_second:.1f} tok/s | {st.wall_time:.2f} s | cache {res.cache}]")
            rows.append(json.dumps({"prompt": prompt, "text": text, **st.as_dict()}) + "\n")
    if out:
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            tmp.write_text("".join(rows))
            os.replace(tmp, out)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DllmError(f"output {out} cannot be written ({e.strerror})") from e


@hydra.main(config_path="pkg://dllm.conf", config_name="generate", version_base=None)
def main(cfg: DictConfig) -> None:
    run(cfg)
