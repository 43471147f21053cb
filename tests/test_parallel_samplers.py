"""Properties of the parallel samplers on hand-made logits (design.md §6.8)."""

import pytest
import torch

import dllm
from dllm.errors import DllmError
from dllm.samplers import (
    EntropyThresholdSampler,
    FactorSampler,
    LLaDASampler,
    LocalLeapSampler,
    StepState,
    ThresholdSampler,
)
from dllm.testing import tiny_model


def state(logits, masked=None):
    b, w, _ = logits.shape
    masked = torch.ones(b, w, dtype=torch.bool) if masked is None else masked
    return StepState(logits=logits, tokens=torch.full((b, w), 99), masked=masked, block_step=0, steps_per_block=w,
                     block_masked=masked.sum(-1), end_token_ids=(0,))


def random_logits(seed, b=4, w=16, v=9, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, w, v, generator=g) * scale


def probs_logits(p_top):
    """Logits whose top probability per position is exactly p_top (rest spread over 3 tokens)."""
    p = torch.tensor(p_top, dtype=torch.float64)
    rest = (1 - p) / 3
    probs = torch.stack([p, rest, rest, rest], -1)[None]
    return probs.log().float()


@pytest.mark.parametrize("seed", range(5))
def test_higher_threshold_never_commits_more(seed):
    logits = random_logits(seed)
    counts = [ThresholdSampler(t).step(state(logits)).commit.sum().item() for t in (0.3, 0.5, 0.7, 0.9, 0.99)]
    assert counts == sorted(counts, reverse=True)
    counts = [EntropyThresholdSampler(t).step(state(logits)).commit.sum().item() for t in (0.9, 0.7, 0.5, 0.3, 0.1)]
    assert counts == sorted(counts, reverse=True)


def test_threshold_rule_and_comparator():
    logits = probs_logits([0.95, 0.9, 0.5, 0.2])
    d = ThresholdSampler(0.85).step(state(logits))
    assert d.commit[0].tolist() == [True, True, False, False]
    tau = d.confidence[0, 1].item()  # exactly the second position's float64 confidence
    assert ThresholdSampler(tau).step(state(logits)).commit[0].tolist()[:2] == [True, True]
    assert ThresholdSampler(tau, comparator=">").step(state(logits)).commit[0].tolist()[:2] == [True, False]
    d = ThresholdSampler(1.0, comparator=">").step(state(logits))  # τ=1 with ">" -> one per forward
    assert d.commit.sum().item() == 1


def test_threshold_always_commits_the_best():
    d = ThresholdSampler(0.99).step(state(probs_logits([0.3, 0.6, 0.5])))
    assert d.commit[0].tolist() == [False, True, False]


def test_factor_rule():
    # ranks: c=.99 (2*.01=.02), .9 (3*.1=.3), .8 (4*.2=.8), .7 (5*.3=1.5 > 1) -> first three pass
    d = FactorSampler(1.0).step(state(probs_logits([0.8, 0.99, 0.7, 0.9])))
    assert d.commit[0].tolist() == [True, True, False, True]
    # a smaller factor commits fewer
    assert FactorSampler(0.1).step(state(probs_logits([0.8, 0.99, 0.7, 0.9]))).commit.sum() == 1


def test_factor_ref_compat_quirk():
    c = [0.99, 0.9, 0.8, 0.7]  # first failing rank is the last one
    assert FactorSampler(1.0).step(state(probs_logits(c))).commit.sum() == 3
    assert FactorSampler(1.0, ref_compat=True).step(state(probs_logits(c))).commit.sum() == 4


@pytest.mark.parametrize("seed", range(5))
def test_localleap_contains_threshold_and_reduces_to_it(seed):
    logits = random_logits(seed, scale=3.0)
    masked = torch.rand(4, 16, generator=torch.Generator().manual_seed(seed)) < 0.7
    masked[:, 0] = True
    th = ThresholdSampler(0.9).step(state(logits, masked)).commit
    ll = LocalLeapSampler(0.9, 0.5, 4).step(state(logits, masked)).commit
    assert not (th & ~ll).any()  # LocalLeap ⊇ threshold at the same τ_a
    plain = LocalLeapSampler(0.9, None, 4).step(state(logits, masked)).commit
    assert torch.equal(plain, th)


def test_localleap_relaxes_only_near_anchors():
    # anchor at 0 (c=.95); position 2 (c=.8) is within radius 2, position 6 (c=.8) is not
    c = [0.95, 0.3, 0.8, 0.3, 0.3, 0.3, 0.8, 0.3]
    d = LocalLeapSampler(0.9, 0.75, 2).step(state(probs_logits(c)))
    assert d.commit[0].nonzero().squeeze(-1).tolist() == [0, 2]
    # no anchor -> only the best
    d = LocalLeapSampler(0.99, 0.75, 2).step(state(probs_logits(c)))
    assert d.commit[0].nonzero().squeeze(-1).tolist() == [0]


