"""Learn2PD: the filter trainer end to end on a tiny model, the sampler's rules, EoTP, bad input."""

import pytest
import torch

import dllm
from dllm.errors import DllmError
from dllm.samplers import Learn2PDFilter, Learn2PDSampler, StepState
from dllm.testing import tiny_model


def test_trainer_smoke_and_sampler(tmp_path):
    from dllm.training.learn2pd_filter import run
    from dllm.training.mdlm_sft import run as sft
    arch = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=48, max_length=128)
    model_dir = sft("tasks:waiting_line/copy:16", str(tmp_path / "m"), arch=arch,
                    train=dict(max_steps=1, batch_size=4)) / "final" / "model"
    path = run(model=str(model_dir), data="tasks:waiting_line/copy:6", gen_length=16, block_length=8, batch_size=3,
               iterations=50)
    assert path.exists() and (model_dir / "learn2pd_filter.json").exists()
    model = dllm.load(model_dir)
    sampler = Learn2PDSampler(filter=str(model_dir), threshold=0.5)
    prompts = ['copy: ["Ann Lee", "Bob Shaw"]', 'copy: ["Zoe Hill"]']
    out = dllm.generate(model, prompts, sampler, gen_length=16, block_length=8)
    assert all(not (ids == model.mask_token_id).any() for ids in out.ids)
    for i, p in enumerate(prompts):  # batch ≡ single
        assert torch.equal(dllm.generate(model, [p], sampler, gen_length=16, block_length=8).ids[0], out.ids[i])
    with pytest.raises(DllmError, match="filter input size 8 differs from the block length 16"):
        dllm.generate(model, prompts, sampler, gen_length=16, block_length=16)


def filt_accepting(w, positions):
    """A filter whose σ is ~1 at ``positions`` and ~0 elsewhere, whatever the confidences."""
    f = Learn2PDFilter(w, 4)
    with torch.no_grad():
        for p in f.parameters():
            p.zero_()
        bias = torch.full((w,), -20.0)
        bias[positions] = 20.0
        f.net[2].bias.copy_(bias)
    return f


def step_state(tokens_row, conf_peak=5.0, v=6):
    w = len(tokens_row)
    logits = torch.zeros(1, w, v)
    for i, t in enumerate(tokens_row):
        logits[0, i, t] = conf_peak + i * 0.01
    return StepState(logits=logits, tokens=torch.full((1, w), 99), masked=torch.ones(1, w, dtype=torch.bool),
                     block_step=0, steps_per_block=w, block_masked=torch.tensor([w]), end_token_ids=(0,))


def sampler_with(f, **kw):
    s = Learn2PDSampler.__new__(Learn2PDSampler)
    s.filter_path, s.threshold, s.eotp, s.eot_most_confident = ("x", kw.get("threshold", 0.96), kw.get("eotp", True),
                                                                kw.get("eot_most_confident", False))
    s._filter = f
    return s


def test_filter_adds_accepted_positions_to_the_top_token():
    d = sampler_with(filt_accepting(6, [1, 2]), eotp=False).step(step_state([3, 4, 5, 3, 4, 5]))
    # top-1 by confidence is the last position (peak grows with i); the filter adds 1 and 2
    assert d.commit[0].nonzero().squeeze(-1).tolist() == [1, 2, 5]


def test_eotp_cuts_after_first_accepted_end_token():
    d = sampler_with(filt_accepting(6, [1, 3])).step(step_state([3, 4, 5, 0, 4, 0]))
    assert d.end_at.tolist() == [3] and d.commit[0, 3]
    d = sampler_with(filt_accepting(6, [1])).step(step_state([3, 4, 5, 0, 4, 0]))
    assert d.end_at.tolist() == [-1]  # no accepted end token, aggressive branch off
    d = sampler_with(filt_accepting(6, [1]), eot_most_confident=True).step(step_state([3, 4, 5, 0, 4, 0]))
    assert d.end_at.tolist() == [5]  # the most confident end proposal


def test_truncation_is_applied_and_counted():
    model = tiny_model("llada", seed=5)
    eos = model.eos_token_ids[0]

    class CutAt3(Learn2PDSampler):
        def __init__(self):
            pass

        def step(self, state):
            d = dllm.samplers.LLaDASampler().step(state)
            d.end_at = torch.full((state.tokens.shape[0],), 3)
            return d

    out = dllm.generate(model, ["the cat"], CutAt3(), gen_length=16, block_length=8)
    assert out.ids[0][4:].eq(eos).all() and out.stats[0].truncations >= 1 and out.stats[0].nfe < 8


def test_missing_filter_and_bad_threshold(tmp_path):
    with pytest.raises(DllmError, match="filter file .* does not exist"):
        Learn2PDSampler(filter=str(tmp_path / "none.safetensors"))
    with pytest.raises(DllmError, match=r"threshold must be in \(0, 1\]"):
        Learn2PDSampler(filter=str(tmp_path), threshold=0)
