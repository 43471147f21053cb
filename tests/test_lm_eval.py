"""The lm-evaluation-harness adapter, offline: small custom tasks written to tmp_path (local JSONL
datasets of dllm-tiny's task suite), run through ``lm_eval.simple_evaluate`` and checked against
dllm's own decode loop and a direct likelihood computation."""

import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("lm_eval")

import lm_eval  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from dllm.errors import DllmError  # noqa: E402
from dllm.eval.lm_eval_adapter import OPTIONS, DllmLM  # noqa: E402
from dllm.eval.tasks import get_task  # noqa: E402
from dllm.generate import generate  # noqa: E402
from dllm.samplers import build_sampler  # noqa: E402

GEN = dict(gen_length=32, block_length=32)
OPS = ("copy", "reverse", "sort", "insert_random")  # solved, solved, mostly, often not the reference


def items(op, n):
    return get_task(f"waiting_line/{op}").items("test", n)


def write_tasks(folder):
    """A generate_until task (exact match) and a multiple_choice task (loglikelihood) as YAML."""
    gen = [{"prompt": it.prompt, "reference": it.reference} for op in OPS for it in items(op, 2)]
    mc = []
    for k, it in enumerate(items("copy", 4)):
        names = json.loads(it.reference)
        choices = [it.reference, json.dumps(names[::-1]), json.dumps(names[:-1])]
        choices = choices[k % 3:] + choices[:k % 3]  # the answer is not always first
        mc.append({"prompt": it.prompt, "choices": choices, "label": choices.index(it.reference)})
    for name, rows in (("gen", gen), ("mc", mc)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder}/%s.jsonl\n" \
             f"  cache_dir: {folder}/hf\ntest_split: test\ndoc_to_text: prompt\n"
    (folder / "gen.yaml").write_text("task: dllm_tiny_gen\n" + common % "gen" + """output_type: generate_until
doc_to_target: reference
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 32
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""")
    (folder / "mc.yaml").write_text("task: dllm_tiny_mc\n" + common % "mc" + """output_type: multiple_choice
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return gen, mc


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    stats = tmp_path_factory.mktemp("stats") / "stats.jsonl"
    # ll_canvas: dllm-tiny was fine-tuned on answers end-of-text padded to >= 32 tokens
    return DllmLM(sampler="threshold", threshold="0.9", batch_size=8, mc_num=16, mc_batch_size=16, ll_canvas=32,
                  stats_file=str(stats), disable_tqdm=True, **GEN)


def test_harness_run_matches_own_decode(lm, tmp_path):
    gen, mc = write_tasks(tmp_path)
    lm.stats.clear()
    out = lm_eval.simple_evaluate(model=lm, tasks=["dllm_tiny_gen", "dllm_tiny_mc"], log_samples=True,
                                  task_manager=TaskManager(include_path=str(tmp_path)))
    # independent: dllm's decode loop on the same prompts, scored by hand
    res = generate(lm.model, [r["prompt"] for r in gen], build_sampler("threshold", threshold=0.9), seed=1234, **GEN)
    own = [t.split("\n")[0] for t in res.text]
    expected = sum(o == r["reference"] for o, r in zip(own, gen)) / len(gen)
    assert out["results"]["dllm_tiny_gen"]["exact_match,none"] == pytest.approx(expected)
    assert 0.5 <= expected < 1.0  # the task discriminates: some items right, some wrong
    harness = {s["doc"]["prompt"]: s["filtered_resps"][0] for s in out["samples"]["dllm_tiny_gen"]}
    assert [harness[r["prompt"]] for r in gen] == own
    # multiple choice through the Monte Carlo likelihood: the copy is always the likeliest
    assert out["results"]["dllm_tiny_mc"]["acc,none"] == 1.0
    rows = [r for r in lm.stats if r["kind"] == "generate_until"]
    assert len(rows) == len(gen) and all(r["nfe"] >= 1 and r["tokens_per_forward"] > 0 for r in rows)
    assert sum(r["kind"] == "loglikelihood" for r in lm.stats) == sum(len(r["choices"]) for r in mc)
    logged = [json.loads(line) for line in open(lm.opts["stats_file"])]
    assert {r["kind"] for r in logged} == {"generate_until", "loglikelihood"}
    assert {"nfe", "tokens_per_forward", "tokens_per_second", "gen_tokens"} <= set(logged[0])


def test_loglikelihood_monte_carlo(lm):
    it = items("copy", 1)[0]
    wrong = json.dumps(json.loads(it.reference)[::-1])
    reqs = [Instance("loglikelihood", {}, (it.prompt, " " + c), 0) for c in (it.reference, wrong)]
    (good, good_greedy), (bad, bad_greedy) = lm.loglikelihood(reqs)
    assert good > bad and good_greedy and not bad_greedy
    assert lm.loglikelihood(reqs) == [(good, good_greedy), (bad, bad_greedy)]  # seeded: reproducible
    assert lm.loglikelihood(reqs[1:]) == [(bad, bad_greedy)]  # independent of the batch's company
    lm.opts["seed"] += 1
    try:
        assert lm.loglikelihood(reqs[:1])[0][0] != good  # the draws are random, the seed fixes them
    finally:
        lm.opts["seed"] -= 1
    # one target token: the estimate is exact (l = 1, weight 1) -> log p from one forward by hand,
    # in a 32-position answer area (the rest MASK) and alone (ll_canvas=0, LLaDA's base-model form)
    tok = lm.model.tokenizer
    ctx, tgt = tok(it.prompt)["input_ids"], tok(' ["Amy', add_special_tokens=False)["input_ids"]
    assert len(tgt) == 1
    one = [Instance("loglikelihood", {}, (it.prompt, ' ["Amy'), 0)]
    for canvas in (32, 0):
        x = torch.tensor([ctx + [lm.model.mask_token_id] * max(canvas, 1)], device=lm.model.device)
        pos = torch.arange(x.shape[1], device=x.device)[None]
        with torch.no_grad():
            logp = lm.model(x, pos, torch.ones_like(x, dtype=torch.bool))[0, len(ctx)].log_softmax(-1)[tgt[0]]
        lm.opts["ll_canvas"] = canvas
        try:
            assert lm.loglikelihood(one)[0][0] == pytest.approx(float(logp), abs=1e-4)
        finally:
            lm.opts["ll_canvas"] = 32
    # two (wrong) target tokens, many draws: the estimate converges to the bound by enumeration,
    # E_l[L/l · Σ_masked nll] = ½·2·mean(nll of one masked token) + ½·(nll of both masked);
    # stratified l: half the draws mask one token, so the only noise is which (sd |a-b|/2/√64)
    two = tok(' ["Ivy Scott",', add_special_tokens=False)["input_ids"]
    assert len(two) == 2
    m, area = lm.model, [lm.model.mask_token_id] * 30

    def nll(masked):
        x = torch.tensor([ctx + [m.mask_token_id if j in masked else t for j, t in enumerate(two)] + area],
                         device=m.device)
        with torch.no_grad():
            logp = m(x, torch.arange(x.shape[1], device=x.device)[None], torch.ones_like(x, dtype=torch.bool))
        return [-float(logp[0, len(ctx) + j].log_softmax(-1)[two[j]]) for j in masked]

    exact = -(0.5 * (nll([0])[0] + nll([1])[0]) + 0.5 * sum(nll([0, 1])))
    lm.opts.update(mc_num=128, mc_batch_size=128)  # one forward
    try:
        estimate = lm.loglikelihood([Instance("loglikelihood", {}, (it.prompt, ' ["Ivy Scott",'), 0)])[0][0]
    finally:
        lm.opts.update(mc_num=16, mc_batch_size=16)
    assert exact < -5 and estimate == pytest.approx(exact, abs=0.2 * abs(nll([0])[0] - nll([1])[0]) + 1e-3)
    lm.opts["greedy"] = "decode"  # is_greedy from the sampler's own decode of the continuation
    try:
        assert [g for _, g in lm.loglikelihood(reqs)] == [True, False]
    finally:
        lm.opts["greedy"] = "argmax"
    with pytest.raises(NotImplementedError, match="loglikelihood_rolling"):
        lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("text",), 0)])


@pytest.mark.parametrize("family,cache", [("dream", "prefix"), ("fast_dllm_v2", "block")])
def test_shifted_and_block_causal_models(checkpoints, family, cache):
    """Token-shifted (Dream) and block-causal (Fast-dLLM v2) models through the same adapter: a
    one-token continuation's estimate equals its log-probability from a direct forward, and
    generation runs with the family's cache."""
    lm = DllmLM(pretrained=str(checkpoints[family]), sampler="threshold", cache=cache, gen_length=16, block_length=4,
                mc_num=4, mc_batch_size=2, ll_canvas=8, disable_tqdm=True)
    m = lm.model
    ctx, tgt = m.tokenizer("hello")["input_ids"], m.tokenizer(" world", add_special_tokens=False)["input_ids"]
    assert len(tgt) == 1
    x = torch.tensor([ctx + [m.mask_token_id] * 8], device=m.device)
    with torch.no_grad():
        logp = m(x, torch.arange(x.shape[1], device=x.device)[None],
                 torch.ones_like(x, dtype=torch.bool))[0, len(ctx)].log_softmax(-1)
    ((ll, _),) = lm.loglikelihood([Instance("loglikelihood", {}, ("hello", " world"), 0)])
    assert ll == pytest.approx(float(logp[tgt[0]]), abs=1e-4)
    texts = lm.generate_until([Instance("generate_until", {}, ("hello world", {"until": []}), 0)])
    assert isinstance(texts[0], str) and lm.stats[-1]["cache"] == cache and lm.stats[-1]["nfe"] >= 1


def test_stop_strings_and_max_tokens(lm):
    it = items("copy", 1)[0]
    full = lm.generate_until([Instance("generate_until", {}, (it.prompt, {"until": []}), 0)])[0]
    assert full == it.reference
    reqs = [Instance("generate_until", {}, (it.prompt, {"until": ['", "', "Zzz"], "do_sample": False}), 0),
            Instance("generate_until", {}, (it.prompt, {"until": "\n", "max_gen_toks": 3}), 1)]
    lm.stats.clear()
    cut, short = lm.generate_until(reqs)
    assert cut == it.reference.split('", "')[0] == '["Amy Clark'
    ids = lm.model.tokenizer(it.reference, add_special_tokens=False)["input_ids"]
    assert short == lm.model.tokenizer.decode(ids[:3]) and short != full  # 3 tokens of the 32-token canvas
    assert [r["stop"] for r in sorted(lm.stats, key=lambda r: r["request"])] == ['", "', None]
    assert all(r["gen_length"] == 32 for r in lm.stats)  # max_gen_toks rounded up to whole blocks


def test_every_generate_keyword_is_a_model_arg():
    """generate()'s keywords the adapter does not decide itself (multi_block, stop_at_eos, ...) pass
    through model_args as given: multi-block decoding from the harness gives what dllm.generate gives."""
    from dllm.generate import DECODE_KEYS, generate

    assert set(DECODE_KEYS) <= set(OPTIONS)
    it = items("reverse", 1)[0]
    lm = DllmLM(sampler="threshold", threshold="0.9", gen_length="32", block_length="8", multi_block="0.5",
                disable_tqdm=True)
    assert lm.opts["multi_block"] == 0.5
    text = lm.generate_until([Instance("generate_until", {}, (it.prompt, {"until": []}), 0)])[0]
    want = generate(lm.model, [it.prompt], lm.sampler, gen_length=32, block_length=8, multi_block=0.5, seed=1234,
                    chat_template=False)
    assert text == want.text[0]
    with pytest.raises(DllmError, match=r"^multi_block must be a number, got 'abc'$"):
        DllmLM(multi_block="abc")


def test_bad_arguments_are_one_line():
    with pytest.raises(DllmError, match=r"unknown model_args parameter 'thresh'.*'threshold'") as e:
        DllmLM(sampler="threshold", thresh=0.9)
    assert "\n" not in str(e.value)
    with pytest.raises(DllmError, match="sampler must be one of"):
        DllmLM(sampler="nope")
    with pytest.raises(DllmError, match="gen_length .* multiple of block_length"):
        DllmLM(gen_length=40, block_length=32)
    assert lm_eval.api.registry.get_model("dllm") is DllmLM
    assert lm_eval.api.registry.get_model("dummy").__name__ == "DummyLM"  # the harness's own models stay available


@pytest.mark.slow
def test_cli_model_dllm(tmp_path):
    """``python -m dllm.eval.lm_eval_adapter --model dllm --model_args ...`` (string knobs parsed)."""
    write_tasks(tmp_path)
    cmd = [sys.executable, "-m", "dllm.eval.lm_eval_adapter", "--model", "dllm", "--tasks", "dllm_tiny_gen",
           "--include_path", str(tmp_path), "--limit", "2", "--batch_size", "2", "--output_path", str(tmp_path / "out"),
           "--model_args", "sampler=llada,steps=16,gen_length=32,block_length=32,disable_tqdm=true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dllm_tiny_gen" in proc.stdout and "exact_match" in proc.stdout
    (result,) = list((tmp_path / "out").rglob("results_*.json"))
    assert json.loads(result.read_text())["results"]["dllm_tiny_gen"]["exact_match,none"] == 1.0
