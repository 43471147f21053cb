"""KV cache policies against uncached decoding, batch against single, every sampler with every cache."""

import pytest
import torch

import dllm
from dllm.cache import CACHES, KVStore
from dllm.errors import DllmError
from dllm.samplers import SAMPLERS, FreeDaveSampler, Learn2PDFilter, Learn2PDSampler, LLaDASampler, ThresholdSampler
from dllm.testing import tiny_model

APPLICABLE = {"llada": ["none", "prefix", "dual"], "dream": ["none", "prefix", "dual"],
              "fast_dllm_v2": ["none", "block", "sub_block"]}
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18], [9], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
                                                                        31, 32, 33, 34, 35, 36, 37, 38, 39, 40]]


def model_for(family, layers=2, seed=0):
    extra = {"block_size": 16} if family == "fast_dllm_v2" else {}
    return tiny_model(family, seed=seed, num_layers=layers, **extra).double()  # float64: no argmax near-ties


def window(cache):
    return 8 if cache == "sub_block" else 16


def sampler(name, block_length, tmp_path):
    if name == "learn2pd":  # its filter reads one score per window position
        torch.manual_seed(0)
        folder = Learn2PDFilter(block_length=block_length).save(tmp_path / f"filter{block_length}")
        return Learn2PDSampler(filter=str(folder), threshold=0.5)
    return SAMPLERS[name]()


def run(model, prompts, s, cache, block_length, gen_length=32, **kw):
    return dllm.generate(model, prompts, s, gen_length=gen_length, block_length=block_length, cache=cache,
                         stop_at_eos=False, **kw)


@pytest.mark.parametrize("family,cache", [("llada", "prefix"), ("llada", "dual"), ("dream", "prefix"),
                                          ("dream", "dual"), ("fast_dllm_v2", "sub_block")])
@pytest.mark.parametrize("name", ["llada", "threshold"])
def test_approximate_caches_are_exact_with_one_layer(family, cache, name, tmp_path):
    """With one layer a token's K/V depend on that token alone, so a stale cache entry is only stale
    if its token changed — which the policies never allow (the window is always recomputed). The
    cached step path must therefore reproduce uncached decoding token for token."""
    model = model_for(family, layers=1, seed=1)
    w = window(cache)
    base = run(model, PROMPTS, sampler(name, w, tmp_path), "none", w)
    got = run(model, PROMPTS, sampler(name, w, tmp_path), cache, w)
    for i in range(len(PROMPTS)):
        assert torch.equal(base.ids[i], got.ids[i]), i
    assert [s.nfe for s in got.stats] == [s.nfe for s in base.stats]
    assert all(g.forward_tokens < b.forward_tokens for g, b in zip(got.stats, base.stats))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_block_cache_equals_no_cache(name, tmp_path):
    """Completed blocks are computed once from their final tokens: exact for block-causal models."""
    model = model_for("fast_dllm_v2", layers=2, seed=2)
    for w in (16, 8):  # decode windows of the model block and of half of it
        base = run(model, PROMPTS, sampler(name, w, tmp_path), "none", w)
        got = run(model, PROMPTS, sampler(name, w, tmp_path), "block", w)
        for i in range(len(PROMPTS)):
            assert torch.equal(base.ids[i], got.ids[i]), (w, i)
        assert sum(g.forward_tokens for g in got.stats) < sum(b.forward_tokens for b in base.stats)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("family", ["llada", "dream", "fast_dllm_v2"])
def test_every_sampler_with_every_cache_batch_equals_single(family, name, tmp_path):
    model = model_for(family, seed=3)
    for cache in APPLICABLE[family][1:]:
        w = window(cache)
        batch = run(model, PROMPTS, sampler(name, w, tmp_path), cache, w)
        for i, p in enumerate(PROMPTS):
            single = run(model, [p], sampler(name, w, tmp_path), cache, w)
            assert torch.equal(batch.ids[i], single.ids[0]), (cache, i)
            assert not (batch.ids[i] == model.mask_token_id).any()


