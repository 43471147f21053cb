"""Task interface shared by every evaluation task, plus the seeded split logic for generated tasks."""

from __future__ import annotations

import random
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

from dllm.errors import DllmError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Item:
    """One task instance.

    `prompt` is exactly what the model sees, `reference` is the canonical answer (the training
    target), and `meta` holds whatever the scorer needs; it stays JSON-serialisable so items can be
    dumped next to model outputs.
    """

    task: str
    prompt: str
    reference: str
    meta: dict


class Task(ABC):
    """A named task: deterministic items per split and a scorer for one model output."""

    name: str
    # Where the items, prompts and scorer come from, named in dllm eval's summary: "ours" (dllm's own
    # format), "official format" (our items, a benchmark's prompts and scorer), "official items".
    provenance: str = "ours"

    @abstractmethod
    def items(self, split: str, n: int) -> list[Item]:
        """The first `n` items of `split` ("train" or "test"); the same list on every call."""

    @abstractmethod
    def score(self, item: Item, output: str) -> float:
        """1.0 for a correct output, 0.0 otherwise (or a partial score where the task defines one)."""

    def scores(self, item: Item, output: str) -> dict[str, float]:
        """``{"score": score(...)}`` plus any further scores the task reports beside it (a benchmark's
        strict score as ``score_strict``)."""
        return {"score": self.score(item, output)}


def check_split(task: str, split: str, n: int) -> None:
    if split not in SPLITS:
        raise DllmError(f"split must be one of {list(SPLITS)}, got {split!r} (task {task})")
    if not isinstance(n, int) or n < 0:
        raise DllmError(f"n must be a non-negative int, got {n!r} (task {task})")


def stable_seed(*parts: object) -> int:
    """A seed derived from strings, stable across processes (unlike hash(), which is salted)."""
    return zlib.crc32("/".join(str(p) for p in parts).encode())


class GeneratedTask(Task):
    """A task whose items are generated from a seeded stream, one stream per split.

    The test set is the first `test_size` distinct prompts of the test stream, so it is fixed and
    `items("test", n)` is always a prefix of it. Train items come from a different stream and any
    prompt that also occurs in the test set is skipped, which keeps the splits disjoint even for
    tasks with a small space of instances.
    """

    test_size = 100

    def __init__(self) -> None:
        self._test_cache: list[Item] | None = None

    @abstractmethod
    def make_item(self, split: str, index: int, rng: random.Random) -> Item | None:
        """Item number `index` of `split`; `rng` is that split's stream (advanced by each call).

        Returning None skips the draw, for generators whose raw output needs filtering.
        """

    def _test_items(self) -> list[Item]:
        if self._test_cache is None:
            rng = random.Random(stable_seed(self.name, "test"))
            items: list[Item] = []
            seen: set[str] = set()
            index = 0
            while len(items) < self.test_size:
                item = self.make_item("test", index, rng)
                index += 1
                if item is not None and item.prompt not in seen:
                    seen.add(item.prompt)
                    items.append(item)
                # A generator that keeps repeating itself would otherwise loop forever.
                if index > 100 * self.test_size:
                    raise RuntimeError(f"{self.name}: could not draw {self.test_size} distinct test items")
            self._test_cache = items
        return self._test_cache

    def items(self, split: str, n: int) -> list[Item]:
        check_split(self.name, split, n)
        test = self._test_items()
        if split == "test":
            if n > len(test):
                raise DllmError(f"n must be <= {len(test)} for the {self.name} test set, got {n}")
            return list(test[:n])
        banned = {item.prompt for item in test}
        rng = random.Random(stable_seed(self.name, "train"))
        out: list[Item] = []
        index = 0
        while len(out) < n:
            item = self.make_item("train", index, rng)
            index += 1
            if item is not None and item.prompt not in banned:
                out.append(item)
            if index > 100 * n + 10_000:
                raise RuntimeError(f"{self.name}: train stream keeps hitting test prompts")
        return out
