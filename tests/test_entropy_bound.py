"""EB-Sampler (entropy-bounded unmasking): the rule on hand-made logits, against an independent
computation; batched ≡ single and cached ≡ uncached through the loop; bad γ."""

import math

import pytest
import torch

import dllm
from dllm.errors import DllmError
from dllm.samplers import SAMPLERS, EntropyBoundSampler, StepState, ops
from dllm.testing import tiny_model


def state(logits, masked=None):
    b, w, _ = logits.shape
    masked = torch.ones(b, w, dtype=torch.bool) if masked is None else masked
    return StepState(logits=logits, tokens=torch.full((b, w), 99), masked=masked, block_step=0, steps_per_block=w,
                     block_masked=masked.sum(-1), end_token_ids=(0,))


def support_logits(sizes, v=6):
    """One position per entry: uniform over the first ``n`` tokens (entropy log n), -inf elsewhere."""
    logits = torch.full((1, len(sizes), v), -math.inf, dtype=torch.float64)
    for i, n in enumerate(sizes):
        logits[0, i, :n] = 0.0
    return logits


def reference_commit(logits, masked, gamma):
    """The paper's rule written out position by position in plain Python: entropies from the
    softmax, masked positions sorted by (entropy, index), rank k commits iff the sum of the k
    smallest entropies minus their maximum is ≤ γ, the first always."""
    rows = []
    for b in range(logits.shape[0]):
        ent = {}
        for i in range(logits.shape[1]):
            if masked[b, i]:
                z = [math.exp(x) for x in logits[b, i].tolist()]
                p = [x / sum(z) for x in z]
                ent[i] = -sum(q * math.log(q) for q in p if q > 0)
        order = sorted(ent, key=lambda i: (ent[i], i))
        chosen = set()
        for k in range(1, len(order) + 1):
            hs = [ent[i] for i in order[:k]]
            if k == 1 or sum(hs) - max(hs) <= gamma:
                chosen.add(order[k - 1])
            else:
                break
        rows.append([i in chosen for i in range(logits.shape[1])])
    return rows


def test_rule_on_known_entropies():
    # entropies: log 2, 0, log 6, log 3 -> sorted 0 (pos 1), .693 (pos 0), 1.099 (pos 3), 1.792 (pos 2)
    logits = support_logits([2, 1, 6, 3])
    commits = {g: EntropyBoundSampler(g).step(state(logits)).commit[0].tolist() for g in (0.01, 0.5, 0.7, 1.7, 1.8)}
    assert commits[0.01] == [True, True, False, False]  # the second costs only the first's H = 0
    assert commits[0.5] == [True, True, False, False]  # 0 + .693 > .5 stops the third
    assert commits[0.7] == [True, True, False, True]  # 0 + .693 ≤ .7; 0 + .693 + 1.099 > .7
    assert commits[1.7] == [True, True, False, True]
    assert commits[1.8] == [True, True, True, True]  # 1.792 ≤ 1.8


def test_bound_is_inclusive():
    """``≤`` γ, not ``<``: γ exactly equal to the float64 entropy sum of the first two ranks lets the
    third commit; the next float below does not."""
    logits = support_logits([2, 3, 4])
    h = ops.entropy(ops.probs64(logits))[0]
    gamma = float(h[0] + h[1])
    assert EntropyBoundSampler(gamma).step(state(logits)).commit.sum().item() == 3
    below = math.nextafter(gamma, 0.0)
    assert EntropyBoundSampler(below).step(state(logits)).commit.sum().item() == 2


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("gamma", [0.05, 0.3, 1.0, 3.0])
def test_rule_matches_independent_computation(seed, gamma):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(3, 12, 7, generator=g, dtype=torch.float64) * (1 + seed)).float()
    masked = torch.rand(3, 12, generator=g) < 0.6
    masked[:, 3] = True
    masked[2] = False  # a row with nothing to decode commits nothing
    d = EntropyBoundSampler(gamma).step(state(logits, masked))
    want = reference_commit(logits.double(), masked, gamma)
    assert d.commit.tolist() == want
    assert not (d.commit & ~masked).any()
    assert (d.commit.sum(-1)[:2] >= 1).all() and d.commit[2].sum() == 0
    tokens = logits.argmax(-1)
    assert torch.equal(d.tokens, tokens)  # greedy proposals
    assert torch.allclose(d.confidence, ops.probs64(logits).gather(-1, tokens[..., None]).squeeze(-1))


