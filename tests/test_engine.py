"""The one engine, step by step: rows that join mid-flight, leave early or fail never change the
tokens of the rows beside them (continuous batching ≡ decoding alone)."""

import pytest
import torch

import dllm
from dllm.engine import Engine, row, settings
from dllm.samplers import FreeDaveSampler, LLaDASampler, ThresholdSampler
from dllm.samplers.base import Sampler
from dllm.testing import tiny_model

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18], [9], [20, 21, 22, 23, 24, 25, 26]]


def model_for(family):
    extra = {"block_size": 8} if family == "fast_dllm_v2" else {}
    return tiny_model(family, seed=3, num_layers=2, **extra).double()


def mixes(family):
    caches = ["none", "prefix", "dual"] if family != "fast_dllm_v2" else ["none", "block", "sub_block"]
    windows = [8, 16] if family != "fast_dllm_v2" else [8, 4]
    out = []
    for i in range(8):
        cache = caches[i % 3]
        w = windows[i % 2] if cache != "sub_block" else 4
        sampler = [LLaDASampler(), ThresholdSampler(0.6), LLaDASampler(temperature=0.9),
                   FreeDaveSampler(draft_steps=2)][i % 4]
        out.append((PROMPTS[i % 4], dict(sampler=sampler, cache=cache, block_length=w, gen_length=16 * (1 + i % 2)),
                    7 if i % 4 == 2 else None))
    return out


@pytest.mark.parametrize("family", ["llada", "dream", "fast_dllm_v2"])
def test_rows_joining_mid_flight_equal_each_alone(family):
    """Eight requests, mixed samplers (seeded sampling included), caches, windows and lengths, join an
    engine one step apart; each row's tokens equal ``dllm.generate`` of that request alone."""
    model = model_for(family)
    engine = Engine(model)
    pending, rows = list(mixes(family)), []
    with torch.no_grad():
        while pending or engine.live:
            if pending:
                prompt, kw, seed = pending.pop(0)
                s = settings(model, kw["sampler"], gen_length=kw["gen_length"], block_length=kw["block_length"],
                             cache=kw["cache"], stop_at_eos=False)
                rows.append(engine.admit(row(model, prompt, s, seed=seed)))
            engine.step()
    for r, (prompt, kw, seed) in zip(rows, mixes(family)):
        alone = dllm.generate(model, [prompt], stop_at_eos=False, seed=seed, **kw)
        assert torch.equal(r.result[0], alone.ids[0]), (family, kw)
        assert r.stats.nfe == alone.stats[0].nfe


def test_seeded_sampling_is_batch_invariant():
    model = model_for("llada")
    s = LLaDASampler(temperature=1.0)
    batch = dllm.generate(model, PROMPTS, s, gen_length=16, block_length=8, seed=3)
    for i, p in enumerate(PROMPTS):
        assert torch.equal(dllm.generate(model, [p], s, gen_length=16, block_length=8, seed=3).ids[0], batch.ids[i])
    other = dllm.generate(model, PROMPTS, s, gen_length=16, block_length=8, seed=4)
    assert any(not torch.equal(a, b) for a, b in zip(batch.ids, other.ids))  # the seed matters


def test_retired_row_frees_its_place_and_leaves_the_others_alone():
    model = model_for("llada")
    s = settings(model, ThresholdSampler(0.6), gen_length=32, block_length=8, cache="dual", stop_at_eos=False)
    engine = Engine(model)
    with torch.no_grad():
        rows = [engine.admit(row(model, p, s)) for p in PROMPTS]
        engine.step()
        engine.retire(rows[1])
        assert rows[1].done and rows[1].finished and engine.live == 3
        late = engine.admit(row(model, PROMPTS[1], s))  # reuses the freed board and cache rows
        assert late.slot == rows[1].slot and late.kv == (rows[1].slot,)
        while engine.live:
            engine.step()
    for r in rows[:1] + rows[2:] + [late]:
        alone = dllm.generate(model, [r.prompt], ThresholdSampler(0.6), gen_length=32, block_length=8, cache="dual",
                              stop_at_eos=False)
        assert torch.equal(r.result[0], alone.ids[0])


class Broken(Sampler):
    def step(self, state):
        raise ValueError("broken sampler")


