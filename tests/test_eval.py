"""dllm eval / dllm bench on a tiny random checkpoint: rows written as they go, resume, table, plot."""

import json
import subprocess
import sys

import torch

import dllm
from dllm.eval.bench import bench, write_outputs
from dllm.eval.runner import evaluate
from dllm.samplers import LLaDASampler, OracleSampler

TASKS = ["waiting_line/reverse", "latin_square/4x4"]


def tiny_task_model(tmp_path):
    from dllm.training.mdlm_sft import run
    arch = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=48, max_length=128)
    out = run("tasks:waiting_line/reverse+latin_square/4x4:32", str(tmp_path / "m"), arch=arch,
              train=dict(max_steps=1, batch_size=4))
    return out / "final" / "model"


def test_eval_writes_rows_and_resumes(tmp_path):
    model = dllm.load(tiny_task_model(tmp_path))
    path = tmp_path / "items.jsonl"
    gen = dict(gen_length=32, block_length=16)
    first = evaluate(model, LLaDASampler(), TASKS, 3, gen, batch_size=2, out_path=path, progress=False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 6 and {"prompt", "output", "score", "nfe", "tokens_per_forward", "time"} <= set(rows[0])
    with path.open("a") as f:
        f.write('{"task": "waiting_line/rev')  # a torn last line from an interrupted run
    again = evaluate(model, LLaDASampler(), TASKS, 4, gen, batch_size=2, out_path=path, progress=False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 8  # only the two new items were decoded
    assert again["waiting_line/reverse"]["items"] == 4 and first["all"]["nfe"] == 32


def test_oracle_reproduces_the_baseline_in_fewer_forwards():
    from dllm.testing import tiny_model
    model = tiny_model("llada", seed=2)
    prompts = ["the cat sat", "one two three four"]
    base = dllm.generate(model, prompts, LLaDASampler(), gen_length=16, block_length=8)
    orc = dllm.generate(model, prompts, OracleSampler(), gen_length=16, block_length=8, reference=base.ids)
    assert all(torch.equal(a, b) for a, b in zip(base.ids, orc.ids))
    assert all(o.nfe <= b.nfe for o, b in zip(orc.stats, base.stats))


def test_bench_table_and_plot(tmp_path):
    model = dllm.load(tiny_task_model(tmp_path))
    entries = {"baseline": {"sampler": LLaDASampler(), "steps": None},
               "topk_2": {"sampler": LLaDASampler(), "steps": 16}}
    result = bench(model, entries, "baseline", TASKS, 2, dict(gen_length=32, block_length=32), batch_size=4,
                   progress=False)
    assert set(result) == {"baseline", "topk_2", "oracle"}
    assert result["topk_2"]["all"]["nfe"] <= 16
    md = write_outputs(result, "baseline", tmp_path / "b", "test", "dllm bench")
    text = md.read_text()
    assert "| all | oracle |" in text and (tmp_path / "b" / "pareto.png").stat().st_size > 5000


def test_eval_cli_smoke(tmp_path):
    folder = tiny_task_model(tmp_path)
    r = subprocess.run([sys.executable, "-m", "dllm.cli", "eval", f"model.name_or_path={folder}",
                        "tasks=[waiting_line/reverse]", "n_items=2", f"output={tmp_path}/e.jsonl"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout and (tmp_path / "e.jsonl").exists()
