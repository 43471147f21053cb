"""ParallelBench "waiting line" list operations (arXiv 2510.04767, §9 of the spec).

Each item is a queue of 3-6 distinct full names and one edit to apply to it. The paper's tasks use
chat prompts with an in-context example; ours use one compact line so that a tiny model with a
32-64 token answer budget can be trained on them:

    reverse: ["Ann Lee", "Bob Stone", "Cara Hill"]        -> ["Cara Hill", "Bob Stone", "Ann Lee"]
    insert_index 1 "Dan Fox": ["Ann Lee", "Bob Stone"]    -> ["Ann Lee", "Dan Fox", "Bob Stone"]

Indices are 0-based. Scoring follows ParallelBench's metrics: the last `[...]` in the output is
parsed into items; deterministic edits need an exact list match, shuffle needs a permutation that
differs from the input, and the *_random edits accept any output that is exactly one allowed edit
of the input. The random variants are the tasks with many valid answers, the ones where the paper
sees quality collapse as tokens per step grow.
"""

from __future__ import annotations

import json
import random
import re

from .base import GeneratedTask, Item
from .names import FULL_NAMES

OPS = (
    "copy",
    "reverse",
    "sort",
    "shuffle",
    "insert_index",
    "insert_random",
    "remove_index",
    "remove_random",
    "replace_index",
    "replace_random",
)
MIN_LEN, MAX_LEN = 3, 6

_LIST_RE = re.compile(r"\[([^\[\]]*)\]")


def format_list(names: list[str]) -> str:
    """`["A B", "C D"]`: JSON with ", " separators, the format ParallelBench's answers use."""
    return json.dumps(list(names))


def parse_last_list(text: str) -> list[str] | None:
    """Items of the last `[...]` in `text` with quotes and spaces stripped; None when there is none."""
    found = _LIST_RE.findall(text)
    if not found:
        return None
    inner = found[-1].strip()
    if not inner:
        return []
    return [part.strip().strip("\"'").strip() for part in inner.split(",")]


def apply_op(op: str, names: list[str], index: int | None = None, name: str | None = None) -> list[str]:
    """The unique answer of a deterministic edit (copy, reverse, sort, *_index)."""
    out = list(names)
    if op == "copy":
        return out
    if op == "reverse":
        return out[::-1]
    if op == "sort":
        return sorted(out)
    if op == "insert_index":
        out.insert(index, name)
        return out
    if op == "remove_index":
        del out[index]
        return out
    if op == "replace_index":
        out[index] = name
        return out
    raise ValueError(f"op {op!r} has no unique answer")


def is_shuffle(source: list[str], out: list[str]) -> bool:
    return sorted(out) == sorted(source) and out != source


def is_single_insert(source: list[str], out: list[str], name: str) -> bool:
    if len(out) != len(source) + 1:
        return False
    return any(out[p] == name and out[:p] + out[p + 1 :] == source for p in range(len(out)))


def is_single_remove(source: list[str], out: list[str]) -> bool:
    if len(out) != len(source) - 1:
        return False
    return any(source[:p] + source[p + 1 :] == out for p in range(len(source)))


def is_single_replace(source: list[str], out: list[str], name: str) -> bool:
    if len(out) != len(source):
        return False
    changed = [p for p in range(len(source)) if out[p] != source[p]]
    return len(changed) == 1 and out[changed[0]] == name


def _prompt(op: str, names: list[str], index: int | None, name: str | None) -> str:
    args = [op]
    if index is not None:
        args.append(str(index))
    if name is not None:
        args.append(json.dumps(name))
    return f"{' '.join(args)}: {format_list(names)}"


class WaitingLine(GeneratedTask):
    """One ParallelBench waiting-line variant, named `waiting_line/<op>`."""

    def __init__(self, op: str) -> None:
        if op not in OPS:
            raise ValueError(f"op must be one of {list(OPS)}, got {op!r}")
        super().__init__()
        self.op = op
        self.name = f"waiting_line/{op}"

    def make_item(self, split: str, index: int, rng: random.Random) -> Item:
        op = self.op
        # Cycle the lengths so that any prefix of the test set is balanced across 3-6 names,
        # as ParallelBench uses 25 samples per length.
        length = MIN_LEN + index % (MAX_LEN - MIN_LEN + 1)
        # All names distinct: shuffle then needs a different order, and the edited name is
        # unambiguous in the random-edit scorers.
        drawn = rng.sample(FULL_NAMES, length + 1)
        names, extra = drawn[:length], drawn[length]
        pos: int | None = None
        new_name: str | None = None
        if op in ("insert_index", "remove_index", "replace_index"):
            pos = rng.randrange(length + 1 if op == "insert_index" else length)
        if op.startswith(("insert", "replace")):
            new_name = extra

        if op == "shuffle":
            answer = list(names)
            while answer == names:
                rng.shuffle(answer)
        elif op == "insert_random":
            answer = list(names)
            answer.insert(rng.randrange(length + 1), new_name)
        elif op == "remove_random":
            answer = list(names)
            del answer[rng.randrange(length)]
        elif op == "replace_random":
            answer = list(names)
            answer[rng.randrange(length)] = new_name
        else:
            answer = apply_op(op, names, pos, new_name)

        meta = {"op": op, "input": names, "index": pos, "name": new_name}
        return Item(self.name, _prompt(op, names, pos, new_name), format_list(answer), meta)

    def score(self, item: Item, output: str) -> float:
        out = parse_last_list(output)
        if out is None:
            return 0.0
        meta = item.meta
        source = meta["input"]
        op = meta["op"]
        if op == "shuffle":
            ok = is_shuffle(source, out)
        elif op == "insert_random":
            ok = is_single_insert(source, out, meta["name"])
        elif op == "remove_random":
            ok = is_single_remove(source, out)
        elif op == "replace_random":
            ok = is_single_replace(source, out, meta["name"])
        else:
            ok = out == apply_op(op, source, meta["index"], meta["name"])
        return 1.0 if ok else 0.0