def test_a_failing_sampler_retires_only_its_rows():
    model = model_for("llada")
    good = settings(model, LLaDASampler(), gen_length=16, block_length=8, stop_at_eos=False)
    bad = settings(model, Broken(), gen_length=16, block_length=8, stop_at_eos=False)
    engine = Engine(model, isolate_errors=True)
    with torch.no_grad():
        rows = [engine.admit(row(model, p, good if i % 2 == 0 else bad)) for i, p in enumerate(PROMPTS)]
        while engine.live:
            engine.step()
    assert [r.error for r in rows[1::2]] == ["ValueError: broken sampler"] * 2
    for r in rows[0::2]:
        assert r.error is None
        assert torch.equal(r.result[0], dllm.generate(model, [r.prompt], LLaDASampler(), gen_length=16,
                                                      block_length=8, stop_at_eos=False).ids[0])
    with pytest.raises(ValueError, match="broken sampler"):  # generate() raises
        dllm.generate(model, PROMPTS[:1], Broken(), gen_length=16, block_length=8)


@pytest.mark.parametrize("family", ["llada", "fast_dllm_v2"])
def test_multi_block_every_sampler_every_cache_batch_equals_single(family):
    """Multi-block decoding (the next window joins once the active one is half committed): every
    sampler with every cache, batched ≡ single; the exact block cache ≡ no cache."""
    from dllm.samplers import SAMPLERS

    model = model_for(family)
    caches = ["none", "prefix", "dual"] if family == "llada" else ["none", "block"]
    for name in sorted(set(SAMPLERS) - {"learn2pd"}):
        by_cache = {}
        for cache in caches:
            kw = dict(gen_length=32, block_length=8, cache=cache, multi_block=0.5, stop_at_eos=False, trace=True)
            batch = dllm.generate(model, PROMPTS, SAMPLERS[name](), **kw)
            for i, p in enumerate(PROMPTS):
                alone = dllm.generate(model, [p], SAMPLERS[name](), **kw)
                assert torch.equal(alone.ids[0], batch.ids[i]), (family, name, cache, i)
            by_cache[cache] = batch
        if family == "fast_dllm_v2":
            assert [t.tolist() for t in by_cache["block"].ids] == [t.tolist() for t in by_cache["none"].ids], name


def test_multi_block_one_is_block_by_block_and_below_one_overlaps_blocks():
    model = model_for("llada")
    s = LLaDASampler()
    plain = dllm.generate(model, PROMPTS, s, gen_length=32, block_length=8, stop_at_eos=False, trace=True)
    one = dllm.generate(model, PROMPTS, s, gen_length=32, block_length=8, stop_at_eos=False, trace=True,
                        multi_block=1.0)
    assert all(torch.equal(a, b) for a, b in zip(plain.ids, one.ids))
    for t in plain.trace:  # block by block: every position of block k before any of block k+1
        steps = t.step.view(4, 8)
        assert (steps[:-1].max(1).values < steps[1:].min(1).values).all()
    half = dllm.generate(model, PROMPTS, ThresholdSampler(0.6), gen_length=32, block_length=8, stop_at_eos=False,
                         trace=True, multi_block=0.25)
    overlaps = sum(bool((t.step.view(4, 8)[:-1].max(1).values > t.step.view(4, 8)[1:].min(1).values).any())
                   for t in half.trace)
    assert overlaps > 0  # a later block committed positions while the earlier one still had MASK


@pytest.mark.parametrize("value", [0, 1.5, -0.1, "half"])
def test_multi_block_knob_is_checked(value):
    with pytest.raises(dllm.DllmError, match=r"multi_block must be in \(0, 1\]"):
        dllm.generate(model_for("llada"), PROMPTS[:1], LLaDASampler(), gen_length=16, block_length=8, multi_block=value)


def test_multi_block_refuses_a_fixed_window_sampler(tmp_path):
    from dllm.samplers import Learn2PDFilter, Learn2PDSampler

    folder = Learn2PDFilter(block_length=8).save(tmp_path / "f")
    with pytest.raises(dllm.DllmError, match="multi_block < 1 widens the window"):
        dllm.generate(model_for("llada"), PROMPTS[:1], Learn2PDSampler(filter=str(folder)), gen_length=16,
                      block_length=8, multi_block=0.5)


def test_schedule_sees_each_blocks_mask_count_from_the_first_block_on():
    """LLaDA's schedule reads the block's mask count at its start: steps=16 over one block of 32
    commits two tokens per forward from the very first block (16 forwards, not 32)."""
    model = model_for("llada")
    out = dllm.generate(model, [[5, 6, 7]], LLaDASampler(), gen_length=32, block_length=32, steps=16,
                        stop_at_eos=False, trace=True)
    assert out.stats[0].nfe == 16
    assert sorted(torch.bincount(out.trace[0].step)[1:].tolist()) == [2] * 16
    two = dllm.generate(model, [[5, 6, 7]], LLaDASampler(), gen_length=32, block_length=16, steps=8,
                        stop_at_eos=False)
    assert two.stats[0].nfe == 8
