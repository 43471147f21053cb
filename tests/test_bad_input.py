"""Bad input everywhere (issue 16): every CLI command, the Python API and the lm-eval adapter answer
with exit code 2 (or a DllmError / TypeError), one line naming the parameter, and no file left behind.

The CLI cases run the console script's entry point in this process (``dllm.cli.main`` with its
argv), the same funnel as ``dllm ...``; a few run it as a real subprocess to check the exit code."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dllm
import dllm.cli
from dllm.errors import DllmError
from dllm.eval.resume import output_lock, settings_path


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run ``dllm <args>`` in ``tmp_path``: (exit code, the one stderr line); asserts no new file."""
    monkeypatch.chdir(tmp_path)

    def run(*args):
        before = listing(tmp_path)
        monkeypatch.setattr(sys, "argv", ["dllm", *args])
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            dllm.cli.main()
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert listing(tmp_path) == before, "a file was left behind"
        return e.value.code, lines[0]

    return run


CLI_CASES = [  # (args, words the one line must hold)
    (["generate", "prompt=hi", "decode.gen_length=abc"], ["gen_length", "integer", "'abc'"]),
    (["generate", "prompt=hi", "decode.seed=abc"], ["seed", "integer"]),
    (["generate", "prompt=hi", "batch_size=x"], ["batch_size", "integer"]),
    (["generate", "prompt=hi", "decode.steps=1.5"], ["steps", "integer"]),
    (["generate", "prompt=hi", "decode.block_length=abc"], ["block_length", "integer"]),
    (["generate", "prompt=hi", "decode.cfg_scale=abc"], ["cfg_scale", "number"]),
    (["generate", "prompt=hi", "decode.stop_at_eos=maybe"], ["stop_at_eos", "true or false"]),
    (["generate", "prompt=hi", "sampler.top_k=1.5"], ["sampler.top_k", "integer"]),
    (["generate", "prompt=hi", "sampler.temperature=abc"], ["sampler.temperature", "number"]),
    (["generate", "prompt=hi", "sampler=threshold", "sampler.threshold=abc"], ["sampler.threshold", "number"]),
    (["generate", "prompt=hi", "sampler.temperature=inf"], ["temperature", "finite"]),
    (["generate", "prompt=hi", "model.dtype=f7"], ["dtype", "float32"]),
    (["generate", "prompt=hi", "+model.block_size=abc"], ["model.block_size", "integer"]),
    (["generate", "prompt=hi", "decode.gen_lenght=64"], ["gen_lenght"]),
    (["generate", "prompt=hi", "gen_length=abc"], ["gen_length", "integer", "'abc'"]),  # shorthand for decode.
    (["eval", "cache=duall"], ["cache", "duall"]),
    (["eval", "tasks=[waiting_line/reverse"], ["[waiting_line/reverse"]),
    (["generate", "prompt=hi", "sampler=nope"], ["sampler must be one of"]),
    (["generate", "prompt=hi", "model=nope"], ["model must be one of"]),
    (["generate", "prompt=' '"], ["prompt 0 is empty"]),
    (["generate"], ["prompt=", "prompts_file="]),
    (["generate", "prompts_file=missing.jsonl"], ["prompts_file", "does not exist"]),
    (["generate", "prompts_file=folder"], ["prompts_file", "folder"]),
    (["generate", "prompts_file=wrong_key.jsonl"], ["prompts_file", "line 1", '"prompt" key']),
    (["generate", "prompts_file=not_text.jsonl"], ["prompts_file", "line 2", "non-empty text"]),
    (["generate", "prompts_file=binary.jsonl"], ["prompts_file", "line 1", "UTF-8"]),
    (["generate", "prompts_file=empty.jsonl"], ["prompts_file", "no prompt"]),
    (["generate", "prompts_file=null.jsonl"], ["prompts_file", "line 1", "non-empty text"]),
    (["generate", "prompts_file=torn.jsonl"], ["prompts_file", "line 2", "not JSON"]),
    (["generate", "prompt=hi", "output=missing/out.jsonl"], ["output", "cannot be written"]),
    (["generate", "prompt=hi", "output=folder"], ["output", "cannot be written"]),
    (["generate", "prompt=hi", "decode.gen_length=20", "decode.block_length=8"],
     ["gen_length (20)", "block_length (8)"]),
    (["eval", "n_items=lots"], ["n_items", "integer", "'lots'"]),
    (["eval", "n_items=0"], ["n_items", "positive"]),
    (["eval", "batch_size=0"], ["batch_size", "positive"]),
    (["eval", "decode.gen_length=abc"], ["gen_length", "integer"]),
    (["eval", "decode.seed=1.5"], ["seed", "integer"]),
    (["eval", "tasks=[nope]"], ["task must be one of", "'nope'"]),
    (["eval", "sampler=threshold", "sampler.threshold=abc"], ["sampler.threshold", "number"]),
    (["eval", "decode.cache=nope"], ["cache", "nope"]),
    (["eval", "tasks=[waiting_line/reverse]", "n_items=1", "output=folder"], ["output", "is a folder"]),
    (["eval", "tasks=[waiting_line/reverse]", "n_items=1", "output=wrong_key.jsonl/items.jsonl"], ["output"]),
    (["eval", "--multirun", "sampler=llada,threshold", "model.name_or_path=a/../../out"], ["'..'", "sweep_dir"]),
    (["eval", "-m", "sampler.threshold=0.9,../../x", "sampler=threshold"], ["'..'", "sampler.threshold"]),
    (["bench", "n_items=abc"], ["n_items", "integer"]),
    (["bench_cache", "batch_size=abc"], ["batch_size", "integer"]),
    (["bench_serve", "requests=abc"], ["requests", "integer"]),
    (["serve", "port=abc"], ["port", "integer"]),
    (["serve", "max_batch=1.5"], ["max_batch", "integer"]),
    (["serve", "keep_alive_s=0"], ["keep_alive_s", "positive"]),
    (["train", "recipe.train.max_steps=abc"], ["recipe.train.max_steps", "integer"]),
    (["train", "recipe.train.lr=fast"], ["recipe.train.lr", "number"]),
    (["train", "recipe.train.save_every=0"], ["save_every"]),
    (["train", "recipe=nope"], ["recipe must be one of"]),
    (["sweep_report", "no_such_sweep"], ["no_such_sweep", "not a folder"]),
    (["sweep_report", "empty_sweep"], ["no finished runs"]),
    (["sweep_report", "empty_sweep", "--out", "wrong_key.jsonl"], ["--out", "not a folder"]),
    (["fly"], ["command must be one of"]),
    (["generate", "prompt=hi", "decode.multi_block=0"], ["multi_block", "(0, 1]"]),
    (["generate", "prompt=hi", "decode.multi_block=abc"], ["multi_block", "number"]),
    (["eval", "tasks=[waiting_line/copy]", "n_items=1", "output=items.jsonl", "summary=folder"],
     ["summary folder cannot be written: it is a folder"]),
]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty_sweep").mkdir()
    (tmp_path / "wrong_key.jsonl").write_text('{"text": "hi"}\n')
    (tmp_path / "not_text.jsonl").write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    (tmp_path / "binary.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    (tmp_path / "null.jsonl").write_text('{"prompt": null}\n')
    (tmp_path / "torn.jsonl").write_text('{"prompt": "ok"}\n{"prompt": "o')


@pytest.mark.parametrize("args, words", CLI_CASES, ids=lambda a: " ".join(a) if isinstance(a, list) and a and
                         isinstance(a[0], str) and a[0].isidentifier() else None)
def test_cli_bad_input(cli, files, args, words):
    code, line = cli(*args)
    assert code == 2, line
    assert line.startswith("error: ")
    for w in words:
        assert w in line, (w, line)


def test_eval_rerun_with_other_settings_is_refused(cli, tmp_path):
    out = tmp_path / "runs" / "eval" / "items.jsonl"
    out.parent.mkdir(parents=True)
    row = {"task": "waiting_line/reverse", "index": 0, "score": 1.0}
    out.write_text(json.dumps(row) + "\n")
    settings_path(out).write_text(json.dumps({"sampler": {"class": "LLaDASampler"}}))
    code, line = cli("eval", "tasks=[waiting_line/reverse]", "n_items=1", "sampler=threshold")
    assert code == 2 and "other settings" in line and "sampler.class" in line
    assert out.read_text() == json.dumps(row) + "\n"
    with output_lock(out):  # a second run on the same output
        code, line = cli("eval", "tasks=[waiting_line/reverse]", "n_items=1")
    assert code == 2 and "being written by another dllm eval" in line and f"pid {os.getpid()}" in line


def test_real_process_exit_codes(tmp_path):
    """The console script itself: exit 2, one line, nothing made (sweep '..', mistyped folder, bad number)."""
    sweep = tmp_path / "sweep"
    cases = [["eval", "--multirun", "model.name_or_path=x/../../../escape", f"sweep_dir={sweep}"],
             ["sweep_report", str(tmp_path / "typo")],
             ["generate", "prompt=hi", "decode.gen_length=abc"]]
    code = "import sys, runpy\nfor args in %r:\n" \
           "    sys.argv = ['dllm', *args]\n" \
           "    try:\n        runpy.run_module('dllm.cli', run_name='__main__')\n" \
           "    except SystemExit as e:\n        print(e.code)\n" % cases
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.stdout.split() == ["2", "2", "2"], r.stderr
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 3, r.stderr
    assert listing(tmp_path) == set() and not (tmp_path.parent / "escape").exists()
    one = subprocess.run([sys.executable, "-m", "dllm.cli", "eval", "n_items=lots"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert one.returncode == 2 and one.stderr.strip().count("\n") == 0 and "n_items" in one.stderr




@pytest.fixture(scope="module")
def tiny():
    return dllm.load("dllm-tiny")


def one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def test_api_bad_input(tiny, tmp_path):
    from dllm.eval.tasks import get_task
    from dllm.generate import encode_prompts
    from dllm.samplers import LLaDASampler, ThresholdSampler

    with pytest.raises(TypeError) as e:
        dllm.generate(tiny, "hello", LLaDASampler())
    one_line(e, "list")
    with pytest.raises(DllmError) as e:
        encode_prompts(tiny.tokenizer, ["ok", "   "])
    one_line(e, "prompt 1")
    with pytest.raises(DllmError) as e:
        encode_prompts(tiny.tokenizer, [3])
    one_line(e, "prompt 0")
    with pytest.raises(DllmError) as e:
        ThresholdSampler(temperature=float("inf"))
    one_line(e, "temperature", "finite")
    with pytest.raises(DllmError) as e:
        LLaDASampler(top_k=1.5)
    one_line(e, "top_k")
    with pytest.raises(DllmError) as e:
        LLaDASampler(top_p=2.0)
    one_line(e, "top_p")
    with pytest.raises(DllmError) as e:
        dllm.load(str(tmp_path / "nope"))
    one_line(e, "model")
    with pytest.raises(DllmError) as e:
        dllm.load("dllm-tiny", dtype="f7")
    one_line(e, "dtype")
    with pytest.raises(DllmError) as e:
        dllm.load("dllm-tiny", dtype=3)
    one_line(e, "dtype")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(DllmError) as e:
        dllm.load(str(broken))
    one_line(e, "config.json")
    with pytest.raises(DllmError) as e:
        get_task("nope")
    one_line(e, "task must be one of")
    with pytest.raises(DllmError) as e:
        get_task("waiting_line/reverse").items("dev", 1)
    one_line(e, "split")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_special_token_text_is_plain_text(tiny, tmp_path):
    from dllm.generate import encode_prompts
    from dllm.testing import tiny_checkpoint

    tok = tiny.tokenizer
    eos, mask = tok.convert_tokens_to_ids("<|endoftext|>"), tiny.mask_token_id
    ids = encode_prompts(tok, ["stop <|endoftext|> and <|mdm_mask|> here"], chat_template=False)[0]
    assert eos not in ids and mask not in ids  # the text, not the tokens
    assert encode_prompts(tok, ["plain"], False) == [tok("plain")["input_ids"]]  # unchanged without such text
    templated = tok  # the module's model: its template is removed again below
    templated.chat_template = ("{% for m in messages %}<|pad|>{{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %}<|endoftext|>{% endif %}")
    try:
        chat = encode_prompts(templated, ["a <|mdm_mask|> <|endoftext|> b"], chat_template=True)[0]
    finally:
        templated.chat_template = None
    assert chat[0] == tok.convert_tokens_to_ids("<|pad|>") and chat[-1] == eos  # the template's own tokens
    assert mask not in chat and chat.count(eos) == 1
    word_level = dllm.load(tiny_checkpoint(tmp_path / "w", "llada", seed=0)).tokenizer  # "<|endoftext|>" is a word
    with pytest.raises(DllmError) as e:
        encode_prompts(word_level, ["a <|endoftext|> b"], chat_template=False)
    one_line(e, "prompt 0", "<|endoftext|>", "plain text")



ADAPTER_CASES = [  # (model_args, words)
    (dict(steps="abc"), ["steps"]),
    (dict(cfg_scale="x"), ["cfg_scale"]),
    (dict(cfg_scale="inf"), ["cfg_scale"]),
    (dict(device="tpu"), ["device"]),
    (dict(dtype="f7"), ["dtype"]),
    (dict(chat_template="maybe"), ["chat_template"]),
    (dict(disable_tqdm="3"), ["disable_tqdm"]),
    (dict(stats_file="."), ["stats_file"]),
    (dict(seed="true"), ["seed"]),
    (dict(seed="1.5"), ["seed"]),
    (dict(batch_size="auto"), ["batch_size"]),
    (dict(gen_length="0"), ["gen_length"]),
    (dict(block_length="-4"), ["block_length"]),
    (dict(mc_num="0"), ["mc_num"]),
    (dict(mc_batch_size="many"), ["mc_batch_size"]),
    (dict(ll_canvas="-1"), ["ll_canvas"]),
    (dict(greedy="maybe"), ["greedy"]),
    (dict(sampler="nope"), ["sampler must be one of"]),
    (dict(sampler="threshold", thresh="0.9"), ["'thresh'", "threshold"]),
    (dict(sampler="threshold", threshold="abc"), ["threshold", "number"]),
    (dict(sampler="threshold", threshold="2"), ["threshold"]),
    (dict(sampler="llada", top_k="1.5"), ["top_k"]),
    (dict(sampler="llada", temperature="inf"), ["temperature"]),
    (dict(pretrained="/no/such/model"), ["pretrained", "/no/such/model"]),
    (dict(cache="nope"), ["cache"]),
    (dict(gen_length="40", block_length="32"), ["gen_length (40)", "block_length (32)"]),
]


@pytest.mark.parametrize("args, words", ADAPTER_CASES, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items())
                         if isinstance(a, dict) else None)
def test_adapter_bad_arguments(tmp_path, monkeypatch, args, words):
    pytest.importorskip("lm_eval")
    from dllm.eval.lm_eval_adapter import DllmLM

    monkeypatch.chdir(tmp_path)
    with pytest.raises((DllmError, ValueError, TypeError)) as e:
        DllmLM(**args)
    one_line(e, *words)
    assert listing(tmp_path) == set()