@pytest.mark.parametrize("seed", range(4))
def test_larger_budget_never_commits_less(seed):
    logits = torch.randn(4, 16, 9, generator=torch.Generator().manual_seed(seed)) * 3
    counts = [EntropyBoundSampler(g).step(state(logits)).commit.sum().item() for g in (1e-6, 0.1, 0.5, 1.0, 5.0, 100.0)]
    assert counts == sorted(counts)
    assert counts[-1] == 4 * 16 and counts[0] >= 4


def test_ties_go_to_the_lower_index():
    logits = support_logits([2, 2, 2, 2])  # equal entropies; a budget for exactly two ranks
    d = EntropyBoundSampler(0.7).step(state(logits))
    assert d.commit[0].tolist() == [True, True, False, False]


@pytest.mark.parametrize("gamma", [0, 0.0, -0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_gamma_is_one_line_error(gamma):
    with pytest.raises(DllmError, match=r"^gamma must be > 0 and finite, got .*$"):
        EntropyBoundSampler(gamma)


def test_registered_with_a_config():
    from pathlib import Path

    import yaml

    import dllm.conf

    assert SAMPLERS["entropy_bound"] is EntropyBoundSampler
    conf = Path(dllm.conf.__file__).parent / "sampler" / "entropy_bound.yaml"
    cfg = yaml.safe_load(conf.read_text())
    assert cfg["_target_"] == "dllm.samplers.EntropyBoundSampler" and cfg["gamma"] == 0.1


@pytest.mark.parametrize("gamma", [0.1, 1.0])
def test_batch_equals_single_on_the_embedded_model(gamma):
    from dllm.eval.tasks import get_task

    model = dllm.load("dllm-tiny")
    items = [it for t in ("waiting_line/copy", "waiting_line/reverse", "sudoku/4x4")
             for it in get_task(t).items("test", 1)]
    prompts = [it.prompt for it in items]
    s = EntropyBoundSampler(gamma)
    kw = dict(gen_length=32, block_length=32)
    batched = dllm.generate(model, prompts, s, **kw)
    for i, p in enumerate(prompts):
        alone = dllm.generate(model, [p], s, **kw)
        assert torch.equal(alone.ids[0], batched.ids[i]), i
    assert all(not (ids == model.mask_token_id).any() for ids in batched.ids)
    assert sum(st.nfe for st in batched.stats) < sum(st.committed for st in batched.stats)  # parallel somewhere


def test_batch_equals_single_tiny_random_model():
    model = tiny_model("llada", seed=7)
    prompts = ["the cat sat on the", "one", "hello world is a big red dog"]
    kw = dict(gen_length=16, block_length=8)
    batched = dllm.generate(model, prompts, EntropyBoundSampler(0.5), **kw)
    for i, p in enumerate(prompts):
        assert torch.equal(dllm.generate(model, [p], EntropyBoundSampler(0.5), **kw).ids[0], batched.ids[i])


def test_block_cache_equals_no_cache_on_the_embedded_block_model():
    """Exact cache (block-causal dllm-tiny-bd, float64): cached ≡ uncached at two budgets."""
    from dllm.eval.tasks import get_task

    model = dllm.load("dllm-tiny-bd", dtype="float64")
    items = [it for t in ("waiting_line/copy", "sudoku/4x4") for it in get_task(t).items("test", 1)]
    prompts = [it.prompt for it in items]
    for gamma in (0.1, 2.0):
        s = EntropyBoundSampler(gamma)
        base = dllm.generate(model, prompts, s, gen_length=32, block_length=16, cache="none")
        got = dllm.generate(model, prompts, s, gen_length=32, block_length=16, cache="block")
        assert [t.tolist() for t in got.ids] == [t.tolist() for t in base.ids], gamma
