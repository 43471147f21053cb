"""What every recipe shares: datasets -> token ids, deterministic batches, atomic checkpoints,
the loss log, LoRA. A recipe file keeps only its objective and its loop."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from dllm.errors import DllmError, check


def load_records(data, split: str = "train"):
    """A ``datasets`` dataset from a local JSON/JSONL/CSV/Parquet file, a saved dataset folder, or a
    hub name (where a network exists); a list of these is their rows in order (their columns must
    match). Rows hold ``prompt``/``response`` or chat ``messages``."""
    import datasets

    if not isinstance(data, str) and hasattr(data, "__iter__"):  # a list (a Hydra ListConfig too)
        parts = [load_records(str(d), split) for d in data]
        check(bool(parts), "data must name at least one file, got an empty list")
        for d, part in zip(data, parts):
            check(part.column_names == parts[0].column_names,
                  f"data: {d} has columns {part.column_names}, {data[0]} has {parts[0].column_names}")
        return datasets.concatenate_datasets(parts)
    if data.startswith("tasks:"):
        return datasets.Dataset.from_list(task_rows(data))
    path = Path(data)
    if path.is_dir() and (path / "dataset_info.json").exists():
        return datasets.load_from_disk(str(path))
    if path.exists():
        kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix)
        check(kind is not None, f"data must be a .jsonl, .json, .csv or .parquet file, got {path.name}")
        return datasets.load_dataset(kind, data_files=str(path), split="train")
    try:
        return datasets.load_dataset(data, split=split)
    except Exception as e:
        raise DllmError(f"data {data!r} is not a local file or folder and the hub gave {type(e).__name__}") from e


def select_rows(rows, where: dict | None) -> list[dict]:
    """The rows whose columns equal every value of ``where`` (a list value: any of its items; None: all
    rows); one line naming a column the data lacks, and an error when nothing is left."""
    rows = list(rows)
    if not where:
        return rows
    for key in where:
        check(not rows or key in rows[0], f"where: the data has no column {key!r}; its columns are {sorted(rows[0])}")
    def matches(value, want) -> bool:
        return value in want if isinstance(want, (list, tuple)) else value == want

    kept = [r for r in rows if all(matches(r.get(k), v) for k, v in where.items())]
    check(bool(kept), f"where={dict(where)} keeps none of the {len(rows)} data rows")
    return kept


def task_rows(spec: str) -> list[dict]:
    """``tasks:<names>:<n>`` -> the first n train items of each task as prompt/response rows.
    ``<names>`` is ``tiny`` (the embedded model's suite; reasoning-gym tasks only when installed)
    or task names and groups (``parallelbench``, ``parallelbench_n15``) joined by ``+``; a name may
    carry its own count (``waiting_line/sort=40000``)."""
    from dllm.eval.tasks import get_task, task_list

    parts = spec.split(":")
    check(len(parts) == 3 and parts[2].isdigit(), f"data 'tasks:<names>:<n>' expected, got {spec!r}")
    groups = {"tiny": "trained", "trained": "trained", "parallelbench": "parallelbench",
              "parallelbench_n15": "parallelbench_n15"}  # tiny: the embedded model's training suite
    names = [n for entry in parts[1].split("+")
             for n in (task_list(groups[entry]) if entry in groups else [entry])]
    rows = []
    for entry in names:
        name, _, count = entry.partition("=")
        rows += [{"prompt": it.prompt, "response": it.reference, "task": name, "meta": json.dumps(it.meta)}
                 for it in get_task(name).items("train", int(count or parts[2]))]
    return rows


def encode_record(row: dict, tokenizer, after_prompt: bool = False) -> tuple[list[int], list[int]]:
    """One row -> (prompt ids, response ids), through the chat template when the tokenizer has one.
    ``after_prompt``: without a chat template, tokenize the response as it reads behind its prompt when
    the prompt ends a line (a Metaspace tokenizer marks a text's start with a space: alone, an answer
    "[\"Tina" opens with the token of ' ["Tina', behind "...\n" with '["', 'Tina', as a prompt quoting
    the same list reads); the response alone when its tokens do not split there."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    if "messages" in row and row["messages"]:
        msgs = row["messages"]
        check(msgs[-1]["role"] == "assistant", "the last chat message of each row must be the assistant's response")
        prompt_msgs, response = msgs[:-1], msgs[-1]["content"]
    elif "prompt" in row and "response" in row:
        prompt_msgs, response = [{"role": "user", "content": row["prompt"]}], row["response"]
    else:
        raise DllmError(f"each data row needs 'prompt' and 'response' or 'messages', got keys {sorted(row)}")
    if chat:
        prompt = tokenizer.apply_chat_template(prompt_msgs, add_generation_prompt=True, tokenize=True)
        prompt = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    else:
        text = "\n".join(m["content"] for m in prompt_msgs)
        prompt = tokenizer(text)["input_ids"]
    alone = tokenizer(response, add_special_tokens=False)["input_ids"]
    if chat or not after_prompt or not text.endswith("\n"):
        return list(prompt), alone
    head = tokenizer(text, add_special_tokens=False)["input_ids"]
    both = tokenizer(text + response, add_special_tokens=False)["input_ids"]
    return list(prompt), (both[len(head):] if both[:len(head)] == head and len(both) > len(head) else alone)


def new_tokenizer(tokenizer_from: str | None, data_rows, vocab_size: int, alphabet: str = "data"):
    """The tokenizer of a new model: an existing model's (``tokenizer_from``), or a BPE trained on the data."""
    if tokenizer_from:
        from dllm.loading import load

        return load(tokenizer_from).tokenizer
    from dllm.training.tokenizer import build_bpe_tokenizer

    return build_bpe_tokenizer((t for row in data_rows for t in (row.get("prompt", ""), row.get("response", ""))),
                               vocab_size, alphabet)


def encode_examples(rows, tokenizer, max_answer_length: int, max_prompt_length: int, finish=None,
                    after_prompt: bool = False):
    """-> (list of (prompt ids, answer ids), number dropped). The answer is the response + one
    end-of-text, then ``finish(prompt, answer)`` (a recipe's padding). Over-long examples are
    dropped and counted: a silent truncation would teach the model to stop mid-answer. ``after_prompt``:
    :func:`encode_record`'s."""
    eos = tokenizer.eos_token_id
    out, dropped = [], 0
    for row in rows:
        prompt, resp = encode_record(row, tokenizer, after_prompt)
        if len(resp) + 1 > max_answer_length or len(prompt) > max_prompt_length or not prompt:
            dropped += 1
            continue
        answer = resp + [eos]
        out.append((prompt, finish(prompt, answer) if finish else answer))
    check(len(out) > 0, f"no example fits answer_length={max_answer_length} and max_prompt_length={max_prompt_length}")
    return out, dropped


def collate(examples, pad_id: int, device, align: int = 1):
    """(prompt ids, answer ids) pairs -> ids, positions, valid, answer [B, L], the decode canvas's
    layout: each row is [left padding | prompt | answer | right padding]. Prompts end together on
    column P = max(prompt lengths rounded up to ``align``); a row is shifted left by whole
    ``align`` blocks, so with ``align`` = the block size a column's block is the same in every row.
    ``valid`` marks prompt and answer tokens, ``answer`` the answer tokens."""
    def up(n: int) -> int:
        return -(-n // align) * align

    p = max(up(len(q)) for q, _ in examples)
    width = p + max(len(q) + len(a) - up(len(q)) for q, a in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    valid = torch.zeros_like(ids, dtype=torch.bool)
    answer = torch.zeros_like(valid)
    for i, (prompt, ans) in enumerate(examples):
        s = p - up(len(prompt))  # left padding
        n = len(prompt) + len(ans)
        ids[i, s:s + n] = torch.tensor(prompt + ans)
        valid[i, s:s + n] = True
        answer[i, s + len(prompt):s + n] = True
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    return ids.to(device), positions.to(device), valid.to(device), answer.to(device)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The global batch of optimiser step ``step``: a pure function of (step, seed), so a resumed
    run sees exactly the batches the uninterrupted run would have (epochs are fresh permutations)."""
    per_epoch = max(n // batch_size, 1)
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    return perm[k * batch_size:(k + 1) * batch_size].tolist()


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """Noise (masking ratios, positions) for one step, also a pure function of the step."""
    return torch.Generator().manual_seed((seed * 7919 + step) * 131 + rank)


def lr_lambda(warmup: int, total: int, min_ratio: float):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def atomic_dir(target: Path, write) -> None:
    """``write(tmp)`` fills a temporary folder beside ``target``, which then replaces it, so a kill
    at any moment leaves either the old checkpoint or the new one, never half of one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        write(tmp)
    except BaseException:  # a failed write (full disk, kill) leaves no temp folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o755)
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


class LossLog:
    """``loss.jsonl`` in the output folder, appended as training goes; cut back to the resumed
    step on resume so the curve of a resumed run equals an uninterrupted one."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a torn line from a kill mid-write: dropped, as eval does
                    continue
        rows = [r for r in rows if isinstance(r, dict) and r.get("step", resume_step + 1) <= resume_step]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        self.rows = rows

    def add(self, **row) -> None:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def apply_lora(core: torch.nn.Module, r: int, alpha: float, dropout: float, targets: list[str]):
    """Wrap the core's linear layers named in ``targets`` (suffix match) with LoRA adapters.

    Fails loudly when a pattern matches nothing — dParallel's reference silently trained no
    adapter on LLaDA's differently named modules (algorithms.md §8.1)."""
    from peft import LoraConfig, get_peft_model

    check(r > 0, f"lora_r must be a positive integer, got {r}")
    linear = sorted({n.split(".")[-1] for n, m in core.named_modules() if isinstance(m, torch.nn.Linear)})
    for t in targets:
        check(t in linear, f"lora target {t!r} matches no module; the model's linear layers are {linear}")
    lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    return get_peft_model(core, lora)
