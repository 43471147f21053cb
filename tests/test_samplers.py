"""Sampler properties on hand-made logits, and one conformance test over the registry."""

import pytest
import torch

import dllm
from dllm.errors import DllmError
from dllm.samplers import SAMPLERS, DreamSampler, LLaDASampler, StepState, ops


def state(logits, masked=None, step=0, steps=4, gen=None):
    b, w, _ = logits.shape
    masked = torch.ones(b, w, dtype=torch.bool) if masked is None else masked
    return StepState(logits=logits, tokens=torch.full((b, w), 99), masked=masked, block_step=step,
                     steps_per_block=steps, block_masked=masked.sum(-1), end_token_ids=(0,), generator=gen)


def peaked(b=3, w=8, v=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, w, v, generator=g) * 3


def test_transfer_schedule_matches_llada():
    # M=10 over s=4 steps: 3, 3, 2, 2 (base 2, remainder 2 to the first steps)
    q = [ops.transfer_quota(torch.tensor([10]), 4, j).item() for j in range(4)]
    assert q == [3, 3, 2, 2] and sum(q) == 10


def test_top_k_mask_stable_and_clamped():
    scores = torch.tensor([[0.5, 0.9, 0.5, float("-inf")]], dtype=torch.float64)
    assert ops.top_k_mask(scores, torch.tensor([2])).tolist() == [[True, True, False, False]]  # tie -> lower index
    assert ops.top_k_mask(scores, torch.tensor([9])).tolist() == [[True, True, True, False]]  # never a -inf


def test_llada_commits_quota_of_most_confident():
    logits = peaked()
    d = LLaDASampler().step(state(logits, steps=4))  # 8 masked / 4 steps -> 2 per row
    assert d.commit.sum(-1).tolist() == [2, 2, 2]
    conf = logits.double().softmax(-1).max(-1).values
    for r in range(3):
        chosen = conf[r][d.commit[r]]
        assert chosen.min() >= conf[r][~d.commit[r]].max()
    assert torch.equal(d.tokens, logits.argmax(-1))
    assert d.confidence.dtype == torch.float64


def test_only_masked_positions_and_at_least_one():
    logits = peaked()
    masked = torch.zeros(3, 8, dtype=torch.bool)
    masked[0, 5] = masked[1, 0] = masked[1, 7] = True  # row 2 has nothing left
    for s in [LLaDASampler(), LLaDASampler(remasking="random"), DreamSampler(alg="origin"), DreamSampler()]:
        d = s.step(state(logits, masked=masked, steps=64))
        assert not (d.commit & ~masked).any()
        assert d.commit[:2].any(-1).all()


def test_greedy_deterministic_and_seeded_sampling_reproducible():
    logits = peaked()
    for s in [LLaDASampler(), DreamSampler(alg="topk_margin")]:
        a, b = s.step(state(logits)), s.step(state(logits))
        assert torch.equal(a.commit, b.commit) and torch.equal(a.tokens, b.tokens)
    s = LLaDASampler(temperature=1.0)
    a = s.step(state(logits, gen=torch.Generator().manual_seed(5)))
    b = s.step(state(logits, gen=torch.Generator().manual_seed(5)))
    assert torch.equal(a.tokens, b.tokens)


def test_gumbel_sampling_follows_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0]]).expand(20000, 3)
    draws = ops.gumbel_argmax(logits, 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3).double() / draws.numel()
    assert torch.allclose(freq, torch.softmax(torch.tensor([0.0, 1.0, 2.0]).double(), 0), atol=0.015)


def test_top_p_top_k_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(ops.filter_top_p(logits, 0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(ops.filter_top_p(logits, 0.1)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(ops.filter_top_k(logits, 3)).tolist() == [[True, True, True, False]]


def test_confidence_eos_ranks_last():
    logits = torch.full((1, 3, 4), -5.0)
    logits[0, 0, 0] = 9.0  # very confident end token at position 0
    logits[0, 1, 2] = 2.0
    logits[0, 2, 3] = 1.0
    d = LLaDASampler(confidence_eos_eot_inf=True).step(state(logits, steps=3))  # quota 1
    assert d.commit[0].tolist() == [False, True, False]
    d = LLaDASampler(logits_eos_inf=True).step(state(logits, steps=3))
    assert d.tokens[0, 0] != 0


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
def test_dream_schedule_fills_block_in_steps(alg):
    logits, masked = peaked(b=2, w=8), torch.ones(2, 8, dtype=torch.bool)
    s = DreamSampler(alg=alg)
    for j in range(4):
        d = s.step(state(logits, masked=masked, step=j, steps=4))
        masked = masked & ~d.commit
    assert not masked.any()


def test_dream_alg_temp_samples_positions():
    logits = peaked(b=1, w=8)
    picks = {tuple(DreamSampler(alg_temp=5.0).step(state(logits, steps=4, gen=torch.Generator().manual_seed(i)))
                   .commit[0].tolist())
             for i in range(10)}
    assert len(picks) > 1


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(temperature=-1), "temperature must be >= 0"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(remasking="best"), "remasking must be one of"),
])
def test_bad_sampler_knobs(kwargs, pattern):
    with pytest.raises(DllmError, match=pattern):
        LLaDASampler(**kwargs)


def test_unknown_sampler_name():
    with pytest.raises(DllmError, match="sampler must be one of"):
        dllm.samplers.build_sampler("nope")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("family", ["llada", "dream", "fast_dllm_v2"])
def test_every_sampler_runs_through_the_loop(checkpoints, name, family):
    """Conformance: each registered sampler at its defaults fills every mask, on every family."""
    model = dllm.load(checkpoints[family])
    out = dllm.generate(model, ["the cat sat on", "one two"], SAMPLERS[name](), gen_length=64, block_length=32,
                        stop_at_eos=False)
    for ids, st in zip(out.ids, out.stats):
        assert ids.numel() == 64 and not (ids == model.mask_token_id).any()
        assert (st.committed == 64 or st.truncations > 0) and 1 <= st.nfe <= 64
