"""Run a model + sampler over task items: per-item JSONL written as it goes (resumable), and the
summary metrics every table in the project reports (algorithms.md §0.6):

accuracy · NFE per item · tokens/forward over the answer area · tokens/forward over real tokens
(end-of-text excluded) · generated tokens/s (prompt, padding and end-of-text excluded) · latency.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from tqdm import tqdm

from dllm.errors import DllmError, check
from dllm.eval.resume import check_settings, output_lock, run_settings, write_settings
from dllm.eval.tasks import Item, get_task
from dllm.eval.tasks.parallelbench import chat_ids
from dllm.generate import encode_prompts, generate


def item_key(row: dict) -> tuple[str, int]:
    return row["task"], row["index"]


def read_done(path: Path | None) -> dict[tuple[str, int], dict]:
    """Rows already written by an interrupted run (a torn last line is ignored and rewritten)."""
    if path is None or not path.exists():
        return {}
    done = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[item_key(row)] = row
    return done


def prompts_of(model, items: list[Item], chat_template: bool | None = None) -> list:
    """What ``generate`` gets: the prompt texts, or, when an item is a chat (``meta["messages"]``,
    ParallelBench's example turn + instruction), token ids — the chat through the tokenizer's
    template, or its plain-text rendering (``item.prompt``) for a tokenizer without one."""
    if not any("messages" in it.meta for it in items):
        return [it.prompt for it in items]
    tok = model.tokenizer
    use_chat = bool(getattr(tok, "chat_template", None)) if chat_template is None else chat_template
    return [chat_ids(tok, it.meta["messages"]) if use_chat and "messages" in it.meta
            else encode_prompts(tok, [it.prompt], False if "messages" in it.meta else chat_template)[0]
            for it in items]


def run_batch(model, sampler, items: list[Item], gen: dict, reference=None) -> tuple[list[dict], object]:
    """Decode one batch of items; return per-item rows (scored) and the raw result. A task that
    reports further scores (ParallelBench's strict score) adds them to the row beside ``score``."""
    res = generate(model, prompts_of(model, items, gen.get("chat_template")), sampler, reference=reference, **gen)
    rows = []
    for it, text, st in zip(items, res.text, res.stats):
        scores = {k: float(v) for k, v in get_task(it.task).scores(it, text).items()}
        rows.append({"task": it.task, "prompt": it.prompt, "reference": it.reference, "output": text,
                     **scores, "nfe": st.nfe,
                     "committed": st.committed, "gen_tokens": st.gen_tokens, "forward_tokens": st.forward_tokens,
                     "tokens_per_forward": st.tokens_per_forward, "real_tokens_per_forward": st.real_tokens_per_forward,
                     "time": st.wall_time, "batch_size": len(items)})
    return rows, res


def summarize(rows: list[dict]) -> dict:
    """Aggregate per-item rows. Throughput divides by batch wall time once per batch (each row of a
    batch carries the batch's wall time)."""
    if not rows:
        return {}
    n = len(rows)
    nfe = sum(r["nfe"] for r in rows)
    wall = sum(r["time"] / r["batch_size"] for r in rows)
    return {
        "items": n,
        "accuracy": 100.0 * sum(r["score"] for r in rows) / n,
        "nfe": nfe / n,
        "tokens_per_forward": sum(r["committed"] for r in rows) / max(nfe, 1),
        "real_tokens_per_forward": sum(r["gen_tokens"] for r in rows) / max(nfe, 1),
        "tokens_per_second": sum(r["gen_tokens"] for r in rows) / max(wall, 1e-9),
        "latency": sum(r["time"] for r in rows) / n,
        "wall_time": wall,
        "forward_tokens": sum(r.get("forward_tokens", 0) for r in rows) / n,
        "same_as_baseline": 100.0 * sum(r.get("same", True) for r in rows) / n,
        **strict_accuracy(rows),
    }


def strict_accuracy(rows: list[dict]) -> dict:
    """A benchmark's strict score beside its lenient one, over the rows that have it."""
    strict = [r["score_strict"] for r in rows if "score_strict" in r]
    return {"strict_accuracy": 100.0 * sum(strict) / len(strict)} if strict else {}


def dist_state():
    """accelerate's process state; on CPU it must be asked for explicitly, or a torchrun launch
    would run every process as a single one."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def evaluate(model, sampler, tasks: list[str], n_items: int, gen: dict, batch_size: int = 16,
             out_path: str | Path | None = None, progress: bool = True,
             settings: dict | None = None) -> dict[str, dict]:
    """Evaluate on the first ``n_items`` test items of each task. Rows are appended to
    ``out_path`` as they finish; a rerun skips the items already there.

    The output holds one run: its settings (``run_settings``: model, sampler and knobs, ``gen``,
    tasks; ``settings`` adds or replaces entries) are written beside it with the first row, a rerun
    with other settings is refused in one line naming the keys that differ, and ``<out>.lock``
    keeps a second process off the output while this one writes it (dllm/eval/resume.py).

    Under several processes (``torchrun --nproc_per_node N -m dllm.cli eval ...``; accelerate's
    PartialState reads the launcher's environment) the items are sharded round-robin, each process
    appends to its own ``<out>.rank<r>`` file, and the rows are gathered: every process returns
    the summary of all items, and the main process writes the merged file."""
    state = dist_state()
    rank, world = state.process_index, state.num_processes
    out_path = Path(out_path) if out_path else None
    if out_path is None:
        return _evaluate(model, sampler, tasks, n_items, gen, batch_size, None, progress, None, state)
    settings = run_settings(model, sampler, tasks, gen, settings)
    part = out_path.with_name(f"{out_path.name}.rank{rank}") if world > 1 else out_path
    made = [p for p in reversed(out_path.parents) if not p.exists()]
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DllmError(f"output {out_path} cannot be written: its folder cannot be made ({e.strerror})") from e
    try:
        check(not out_path.is_dir(), f"output {out_path} is a folder: give a file path such as {out_path}/items.jsonl")
        with output_lock(out_path if rank == 0 else part):
            check_settings(out_path, settings)
            try:
                return _evaluate(model, sampler, tasks, n_items, gen, batch_size, out_path, progress, settings, state)
            except OSError as e:  # read-only, full disk, ...
                raise DllmError(f"output {out_path} cannot be written ({e.strerror or e})") from e
    except BaseException:
        for p in reversed(made):  # folders this call made and nothing filled
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


def _evaluate(model, sampler, tasks, n_items, gen, batch_size, out_path, progress, settings, state):
    from accelerate.utils import gather_object

    rank, world = state.process_index, state.num_processes
    part = out_path.with_name(f"{out_path.name}.rank{rank}") if out_path and world > 1 else out_path
    done = read_done(out_path)
    mine = read_done(part) if world > 1 else done  # this process's own file
    done.update(mine)
    started = False
    todo = []
    for name in tasks:
        for i, it in enumerate(get_task(name).items("test", n_items)):
            if (name, i) not in done:
                todo.append((i, it))
    todo = todo[rank::world]
    bar = None  # shown from the first decoded batch on: a bad setting fails before, in one line
    for s in range(0, len(todo), batch_size):
        chunk = todo[s:s + batch_size]
        rows, _ = run_batch(model, sampler, [it for _, it in chunk], gen)
        if bar is None:
            bar = tqdm(total=len(todo), desc="eval", disable=not progress or not state.is_main_process)
        if part and not started:  # nothing is written before a first batch has decoded
            if rank == 0:
                write_settings(out_path, settings)
            # rewrite without a possibly torn last line before appending
            part.write_text("".join(json.dumps(r) + "\n" for r in mine.values()))
            started = True
        for (i, _), row in zip(chunk, rows):
            row["index"] = i
            done[item_key(row)] = row
            if part:
                with part.open("a") as f:
                    f.write(json.dumps(row) + "\n")
        bar.update(len(chunk))
    if bar is not None:
        bar.close()
    if world > 1:  # every process ends with every row
        for row in gather_object(list(done.values())):
            done[item_key(row)] = row
        if out_path and state.is_main_process and done:
            ordered = sorted(done.values(), key=lambda r: (tasks.index(r["task"]) if r["task"] in tasks else -1,
                                                           r["index"]))
            write_settings(out_path, settings)
            out_path.write_text("".join(json.dumps(r) + "\n" for r in ordered))
        state.wait_for_everyone()
        if part:
            part.unlink(missing_ok=True)  # merged into out_path
    per_task = {name: summarize([r for k, r in done.items() if k[0] == name and k[1] < n_items]) for name in tasks}
    for name in tasks:
        if per_task[name]:
            per_task[name]["provenance"] = get_task(name).provenance
    per_task["all"] = summarize([r for k, r in done.items() if k[0] in tasks and k[1] < n_items])
    return per_task


def markdown_table(per_task: dict[str, dict], label: str | None = None) -> str:
    """One row per task: its provenance ("ours", "official format", "official items"; see
    dllm/eval/tasks/base.py), accuracy, a strict-accuracy column when some task reports one
    (ParallelBench: lenient "acc %" and strict side by side), then speed."""
    strict = any("strict_accuracy" in s for s in per_task.values() if s)
    cols = ["accuracy"] + (["strict_accuracy"] if strict else []) + [
        "nfe", "tokens_per_forward", "real_tokens_per_forward", "tokens_per_second", "latency"]
    head = (["task", "source"] + ([label] if label else []) + ["acc %"] + (["strict acc %"] if strict else [])
            + ["NFE", "tok/fwd", "real tok/fwd", "tok/s", "latency s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in per_task.items():
        if not s:
            continue
        vals = [("–" if c not in s else f"{s[c]:.1f}") if c.endswith("accuracy") else f"{s[c]:.2f}" for c in cols]
        lines.append("| " + " | ".join([name, s.get("provenance", "")] + ([label] if label else []) + vals) + " |")
    return "\n".join(lines)
