"""CONTRIBUTING.md's recipes, followed once each where no other test follows them: a new task
("Add a task") and a new cache policy ("Add a cache policy"), each registered the way the recipe
says (here by monkeypatching the registry instead of editing it) and run through the real loop.
The sampler, kernel, recipe and decode-setting recipes are followed by frechet, fused_window_attention,
smol_bd and the decode node with their own tests."""

import random

import pytest
import torch

import dllm
from dllm.cache import POLICIES, PrefixCache
from dllm.eval.tasks import Item, get_task
from dllm.eval.tasks.base import GeneratedTask
from dllm.eval.tasks.names import FIRST_NAMES, LAST_NAMES


class EchoTask(GeneratedTask):
    """Recipe step 1 (copy grid_puzzles.py's shape): ``copy: [names]`` -> the same list."""

    name = "toy/copy_three"

    def make_item(self, split: str, index: int, rng: random.Random) -> Item:
        names = [f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}" for _ in range(3)]
        text = "[" + ", ".join(f'"{n}"' for n in names) + "]"
        return Item(self.name, f"copy: {text}", text, {})

    def score(self, item: Item, output: str) -> float:
        return float(output.strip() == item.reference)


def test_add_a_task(monkeypatch):
    from dllm.eval import tasks
    from dllm.eval.runner import evaluate

    monkeypatch.setitem(tasks.TASKS, EchoTask.name, EchoTask())  # recipe step 2: an instance in TASKS
    task = get_task(EchoTask.name)
    test, train = task.items("test", 20), task.items("train", 50)
    assert task.items("test", 20) == test  # recipe step 3: deterministic, splits disjoint
    assert not {i.prompt for i in test} & {i.prompt for i in train}
    per_task = evaluate(dllm.load("dllm-tiny"), dllm.samplers.LLaDASampler(), [EchoTask.name], 8,
                        {"gen_length": 32, "block_length": 32}, progress=False)
    assert per_task[EchoTask.name]["accuracy"] >= 75  # dllm-tiny copies lists: the loop ran the new task


class RefreshEveryOtherCache(PrefixCache):
    """Recipe step 1 (copy PrefixCache): an approximation for bidirectional models that refreshes
    the whole canvas on the first forward of a window and on every other step after it."""

    name = "every_other"

    def plan(self, row, first):
        if first or row.block_step % 2 == 0:
            return 0, row.width, 0, row.end
        return super().plan(row, first)


def test_add_a_cache_policy(monkeypatch):
    from dllm import cache

    monkeypatch.setitem(POLICIES, "every_other", RefreshEveryOtherCache)  # recipe step 2
    monkeypatch.setattr(cache, "CACHES", (*cache.CACHES, "every_other"))
    monkeypatch.setattr(cache, "BIDIRECTIONAL", (*cache.BIDIRECTIONAL, "every_other"))
    model = dllm.load("dllm-tiny")
    prompts = [it.prompt for t in ("waiting_line/copy", "waiting_line/reverse", "sudoku/4x4")
               for it in get_task(t).items("test", 1)]
    s = dllm.samplers.LLaDASampler()  # one token per forward: 8 forwards per window, half of them cached
    kw = dict(gen_length=32, block_length=8, cache="every_other")
    batched = dllm.generate(model, prompts, s, **kw)  # recipe step 4: batched ≡ single
    for i, p in enumerate(prompts):
        assert torch.equal(dllm.generate(model, [p], s, **kw).ids[0], batched.ids[i]), i
    plain = dllm.generate(model, prompts, s, **{**kw, "cache": "none"})
    fed = sum(st.forward_tokens for st in batched.stats)
    assert fed < sum(st.forward_tokens for st in plain.stats)  # it does cache: fewer columns fed
    with pytest.raises(dllm.errors.DllmError, match="cache must be one of"):
        dllm.generate(model, prompts[:1], s, **{**kw, "cache": "every_third"})
