"""Evaluation tasks: ParallelBench-style list edits and grid puzzles (dllm's own format),
ParallelBench itself (its prompts and scores; parallelbench.py), reasoning-gym, GSM8K, HumanEval.

`TASKS` maps every task name to its instance; `TINY_TASKS` names the tasks the embedded tiny model
is trained and evaluated on. Prompts of the tiny tasks are single compact lines (see each module's
docstring for the formats). `PARALLELBENCH_TASKS` are the benchmark's 12 list and puzzle tasks
(words_to_sentence and the other text-writing tasks need a Java grammar checker and are left out),
`PARALLELBENCH_N15_TASKS` its 15-name waiting line.
"""

from __future__ import annotations

import os
from pathlib import Path

from dllm.errors import DllmError

from .base import Item, Task
from .grid_puzzles import latin_square, sudoku
from .gsm8k import GSM8K
from .humaneval import HumanEval
from .parallelbench import SPECS, ParallelBenchTask
from .reasoning import reasoning_gym_available, reasoning_gym_tasks
from .waiting_line import OPS, WaitingLine

_WAITING_LINE = [WaitingLine(op) for op in OPS]
_PUZZLES = [latin_square(), sudoku()]
_REASONING = reasoning_gym_tasks()
_PARALLELBENCH = [ParallelBenchTask(spec) for spec in SPECS]

TASKS: dict[str, Task] = {task.name: task for task in [*_WAITING_LINE, *_PUZZLES, *_REASONING, GSM8K(), HumanEval(),
                                                       *_PARALLELBENCH]}

# rg/* tasks are listed even without reasoning-gym installed; their items() then say how to get it.
TINY_TASKS: list[str] = [task.name for task in [*_WAITING_LINE, *_PUZZLES, *_REASONING]]
REASONING_TASKS: list[str] = [task.name for task in _REASONING]
PARALLELBENCH_TASKS: list[str] = [t.name for t in _PARALLELBENCH if t.spec.group != "waiting_line_n15"]
PARALLELBENCH_N15_TASKS: list[str] = [t.name for t in _PARALLELBENCH if t.spec.group == "waiting_line_n15"]


def use_parallelbench_items(data_dir=None, hub_dataset=None) -> str:
    """Every parallelbench/* task reads the benchmark's own items from ``data_dir`` (a folder of
    ``<group>/<task>.jsonl``) or ``hub_dataset`` (a Hugging Face dataset name); neither: our generated
    items. Returns what the items are, for a run's settings."""
    if data_dir and hub_dataset:
        raise DllmError(f"give data_dir or hub_dataset, not both (got {data_dir!r} and {hub_dataset!r})")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise DllmError(f"data_dir must be a folder path, got {data_dir!r}")
    if data_dir and not Path(data_dir).expanduser().is_dir():
        raise DllmError(f"data_dir {data_dir} is not a folder (give the folder that holds the benchmark's "
                        "<group>/<task>.jsonl files)")
    for task in _PARALLELBENCH:
        task.use(data_dir, hub_dataset)
    if data_dir:
        return str(Path(data_dir).expanduser().resolve())
    return f"hub:{hub_dataset}" if hub_dataset else "generated"


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise DllmError(f"task must be one of {list(TASKS)}, got {name!r}")
    return TASKS[name]


def task_list(tasks) -> list[str]:
    """A ``tasks`` setting -> task names: ``tiny`` (the whole small-model suite; reasoning-gym tasks
    when installed), ``trained`` (what dllm-tiny was trained on), ``parallelbench`` (the benchmark's
    list and puzzle tasks), ``parallelbench_n15`` (its 15-name waiting line), one name or a list."""
    if tasks == "tiny":
        return [t for t in TINY_TASKS if t not in REASONING_TASKS or reasoning_gym_available()]
    if tasks == "trained":
        return [t for t in TINY_TASKS if t not in REASONING_TASKS]
    if tasks == "parallelbench":
        return list(PARALLELBENCH_TASKS)
    if tasks == "parallelbench_n15":
        return list(PARALLELBENCH_N15_TASKS)
    names = [str(tasks)] if isinstance(tasks, str) or not hasattr(tasks, "__iter__") else [str(t) for t in tasks]
    for n in names:
        get_task(n)  # one-line error for an unknown name
    return names


__all__ = [
    "Item",
    "Task",
    "TASKS",
    "TINY_TASKS",
    "REASONING_TASKS",
    "PARALLELBENCH_TASKS",
    "PARALLELBENCH_N15_TASKS",
    "use_parallelbench_items",
    "get_task",
    "task_list",
    "reasoning_gym_available",
]
