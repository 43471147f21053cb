"""``dllm train recipe=trajectories`` — the teacher's own outputs as training targets
(algorithms.md §8.1: dParallel distils a model onto its own decoding trajectories).

The teacher (any model ``dllm.load`` reads) decodes each training prompt with the baseline sampler
(one token per forward, greedy); prompts and outputs become a ``datasets`` dataset on disk:

    <output_dir>/rows.jsonl   one line per decoded prompt, appended batch by batch
    <output_dir>/dataset/     the datasets.Dataset (save_to_disk), written at the end
    <output_dir>/meta.json    teacher, tokenizer fingerprint, decoding settings, teacher accuracy

Rows from the task suite are scored by the task's own scorer (``correct``), so a recipe can keep
only the trajectories that are right.

A rerun after an interruption keeps the rows already written (a torn last line is dropped) and
decodes only the rest; nothing is generated twice.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from tqdm import tqdm

from dllm.errors import check
from dllm.eval import resume
from dllm.generate import generate
from dllm.loading import load
from dllm.samplers import LLaDASampler
from dllm.training import common

PASS_THROUGH = ("source", "split", "reference")  # prompt-file columns a later step reads (held-out split, scorer)


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the vocabulary: a student must read the teacher's token ids the same way."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def is_correct(record: dict, output: str) -> bool | None:
    """The task's own scorer on the teacher's output, for rows that come from the task suite
    (``tasks:`` data carries the task name and the scorer's metadata); None where unknown."""
    if not record.get("task") or record.get("meta") is None:
        return None
    from dllm.eval.tasks import get_task
    from dllm.eval.tasks.base import Item

    item = Item(record["task"], record["prompt"], record["response"], json.loads(record["meta"]))
    return bool(get_task(record["task"]).score(item, output) >= 1.0)


def read_rows(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line from a killed run
                break
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def run(teacher: str, data: str, output_dir: str, gen_length: int = 32, block_length: int = 32,
        batch_size: int = 64, cache: str = "none", where: dict | None = None, device: str = "auto") -> Path:
    """``where`` keeps only the data rows whose columns match it (training/common.py's ``select_rows``:
    ``{split: train}``, or a list of allowed values); it is part of the run's settings. ``device``:
    where the teacher runs (auto: the GPU where there is one); a run resumes only on the same kind."""
    check(batch_size > 0, f"batch_size must be a positive integer, got {batch_size}")
    check(device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {device!r}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    check(device == "cpu" or torch.cuda.is_available(), "device=cuda but torch sees no GPU; use device=cpu")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load(teacher, device=device)
    tok = model.tokenizer
    records = common.select_rows(common.load_records(data), where)
    fixed = {"teacher": teacher, "data": data, "gen_length": gen_length, "block_length": block_length, "cache": cache}
    if where:  # recorded only when set: runs from before the key resume unchanged
        fixed["where"] = dict(where)
    if device != "cpu":  # likewise; greedy answers on another device may differ at near ties: not mixed
        fixed["device"] = device
    resume.check_settings(out / "rows.jsonl", fixed)  # a rerun resumes only the same run
    resume.write_settings(out / "rows.jsonl", fixed)
    done = read_rows(out / "rows.jsonl")
    check(len(done) <= len(records),
          f"{out / 'rows.jsonl'} holds more rows than the data {data!r}: another run's folder?")
    todo = records[len(done):]
    sampler = LLaDASampler()
    bar = tqdm(total=len(records), initial=len(done), desc="trajectories")
    for s in range(0, len(todo), batch_size):
        chunk = todo[s:s + batch_size]
        prompts = [common.encode_record(r, tok)[0] for r in chunk]
        res = generate(model, prompts, sampler, gen_length=gen_length, block_length=block_length, stop_at_eos=True,
                       cache=cache)
        with (out / "rows.jsonl").open("a") as f:
            for r, p, ids, text in zip(chunk, prompts, res.ids, res.text):
                row = {"prompt": r.get("prompt", ""), "response": text, "prompt_ids": p, "response_ids": ids.tolist(),
                       "task": r.get("task", ""), "correct": is_correct(r, text)}
                row.update({k: r[k] for k in PASS_THROUGH if k in r})
                f.write(json.dumps(row) + "\n")
        bar.update(len(chunk))
    bar.close()
    import datasets

    rows = read_rows(out / "rows.jsonl")
    datasets.Dataset.from_list(rows).save_to_disk(str(out / "dataset"))
    scored = [r["correct"] for r in rows if r.get("correct") is not None]
    (out / "meta.json").write_text(json.dumps({"teacher": teacher, "tokenizer": tokenizer_fingerprint(tok),
                                               "data": data, "gen_length": gen_length, "block_length": block_length,
                                               "cache": cache, "where": where,
                                               "sampler": "llada (one token per forward, greedy)",
                                               "rows": len(records), "scored": len(scored),
                                               "teacher_accuracy": 100.0 * sum(scored) / max(len(scored), 1)},
                                              indent=1))
    return out
