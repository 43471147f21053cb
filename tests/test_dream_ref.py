"""Dream ``ref_compat``: the reference's per-step counts, zero-commit steps included, against an
independent run of the reference's counting loop; the default rule is unchanged."""

import pytest
import torch

import dllm
from dllm.samplers import DreamSampler, StepState
from dllm.samplers.dream import reference_count

CASES = [(10, 4), (16, 16), (16, 32), (32, 32), (7, 20), (64, 64)]  # (masks M, steps): steps >= M gives 0-steps


def reference_loop_counts(m: int, steps: int, eps: float = 1e-3, batch: int = 1) -> list[int]:
    """The reference's counting, written out as its loop runs it: a [batch, m] canvas of masks,
    ``timesteps = linspace(1, eps, steps + 1)`` (float32), batch-mean mask count, ``int(.)``, all
    remaining on the last step, and the top-n of random scores committed."""
    x = torch.zeros(batch, m, dtype=torch.bool)  # True = decoded
    timesteps = torch.linspace(1, eps, steps + 1)
    g = torch.Generator().manual_seed(0)
    counts = []
    for i in range(steps):
        mask_index = ~x
        t, s = timesteps[i], timesteps[i + 1]
        num_mask_token = mask_index.sum() / mask_index.shape[0]
        n = int(num_mask_token * (1 - s / t)) if i < steps - 1 else int(num_mask_token)
        counts.append(n)
        if n > 0:
            conf = torch.rand(batch, m, generator=g).masked_fill(~mask_index, -float("inf"))
            picked = torch.topk(conf, n).indices
            x[torch.arange(batch)[:, None], picked] = True
    assert x.all()
    return counts


def hand_state(logits, masked, step, steps):
    b, w, _ = logits.shape
    return StepState(logits=logits, tokens=torch.full((b, w), 99), masked=masked, block_step=step,
                     steps_per_block=steps, block_masked=masked.sum(-1), end_token_ids=(0,))


def sampler_counts(sampler, m: int, steps: int, batch: int = 2) -> list[list[int]]:
    logits = torch.randn(batch, m, 11, generator=torch.Generator().manual_seed(1)) * 3
    masked = torch.ones(batch, m, dtype=torch.bool)
    counts = []
    for j in range(steps):
        d = sampler.step(hand_state(logits, masked, j, steps))
        assert not (d.commit & ~masked).any()
        counts.append(d.commit.sum(-1).tolist())
        masked = masked & ~d.commit
    assert not masked.any()
    return counts


@pytest.mark.parametrize("m, steps", CASES)
def test_reference_count_matches_the_reference_loop(m, steps):
    want = reference_loop_counts(m, steps)
    got, left = [], m
    for j in range(steps):
        n = int(reference_count(torch.tensor([left]), steps, j, 1e-3))
        got.append(n)
        left -= n
    assert got == want and sum(got) == m
    if steps >= m:
        assert 0 in want  # the case ref_compat exists for


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
@pytest.mark.parametrize("m, steps", CASES)
def test_ref_compat_sampler_commits_the_reference_counts(alg, m, steps):
    want = reference_loop_counts(m, steps, batch=2)  # equal rows: the batch mean is each row's count
    got = sampler_counts(DreamSampler(alg=alg, ref_compat=True), m, steps)
    assert got == [[n, n] for n in want]


def test_ref_compat_alg_temp_counts():
    got = sampler_counts(DreamSampler(alg_temp=1.0, ref_compat=True), 16, 32)
    assert got == [[n, n] for n in reference_loop_counts(16, 32)]


def test_default_never_commits_nothing_and_declares_nothing():
    s = DreamSampler()
    assert not s.may_commit_nothing and DreamSampler(ref_compat=True).may_commit_nothing
    for m, steps in CASES:
        counts = sampler_counts(s, m, min(steps, m))  # the default rule runs at most M steps
        assert all(c >= 1 for row in counts for c in row)


def test_ref_compat_origin_may_skip_a_step_and_flushes_at_the_end():
    counts = sampler_counts(DreamSampler(alg="origin", ref_compat=True), 8, 64, batch=1)
    assert 0 in [c[0] for c in counts] and sum(c[0] for c in counts) == 8


def test_ref_compat_rejects_a_non_bool():
    with pytest.raises(dllm.DllmError, match="ref_compat must be true or false"):
        DreamSampler(ref_compat="yes")


@pytest.mark.parametrize("steps", [16, 32])
def test_ref_compat_through_generate(checkpoints, steps):
    """One window (block_length = gen_length, as the reference): NFE = steps, zero steps counted,
    each forward commits the reference's count; batched ≡ single."""
    model = dllm.load(checkpoints["dream"])
    prompts = ["the cat sat on", "one two", "hello world a big red dog"]
    kw = dict(gen_length=16, block_length=16, steps=steps, stop_at_eos=False, trace=True)
    out = dllm.generate(model, prompts, DreamSampler(ref_compat=True), **kw)
    want = reference_loop_counts(16, steps)
    for i, p in enumerate(prompts):
        assert out.stats[i].nfe == steps and out.stats[i].committed == 16
        per_forward = torch.bincount(out.trace[i].step, minlength=steps + 1)[1:].tolist()
        assert per_forward == want
        alone = dllm.generate(model, [p], DreamSampler(ref_compat=True), **kw)
        assert torch.equal(alone.ids[0], out.ids[i]) and alone.stats[0].nfe == out.stats[i].nfe
    default = dllm.generate(model, prompts, DreamSampler(), **kw)
    assert all(st.nfe <= 16 for st in default.stats)  # the default never spends a forward on nothing