@pytest.mark.parametrize("family", ["llada", "dream", "fast_dllm_v2"])
def test_freedave_stays_lossless_with_caches(family):
    """FreeDave's verify forward goes through the cache (each candidate on its own copy of the row):
    still token-identical to static one-token decoding under the same cache."""
    model = model_for(family, seed=4)
    for cache in APPLICABLE[family][1:]:
        w = window(cache)
        static = run(model, PROMPTS, LLaDASampler(), cache, w)
        fd = run(model, PROMPTS, FreeDaveSampler(3), cache, w)
        for i in range(len(PROMPTS)):
            assert torch.equal(static.ids[i], fd.ids[i]), (cache, i)


def test_cfg_with_cache_one_layer_is_exact():
    model = model_for("llada", layers=1, seed=5)
    base = run(model, PROMPTS, LLaDASampler(), "none", 16, cfg_scale=1.5)
    for cache in ("prefix", "dual"):
        got = run(model, PROMPTS, LLaDASampler(), cache, 16, cfg_scale=1.5)
        assert all(torch.equal(x, y) for x, y in zip(base.ids, got.ids)), cache
        assert got.cache_bytes == 2 * base_bytes(model, PROMPTS, 32, rows=2 * len(PROMPTS))


def base_bytes(model, prompts, gen_length, rows):
    """2 (K and V) × layers × kv heads × head dim × length × bytes, per row (length = longest row)."""
    c = model.core.cfg
    length = max(len(p) for p in prompts) + gen_length
    return c.num_layers * c.num_kv_heads * c.head_dim * length * 8 * rows


def test_cache_memory_is_exactly_k_and_v():
    model = model_for("llada", seed=6)
    out = run(model, PROMPTS, ThresholdSampler(), "dual", 16)
    assert out.cache_bytes == 2 * base_bytes(model, PROMPTS, 32, rows=len(PROMPTS))
    assert run(model, PROMPTS, ThresholdSampler(), "none", 16).cache_bytes == 0
    store = KVStore(3, 2, 4, 10, 8, torch.bfloat16, "cpu")
    assert store.bytes_per_row() == 2 * 3 * 4 * 8 * 10 * 2


def test_rows_that_finish_do_not_disturb_the_others():
    """With end-of-text retirement on, rows leave the batch at different blocks; each row still
    equals its single-row decoding under every cache."""
    model = model_for("llada", seed=7)
    eos = model.eos_token_ids[0]
    model.core.lm_head.weight.data[eos] *= 0  # make end-of-text likely somewhere
    model.core.lm_head.weight.data[eos, :8] = 3.0
    for cache in ("prefix", "dual"):
        kw = dict(gen_length=48, block_length=16, cache=cache, stop_at_eos=True)
        batch = dllm.generate(model, PROMPTS, ThresholdSampler(0.5), **kw)
        for i, p in enumerate(PROMPTS):
            single = dllm.generate(model, [p], ThresholdSampler(0.5), **kw)
            assert torch.equal(batch.ids[i], single.ids[0]), (cache, i)


@pytest.mark.parametrize("family,cache,message", [
    ("llada", "block", r"cache=block is for block-causal models, but this model's attention is bidirectional"),
    ("llada", "sub_block", r"cache=sub_block is for block-causal models"),
    ("fast_dllm_v2", "prefix", r"cache=prefix is for bidirectional models, but this model's attention is block_causal"),
    ("fast_dllm_v2", "dual", r"cache=dual is for bidirectional models"),
    ("llada", "nope", r"cache must be one of \('none', 'prefix', 'dual', 'block', 'sub_block'\), got 'nope'"),
])
def test_cache_that_does_not_fit_the_model(family, cache, message):
    model = model_for(family)
    with pytest.raises(DllmError, match=message):
        run(model, PROMPTS[:1], LLaDASampler(), cache, 16)