def test_entropy_threshold_rule():
    logits = torch.full((1, 3, 5), -20.0)
    logits[0, 0, 1] = 20.0  # H ≈ 0
    logits[0, 1] = 0.0  # uniform, H = log 5
    logits[0, 2, :2] = 5.0  # H ≈ log 2 = 0.69
    d = EntropyThresholdSampler(0.5).step(state(logits))
    assert d.commit[0].tolist() == [True, False, False]
    d = EntropyThresholdSampler(0.7).step(state(logits))
    assert d.commit[0].tolist() == [True, False, True]


@pytest.mark.parametrize("make, pattern", [
    (lambda: ThresholdSampler(0.0), r"threshold must be in \(0, 1\]"),
    (lambda: ThresholdSampler(1.2), r"threshold must be in \(0, 1\]"),
    (lambda: ThresholdSampler(0.9, comparator="=="), "comparator must be one of"),
    (lambda: LocalLeapSampler(relaxed_threshold=0.0), r"relaxed_threshold must be in \(0, 1\]"),
    (lambda: LocalLeapSampler(radius=-1), "radius must be an integer >= 0"),
    (lambda: EntropyThresholdSampler(0.0), r"threshold must be in \(0, 1\]"),
    (lambda: FactorSampler(0.0), "factor must be > 0"),
])
def test_bad_knobs(make, pattern):
    with pytest.raises(DllmError, match=pattern):
        make()


@pytest.mark.parametrize("sampler", [ThresholdSampler(0.5), FactorSampler(1.0), LocalLeapSampler(0.6, 0.3, 2),
                                     EntropyThresholdSampler(0.9)], ids=lambda s: type(s).__name__)
def test_batch_equals_single_and_fills_everything(sampler):
    model = tiny_model("llada", seed=7)
    prompts = ["the cat sat on the", "one", "hello world is a big red dog"]
    kw = dict(gen_length=16, block_length=8)
    batched = dllm.generate(model, prompts, sampler, **kw)
    for i, p in enumerate(prompts):
        alone = dllm.generate(model, [p], sampler, **kw)
        assert torch.equal(alone.ids[0], batched.ids[i])
    assert all(not (ids == model.mask_token_id).any() for ids in batched.ids)


def test_threshold_one_equals_baseline_top1():
    """τ = 1 with '>' commits exactly the most confident position: the LLaDA one-token baseline."""
    model = tiny_model("llada", seed=3)
    kw = dict(gen_length=16, block_length=8, stop_at_eos=False)
    a = dllm.generate(model, ["the cat sat"], ThresholdSampler(1.0, comparator=">"), **kw)
    b = dllm.generate(model, ["the cat sat"], LLaDASampler(), **kw)
    assert torch.equal(a.ids[0], b.ids[0])


@pytest.mark.parametrize("family", ["llada", "dream", "fast_dllm_v2"])
@pytest.mark.parametrize("k", [2, 4])
def test_freedave_is_lossless(family, k):
    """Token-identical to static one-token-per-forward decoding, batched, in fewer forwards."""
    from dllm.samplers import FreeDaveSampler
    model = tiny_model(family, seed=11)
    prompts = ["the cat sat on the", "one", "hello world is a big red dog"]
    kw = dict(gen_length=24, block_length=8, stop_at_eos=False)
    static = dllm.generate(model, prompts, LLaDASampler(), **kw)
    fd = dllm.generate(model, prompts, FreeDaveSampler(k), **kw)
    for i in range(len(prompts)):
        assert torch.equal(static.ids[i], fd.ids[i]), i
    assert sum(s.nfe for s in fd.stats) <= sum(s.nfe for s in static.stats)
    assert all(s.forward_tokens > 0 for s in fd.stats)


def test_freedave_draft_steps_must_be_positive():
    from dllm.samplers import FreeDaveSampler
    with pytest.raises(DllmError, match=r"draft_steps \(K\) must be an integer >= 1"):
        FreeDaveSampler(0)


def test_threshold_fallback_leftmost_or_most_confident():
    import torch

    from dllm.errors import DllmError
    from dllm.samplers.threshold import ThresholdSampler, threshold_commit

    conf = torch.tensor([[0.5, 0.8, 0.3, 0.95], [0.5, 0.8, 0.3, 0.6]], dtype=torch.float64)
    masked = torch.tensor([[True, True, True, True], [False, True, True, True]])
    # row 0: 0.95 passes, nothing more; row 1: nothing passes -> one fallback position
    assert threshold_commit(conf, masked, 0.9, ">=").tolist() == [[False, False, False, True],
                                                                   [False, True, False, False]]
    assert threshold_commit(conf, masked, 0.9, ">=", "leftmost").tolist() == [[False, False, False, True],
                                                                               [False, True, False, False]]
    masked[1, 1] = False  # leftmost masked is now column 2, the most confident column 3
    assert threshold_commit(conf, masked, 0.9, ">=", "leftmost")[1].tolist() == [False, False, True, False]
    assert threshold_commit(conf, masked, 0.9, ">=")[1].tolist() == [False, False, False, True]
    import pytest

    with pytest.raises(DllmError, match="fallback must be one of"):
        ThresholdSampler(fallback="random")
