"""Evaluation tasks: ParallelBench-style list edits and grid puzzles, reasoning-gym, GSM8K.

`TASKS` maps every task name to its instance; `TINY_TASKS` names the tasks the embedded tiny model
is trained and evaluated on. Prompts of the tiny tasks are single compact lines (see each module's
docstring for the formats).
"""

from __future__ import annotations

from dllm.errors import DllmError

from .base import Item, Task
from .grid_puzzles import latin_square, sudoku
from .gsm8k import GSM8K
from .humaneval import HumanEval
from .reasoning import reasoning_gym_available, reasoning_gym_tasks
from .waiting_line import OPS, WaitingLine

_WAITING_LINE = [WaitingLine(op) for op in OPS]
_PUZZLES = [latin_square(), sudoku()]
_REASONING = reasoning_gym_tasks()

TASKS: dict[str, Task] = {task.name: task for task in [*_WAITING_LINE, *_PUZZLES, *_REASONING, GSM8K(), HumanEval()]}

# rg/* tasks are listed even without reasoning-gym installed; their items() then say how to get it.
TINY_TASKS: list[str] = [task.name for task in [*_WAITING_LINE, *_PUZZLES, *_REASONING]]
REASONING_TASKS: list[str] = [task.name for task in _REASONING]


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise DllmError(f"task must be one of {list(TASKS)}, got {name!r}")
    return TASKS[name]


def task_list(tasks) -> list[str]:
    """A ``tasks`` setting -> task names: ``tiny`` (the whole small-model suite; reasoning-gym tasks
    when installed), ``trained`` (what dllm-tiny was trained on), one name or a list of names."""
    if tasks == "tiny":
        return [t for t in TINY_TASKS if t not in REASONING_TASKS or reasoning_gym_available()]
    if tasks == "trained":
        return [t for t in TINY_TASKS if t not in REASONING_TASKS]
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
    "get_task",
    "task_list",
    "reasoning_gym_available",
]