def test_generic_adapter_supports_no_cache_only():
    from transformers import LlamaConfig, LlamaForCausalLM

    from dllm.models.wrapper import HFDiffusionLM
    from dllm.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
    model = HFDiffusionLM(hf, tok, mask_token_id=tok.mask_token_id, eos_token_ids=(tok.eos_token_id,),
                          pad_token_id=tok.eos_token_id)
    with pytest.raises(DllmError,
                       match=r"cache=dual needs a native dllm model; HFDiffusionLM supports cache=none only"):
        dllm.generate(model, [[5, 6]], LLaDASampler(), gen_length=8, block_length=8, cache="dual")


def test_sub_block_size_must_divide_the_block():
    model = model_for("fast_dllm_v2")  # model block 16
    with pytest.raises(DllmError, match=r"cache=sub_block .* block_length \(6\) must be smaller than 16 and divide it"):
        dllm.generate(model, PROMPTS[:1], LLaDASampler(), gen_length=24, block_length=6, cache="sub_block")
    with pytest.raises(DllmError, match=r"cache=sub_block .* block_length \(16\) must be smaller than 16"):
        run(model, PROMPTS[:1], LLaDASampler(), "sub_block", 16)
    assert CACHES == ("none", "prefix", "dual", "block", "sub_block")


# (rows fed n, cache rows N, heads, kv heads, queries Lq, fed K/V L, slots S, block size, rows in order, all visible)
PLAN_CASES = [(1, 1, 4, 2, 1, 1, 30, 0, True, True),  # an AR step at batch 1: slice copies, no mask
              (3, 5, 4, 1, 6, 6, 40, 0, False, False),  # ragged rows by slice copies, gathered, masked
              (8, 8, 4, 2, 1, 1, 50, 0, True, False),  # an AR step at batch 8 with ragged lengths: index tensors
              (6, 9, 4, 2, 9, 12, 60, 8, False, False),  # block-causal, more fed tokens than queries
              (5, 5, 4, 4, 4, 4, 20, 0, True, True)]  # every row sees every slot: SDPA without a mask


@pytest.mark.parametrize("case", PLAN_CASES)
def test_window_plan_equals_the_reference_bit_for_bit(case):
    """The CPU path plans a forward's write indices and mask once for every layer; each layer's
    output and cache write equal the per-call torch reference exactly."""
    from dllm.kernels.fused_window_attention import fused_window_attention_reference
    from dllm.kernels.fused_window_attention.planned import WindowPlan

    n, N, h, hkv, lq, length, s, bs, in_order, full = case
    g = torch.Generator().manual_seed(n * 31 + s)
    rows = torch.arange(n) if in_order else torch.randperm(N, generator=g)[:n]
    count = torch.randint(0, length + 1, (n,), generator=g)
    src = torch.stack([torch.randint(0, int(length - c) + 1, (1,), generator=g)[0] for c in count])
    dst = torch.randint(0, s - length, (n,), generator=g)
    kv_len = torch.full((n,), s) if full else torch.randint(1, s + 1, (n,), generator=g)
    q_pos0 = torch.full((n,), s) if full else torch.randint(-3, s, (n,), generator=g)
    plan = WindowPlan(rows, dst, src, count, kv_len, q_pos0, bs, lq, length, N, int(kv_len.max()))
    assert (plan.mask is None) == full and (plan.rows is None) == in_order
    kc, vc = torch.randn(N, hkv, s, 16, generator=g), torch.randn(N, hkv, s, 16, generator=g)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    for layer in range(2):  # one plan, every layer
        q = torch.randn(n, h, lq, 16, generator=g)
        k, v = torch.randn(n, hkv, length, 16, generator=g), torch.randn(n, hkv, length, 16, generator=g)
        want = fused_window_attention_reference(q, k, v, kc_ref, vc_ref, rows, dst, src, count, kv_len, q_pos0, bs)
        assert torch.equal(plan(q, k, v, kc, vc), want)
        assert torch.equal(kc, kc_ref) and torch.equal(vc, vc_ref)
