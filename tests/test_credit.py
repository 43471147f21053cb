"""Credit decoding against a plain-Python computation of the rule, credit that builds over steps,
the engine-held memory (batched ≡ single), and its knobs."""

import math

import pytest
import torch

import dllm
from dllm.errors import DllmError
from dllm.samplers import CreditSampler
from dllm.samplers.base import StepState
from dllm.testing import tiny_model


def reference_step(logits, slots, k, decay, lam, alpha):
    """One position, plain Python: slots is a list of [id, credit] (len <= k)."""
    z = max(logits)
    logz = z + math.log(sum(math.exp(v - z) for v in logits))
    top = max(range(len(logits)), key=lambda i: (logits[i], -i))
    p_top = math.exp(logits[top] - logz)
    slots = [[i, c * decay] for i, c in slots]
    hit = [s for s in slots if s[0] == top]
    if hit:
        hit[0][1] += max(p_top, 1e-6) ** alpha
    elif len(slots) < k:
        slots.append([top, max(p_top, 1e-6) ** alpha])
    else:
        weakest = min(range(k), key=lambda j: (slots[j][1], j))
        slots[weakest] = [top, max(p_top, 1e-6) ** alpha]
    boost = {i: lam * math.log1p(c) for i, c in slots}
    fused = {i: logits[i] + b for i, b in boost.items()}
    best = max(fused, key=lambda i: fused[i])
    raw_fused = logits[top] + boost.get(top, 0.0)
    token, logit = (best, fused[best]) if fused[best] > raw_fused else (top, raw_fused)
    mass = sum(math.exp(logits[i] - logz) for i in boost)
    boosted = sum(math.exp(fused[i] - logz) for i in boost)
    p_fused = math.exp(logit - (logz + math.log(max(1 - mass + boosted, 1e-6))))
    conf = max(p_top, p_fused)
    return (token if p_fused > p_top else top), conf, slots


def state(logits, carry=None):
    b, w, _ = logits.shape
    return StepState(logits=logits, tokens=torch.zeros(b, w, dtype=torch.long),
                     masked=torch.ones(b, w, dtype=torch.bool), block_step=0, steps_per_block=w,
                     block_masked=torch.full((b,), w), end_token_ids=(0,), carry=carry)


@pytest.mark.parametrize("seed", range(6))
def test_rule_matches_a_plain_computation_over_steps(seed):
    g = torch.Generator().manual_seed(seed)
    s = CreditSampler(threshold=0.9, slots=2)
    carry, ref = None, [[] for _ in range(3)]
    for _ in range(5):  # the same positions over several steps: credits carry over
        logits = torch.randn(1, 3, 6, generator=g, dtype=torch.float64) * 2
        d = s.step(state(logits, carry))
        carry = d.carry
        for i in range(3):
            token, conf, ref[i] = reference_step(logits[0, i].tolist(), ref[i], 2, s.decay, s.fusion, s.alpha)
            assert int(d.tokens[0, i]) == token
            assert float(d.confidence[0, i]) == pytest.approx(conf, rel=1e-9)


def test_a_stable_token_builds_credit_and_commits():
    """p = 0.9 stays below τ = 0.95 for a plain threshold; as the same token stays on top, its fused
    confidence rises past τ (steady credit p^α / (1 - γ)) and the position passes on its own."""
    logits = torch.log(torch.tensor([[[0.9, 0.05, 0.05], [0.34, 0.33, 0.33]]], dtype=torch.float64))
    s, carry, confs, passed = CreditSampler(threshold=0.95), None, [], []
    for _ in range(8):
        d = s.step(state(logits, carry))
        carry = d.carry
        confs.append(float(d.confidence[0, 0]))
        passed.append(confs[-1] > 0.95)
    assert confs[0] == pytest.approx(0.9 * math.exp(0.7 * math.log1p(0.9 ** 0.5)) /
                                     (0.1 + 0.9 * math.exp(0.7 * math.log1p(0.9 ** 0.5))))
    assert all(b > a for a, b in zip(confs, confs[1:]))
    assert not passed[0] and passed[-1]


def test_batched_equals_single_through_the_engine():
    model = tiny_model("llada", seed=2, num_layers=2).double()
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [9]]
    s = CreditSampler(threshold=0.6)
    batch = dllm.generate(model, prompts, s, gen_length=16, block_length=8, stop_at_eos=False)
    for i, p in enumerate(prompts):
        assert torch.equal(dllm.generate(model, [p], s, gen_length=16, block_length=8, stop_at_eos=False).ids[0],
                           batch.ids[i])
    assert "carry_width" not in repr(s)


@pytest.mark.parametrize("kw,pattern", [({"threshold": 0}, "threshold"), ({"decay": 1.5}, "decay"),
                                        ({"fusion": -1}, "fusion"), ({"alpha": 0}, "alpha"), ({"slots": 0}, "slots")])
def test_bad_knobs(kw, pattern):
    with pytest.raises(DllmError, match=pattern):
        CreditSampler(**kw)
