"""Fast-dLLM++ Fréchet profile decoding: the rule against a plain-Python computation of the paper's
L_n, U_n, G_n; factor decoding with f = 1 − δ on equal confidences; the heterogeneity bonus on
uneven ones; batched ≡ single through the loop (cached ≡ uncached is the conformance suite's,
which runs every registered sampler); bad margins."""

import math

import pytest
import torch

import dllm
from dllm.errors import DllmError
from dllm.samplers import SAMPLERS, FactorSampler, FrechetSampler, StepState, ops


def state(logits, masked=None):
    b, w, _ = logits.shape
    masked = torch.ones(b, w, dtype=torch.bool) if masked is None else masked
    return StepState(logits=logits, tokens=torch.full((b, w), 99), masked=masked, block_step=0, steps_per_block=w,
                     block_masked=masked.sum(-1), end_token_ids=(0,))


def confidence_logits(confs, v=8):
    """One position per confidence: the top token has probability c, the rest share 1 − c evenly."""
    logits = torch.empty(1, len(confs), v, dtype=torch.float64)
    for i, c in enumerate(confs):
        logits[0, i] = math.log((1 - c) / (v - 1))
        logits[0, i, 0] = math.log(c)
    return logits


def reference_commit(conf, masked, margin):
    """The paper's rule, position by position: sort masked confidences (ties by index), then
    rank n passes iff max(0, Σ c − (n − 1)) − (1 − c(n)) > δ; the passing prefix, rank 1 always."""
    rows = []
    for b in range(conf.shape[0]):
        cs = {i: conf[b, i].item() for i in range(conf.shape[1]) if masked[b, i]}
        order = sorted(cs, key=lambda i: (-cs[i], i))
        chosen = set()
        for n in range(1, len(order) + 1):
            top = [cs[i] for i in order[:n]]
            lower = max(0.0, sum(top) - (n - 1))
            if n == 1 or lower - (1 - top[-1]) > margin:
                chosen.add(order[n - 1])
            else:
                break
        rows.append([i in chosen for i in range(conf.shape[1])])
    return rows


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("margin", [0.0, 0.1, 0.25, 0.6])
def test_rule_matches_independent_computation(seed, margin):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(3, 12, 7, generator=g, dtype=torch.float64) * (2 + 2 * seed)).float()
    masked = torch.rand(3, 12, generator=g) < 0.7
    masked[:, 0] = True
    masked[2] = False  # nothing to decode: nothing committed
    d = FrechetSampler(margin).step(state(logits, masked))
    conf = ops.probs64(logits).max(-1).values
    assert d.commit.tolist() == reference_commit(conf, masked, margin)
    assert (d.commit.sum(-1)[:2] >= 1).all() and d.commit[2].sum() == 0
    assert torch.equal(d.tokens, logits.argmax(-1))


@pytest.mark.parametrize("c", [0.55, 0.8, 0.93, 0.97, 0.991])
@pytest.mark.parametrize("margin", [0.0, 0.25, 0.5])
def test_equal_confidences_are_factor_decoding(c, margin):
    """Flat profile: G_n > δ ⇔ (n + 1)(1 − c) < 1 − δ, i.e. the factor rule with f = 1 − δ."""
    logits = confidence_logits([c] * 10)
    fre = FrechetSampler(margin).step(state(logits)).commit.sum().item()
    fac = FactorSampler(factor=1 - margin).step(state(logits)).commit.sum().item()
    assert fre == fac


def test_uneven_profile_gets_the_heterogeneity_bonus():
    """Profile .999, .999, .999, .8: the factor rule (f = .75) stops at the fourth (5 × .2 = 1 > .75);
    Fréchet gives L_4 = 3.797 − 3 = .797, U_4 = .2, G_4 = .597 > .25 and commits all four."""
    logits = confidence_logits([0.999, 0.999, 0.999, 0.8])
    assert FactorSampler(factor=0.75).step(state(logits)).commit.sum().item() == 3
    assert FrechetSampler(0.25).step(state(logits)).commit.sum().item() == 4


def test_larger_margin_never_commits_more():
    logits = torch.randn(4, 16, 9, generator=torch.Generator().manual_seed(1)) * 4
    counts = [FrechetSampler(m).step(state(logits)).commit.sum().item() for m in (0.0, 0.1, 0.25, 0.5, 0.9)]
    assert counts == sorted(counts, reverse=True) and counts[-1] >= 4


@pytest.mark.parametrize("margin", [-0.1, 1.0, 2, float("nan"), "0.2"])
def test_bad_margin_is_one_line_error(margin):
    with pytest.raises(DllmError, match=r"^margin must be in \[0, 1\), got .*$"):
        FrechetSampler(margin)


def test_registered_with_a_config():
    from pathlib import Path

    import yaml

    import dllm.conf

    assert SAMPLERS["frechet"] is FrechetSampler
    cfg = yaml.safe_load((Path(dllm.conf.__file__).parent / "sampler" / "frechet.yaml").read_text())
    assert cfg["_target_"] == "dllm.samplers.FrechetSampler" and cfg["margin"] == 0.25


def test_batch_equals_single_on_the_embedded_model():
    from dllm.eval.tasks import get_task

    model = dllm.load("dllm-tiny")
    prompts = [it.prompt for t in ("waiting_line/sort", "waiting_line/reverse", "sudoku/4x4")
               for it in get_task(t).items("test", 1)]
    s, kw = FrechetSampler(0.25), dict(gen_length=32, block_length=32)
    batched = dllm.generate(model, prompts, s, **kw)
    assert sum(st.nfe for st in batched.stats) < 3 * 32  # parallel: fewer forwards than tokens
    for i, p in enumerate(prompts):
        assert torch.equal(dllm.generate(model, [p], s, **kw).ids[0], batched.ids[i]), i
