"""The decode loop: batch ≡ single, per-row end handling, stats, and bad input."""

import pytest
import torch

import dllm
from dllm.errors import DllmError
from dllm.samplers import DreamSampler, LLaDASampler
from dllm.testing import tiny_model

PROMPTS = ["the cat sat on the", "one", "hello world is a big red dog and it ran up"]


@pytest.mark.parametrize("family", ["llada", "dream", "fast_dllm_v2"])
@pytest.mark.parametrize("sampler", [LLaDASampler(), DreamSampler(alg="topk_margin")], ids=["llada", "dream"])
def test_batch_equals_single(family, sampler):
    model = tiny_model(family, seed=1)
    kw = dict(gen_length=16, block_length=8, steps=8)
    batched = dllm.generate(model, PROMPTS, sampler, **kw)
    for i, p in enumerate(PROMPTS):
        alone = dllm.generate(model, [p], sampler, **kw)
        assert torch.equal(alone.ids[0], batched.ids[i]), (family, i)
        assert alone.stats[0].nfe == batched.stats[i].nfe


def test_one_token_per_step_baseline_stats():
    model = tiny_model("llada")
    out = dllm.generate(model, PROMPTS[:2], LLaDASampler(), gen_length=16, block_length=8, stop_at_eos=False,
                        trace=True)
    for st, tr in zip(out.stats, out.trace):
        assert st.nfe == 16 and st.committed == 16 and st.tokens_per_forward == 1.0
        assert sorted(tr.step.tolist()) == list(range(1, 17))  # one position per forward
        assert st.forward_tokens == 16 * (st.prompt_tokens + 16)  # padding columns are not counted
    assert out.summary()["nfe_per_seq"] == 16


class ScriptedModel(torch.nn.Module):
    """Proposes token 5 everywhere, except the end token from generation offset ``end_at[row]`` on
    (more confident, so it is committed first)."""

    def __init__(self, base, end_at):
        super().__init__()
        self.base, self.end_at = base, end_at
        for k in ("tokenizer", "mask_token_id", "eos_token_ids", "pad_token_id", "attention_kind", "block_size",
                  "max_length", "device"):
            setattr(self, k, getattr(base, k))

    def forward(self, ids, positions, valid, window):
        """window [B, W]: each row's canvas columns (the engine's ragged-batch protocol)."""
        v = self.base.core.cfg.vocab_size
        logits = torch.zeros(ids.shape[0], window.shape[1], v)
        logits[..., 5] = 2.0
        for r in range(ids.shape[0]):
            key = int(ids[r, 0])  # rows are told apart by their first prompt token
            k = self.end_at.get(key)
            if k is not None:
                gen_start = int(valid[r].sum()) - 16
                for i, c in enumerate(window[r].tolist()):
                    if c - gen_start >= k:
                        logits[r, i, self.eos_token_ids[0]] = 6.0
        return logits


def test_rows_stop_independently_at_end_token():
    base = tiny_model("llada")
    vocab = base.tokenizer.get_vocab()
    model = ScriptedModel(base, {vocab["one"]: 3})
    out = dllm.generate(model, ["one two", "the cat"], LLaDASampler(), gen_length=16, block_length=8)
    first, second = out.stats
    assert out.ids[0][:3].eq(5).all()  # the scripted token, then the end token
    assert out.ids[0][3:].eq(model.eos_token_ids[0]).all() and out.stats[0].gen_tokens == 3
    assert first.stopped_early and first.nfe < 16
    assert not second.stopped_early and second.nfe == 16 and second.gen_tokens == 16


def test_stop_at_eos_is_lossless_for_text():
    model = tiny_model("llada", seed=4)
    kw = dict(gen_length=32, block_length=8)
    a = dllm.generate(model, PROMPTS, LLaDASampler(), stop_at_eos=True, **kw)
    b = dllm.generate(model, PROMPTS, LLaDASampler(), stop_at_eos=False, **kw)
    assert a.text == b.text
    assert sum(s.nfe for s in a.stats) <= sum(s.nfe for s in b.stats)


def test_cfg_runs_and_counts_tokens_twice():
    model = tiny_model("llada")
    plain = dllm.generate(model, PROMPTS[:1], LLaDASampler(), gen_length=8, block_length=8)
    cfg = dllm.generate(model, PROMPTS[:1], LLaDASampler(), gen_length=8, block_length=8, cfg_scale=1.5)
    assert cfg.stats[0].nfe == plain.stats[0].nfe
    assert cfg.stats[0].forward_tokens == 2 * plain.stats[0].forward_tokens


def test_seeded_sampling_reproducible():
    model = tiny_model("dream")
    s = DreamSampler(temperature=1.0, top_p=0.9)
    a = dllm.generate(model, PROMPTS, s, gen_length=16, block_length=8, seed=3)
    b = dllm.generate(model, PROMPTS, s, gen_length=16, block_length=8, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.ids, b.ids))


@pytest.mark.parametrize("kw, pattern", [
    (dict(gen_length=20, block_length=8), r"gen_length \(20\) must be a multiple of block_length \(8\)"),
    (dict(gen_length=16, block_length=8, steps=5), r"steps \(5\) must be a positive multiple of the number of blocks"),
    (dict(gen_length=250, block_length=10), r"exceeds the model's max_length 256"),
    (dict(gen_length=16, block_length=8, cfg_scale=-1.0), "cfg_scale must be >= 0"),
])
def test_bad_generation_arguments(kw, pattern):
    with pytest.raises(DllmError, match=pattern) as e:
        dllm.generate(tiny_model("llada"), PROMPTS, LLaDASampler(), **kw)
    assert "\n" not in str(e.value)


def test_empty_prompt():
    with pytest.raises(DllmError, match="prompt 1 is empty"):
        dllm.generate(tiny_model("llada"), ["the cat", "  "], LLaDASampler(), gen_length=8, block_length=8)


def test_block_length_mismatch_warns_for_block_causal():
    with pytest.warns(UserWarning, match=r"block_length 12 does not divide .* \(8\)"):
        dllm.generate(tiny_model("fast_dllm_v2"), ["the cat"], LLaDASampler(), gen_length=12, block_length=12)


def test_bare_string_prompt_is_a_type_error():
    """A string is not a list of prompts: it used to decode one prompt per character."""
    model = tiny_model("llada")
    with pytest.raises(TypeError, match="prompts must be a list"):
        dllm.generate(model, "hello", LLaDASampler(), gen_length=8, block_length=8)


@pytest.mark.parametrize("kw,message", [({"temperature": float("inf")}, "temperature must be >= 0 and finite"),
                                        ({"temperature": float("nan")}, "temperature must be >= 0 and finite"),
                                        ({"top_k": 1.5}, "top_k must be an integer")])
def test_proposal_knobs_must_be_finite_and_typed(kw, message):
    from dllm.samplers import ThresholdSampler

    with pytest.raises(DllmError, match=message):
        ThresholdSampler(**kw)
    with pytest.raises(DllmError, match=message):
        LLaDASampler(**kw)
