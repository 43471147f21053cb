"""GSM8K loading and scoring for real models, offline from a JSONL file.

Files hold one `{"question", "answer"}` object per line, the answer ending in `#### <number>`
(the openai/grade-school-math layout). Answer extraction follows lm-evaluation-harness's gsm8k
task: the "strict" match takes the number after `####`, the "flexible" one the last number in the
text; we also read `\\boxed{...}`, which chat models trained on MATH-style data tend to emit.
Numbers are compared as decimals after dropping commas, `$` and a trailing period.
"""

from __future__ import annotations

import json
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from dllm.errors import DllmError

from .base import Item, Task, check_split

DEFAULT_PATH = "../shared/data/gsm8k/test.jsonl"
PATH_ENV = "DLLM_GSM8K_PATH"
# lm-eval's gsm8k prompt (doc_to_text); chat models get the same string as their user turn.
PROMPT_TEMPLATE = "Question: {question}\nAnswer:"

_STRICT_RE = re.compile(r"####\s*\$?\s*(-?[0-9.,]+)")
_NUMBER_RE = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?")


def load_gsm8k_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a GSM8K-format JSONL file, each with `question` and `answer` strings."""
    path = Path(path)
    if not path.is_file():
        raise DllmError(f"GSM8K file not found: {path} (set {PATH_ENV} or pass path=)")
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record.get("question"), str) or not isinstance(record.get("answer"), str):
                raise DllmError(f"{path}:{lineno}: each line needs string fields 'question' and 'answer'")
            records.append(record)
    return records


def normalize_number(text: str) -> Decimal | None:
    """`"$1,234.50."` -> Decimal("1234.50"); None when the text is not a number."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def _last_boxed(text: str) -> str | None:
    """Contents of the last `\\boxed{...}`, following nested braces."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    begin = start + len("\\boxed{")
    for i in range(begin - 1, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i]
    return None


def extract_answer(text: str) -> str | None:
    """The final answer in a model output: `#### n`, else the last `\\boxed{}`, else the last number."""
    strict = _STRICT_RE.findall(text)
    if strict:
        return strict[-1]
    boxed = _last_boxed(text)
    if boxed is not None:
        numbers = _NUMBER_RE.findall(boxed)
        return numbers[-1] if numbers else boxed
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


def gold_answer(answer: str) -> str:
    """The number after `####` in a GSM8K reference solution."""
    found = _STRICT_RE.findall(answer)
    if not found:
        raise DllmError(f"GSM8K answer has no '#### <number>' line: {answer[-60:]!r}")
    return found[-1]


class GSM8K(Task):
    """GSM8K from a local JSONL file; the test split is the whole file, in file order."""

    name = "gsm8k"

    def __init__(self, path: str | os.PathLike | None = None, train_path: str | os.PathLike | None = None,
                 template: str = PROMPT_TEMPLATE) -> None:
        # Paths are resolved when items are requested, so registering the task never touches disk.
        self.path = path
        self.train_path = train_path
        self.template = template

    def _resolve(self, split: str) -> Path:
        if split == "test":
            return Path(self.path or os.environ.get(PATH_ENV) or DEFAULT_PATH)
        if self.train_path is None:
            raise DllmError("gsm8k has no train file; pass GSM8K(train_path=...) to use split 'train'")
        return Path(self.train_path)

    def items(self, split: str, n: int) -> list[Item]:
        check_split(self.name, split, n)
        records = load_gsm8k_jsonl(self._resolve(split))
        if n > len(records):
            raise DllmError(f"n must be <= {len(records)} for gsm8k {split}, got {n}")
        return [
            Item(
                task=self.name,
                prompt=self.template.format(question=r["question"]),
                reference=r["answer"],
                meta={"target": gold_answer(r["answer"]), "question": r["question"]},
            )
            for r in records[:n]
        ]

    def score(self, item: Item, output: str) -> float:
        found = extract_answer(output)
        if found is None:
            return 0.0
        got, want = normalize_number(found), normalize_number(item.meta["target"])
        return 1.0 if got is not None and got == want else 0.0
