"""The console script: commands run, bad input is one line (the configs themselves: test_configs.py)."""

import json
import subprocess
import sys

import pytest


def dllm_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "dllm.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_generate_runs(checkpoints, tmp_path):
    out = tmp_path / "out.jsonl"
    r = dllm_cli("generate", f"model.name_or_path={checkpoints['llada']}", "prompt=the cat sat", "decode.gen_length=16",
                 "decode.block_length=8", f"output={out}")
    assert r.returncode == 0, r.stderr
    assert "NFE 16" in r.stdout and out.exists()


def test_generate_from_jsonl(checkpoints, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "the cat"}\n"one two three"\n')
    r = dllm_cli("generate", f"model.name_or_path={checkpoints['dream']}", f"prompts_file={f}", "decode.gen_length=8",
                 "decode.block_length=8", "sampler=dream")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("NFE") == 2


def test_help_lists_choices():
    r = dllm_cli("generate", "--help")
    assert r.returncode == 0 and "sampler: dream, llada" in r.stdout.replace("\n", " ") or "llada" in r.stdout


@pytest.mark.parametrize("args, pattern", [
    (["decode.gen_length=20", "decode.block_length=8"], "gen_length (20) must be a multiple of block_length (8)"),
    (["decode.gen_length=16", "decode.block_length=8", "decode.steps=3"], "steps (3) must be a positive multiple"),
    (["decode.gen_length=300", "decode.block_length=10"], "exceeds the model's max_length"),
    (["sampler=nope"], "sampler must be one of"),
    (["model=nope"], "model must be one of"),
    (["sampler.temperature=-1"], "temperature must be >= 0"),
    (["sampler.top_p=1.5"], "top_p must be in (0, 1]"),
    (["prompt=' '"], "prompt 0 is empty"),
    (["model.name_or_path=/no/such/dir"], "model must be one of the built-in models"),
])
def test_bad_input_one_line(checkpoints, args, pattern):
    base = [f"model.name_or_path={checkpoints['llada']}", "prompt=the cat"]
    r = dllm_cli("generate", *base, *args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and pattern in lines[0], r.stderr


def test_unknown_command():
    r = dllm_cli("fly")
    assert r.returncode == 2 and "command must be one of" in r.stderr


def test_prompt_with_brackets_and_quotes_is_text(checkpoints):
    r = dllm_cli("generate", f"model.name_or_path={checkpoints['llada']}", 'prompt=reverse: ["Ann Lee", "Bob\'s"]',
                 "decode.gen_length=8", "decode.block_length=8")
    assert r.returncode == 0, r.stderr
    assert '>>> reverse: ["Ann Lee", "Bob\'s"]' in r.stdout


def test_generate_output_is_never_half_written(checkpoints, tmp_path):
    """A failing later prompt leaves no output file; an unwritable output is one line, exit 2."""
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "the cat"}\n{"prompt": "   "}\n')
    out = tmp_path / "out.jsonl"
    r = dllm_cli("generate", f"model.name_or_path={checkpoints['llada']}", f"prompts_file={f}", "decode.gen_length=8",
                 "decode.block_length=8", "batch_size=1", f"output={out}")
    assert r.returncode == 2 and r.stderr.count("error") == 1 and "line 2" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == [f]
    r = dllm_cli("generate", f"model.name_or_path={checkpoints['llada']}", "prompt=the cat", "decode.gen_length=8",
                 "decode.block_length=8", f"output={tmp_path}/missing/out.jsonl")
    assert r.returncode == 2 and "output" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_bench_without_matplotlib_is_one_line():
    """matplotlib is the optional `plots` extra: without it `dllm bench` says so in one line, before it runs."""
    code = ("import sys\n"
            "class NoMatplotlib:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'matplotlib':\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, NoMatplotlib())\n"
            "sys.argv = ['dllm', 'bench', 'n_items=1']\n"
            "from dllm.cli import main\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "dllm[plots]" in r.stderr and "Traceback" not in r.stderr


def test_top_level_decode_keys_are_shorthand_for_decode(checkpoints, tmp_path):
    """``cache=dual gen_length=8`` (issue 14's command spelling) decodes exactly as ``decode.cache=dual
    decode.gen_length=8`` does."""
    outs = []
    for spelling in (["cache=dual", "gen_length=8", "block_length=8"],
                     ["decode.cache=dual", "decode.gen_length=8", "decode.block_length=8"]):
        out = tmp_path / f"{len(outs)}.jsonl"
        r = dllm_cli("generate", f"model.name_or_path={checkpoints['llada']}", "sampler=threshold", "prompt=the cat",
                     *spelling, f"output={out}")
        assert r.returncode == 0, r.stderr
        row = json.loads(out.read_text())
        outs.append({k: v for k, v in row.items() if "time" not in k and "second" not in k})  # timings differ
    assert outs[0] == outs[1] and outs[0]["nfe"] >= 1
