"""`dllm eval ... record=run.json`: the run record's measures agree with the per-item rows, it names
the commit, model, sampler, hardware and batch settings, and it is written whole or not at all."""

import json
import subprocess
import sys

import pytest
import torch

import dllm
from dllm.errors import DllmError
from dllm.eval import record as rec
from dllm.samplers import EntropyBoundSampler
from dllm.testing import tiny_model

TASKS = ["waiting_line/copy", "sudoku/4x4"]


def eval_cfg(tmp_path, *overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module("dllm.conf", version_base=None):
        return compose("eval", overrides=[f"tasks=[{','.join(TASKS)}]", "n_items=3", "batch_size=2",
                                          f"output={tmp_path}/items.jsonl", *overrides])


def test_record_agrees_with_the_item_rows(tmp_path):
    from dllm.apps.eval import run

    run(eval_cfg(tmp_path, "sampler=entropy_bound", "sampler.gamma=0.5", f"record={tmp_path}/out/run.json"))
    r = json.loads((tmp_path / "out" / "run.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and not list((tmp_path / "out").glob(".*tmp*"))

    all_ = r["overall"]
    gen, nfe = sum(x["gen_tokens"] for x in rows), sum(x["nfe"] for x in rows)
    assert all_["generated_tokens"] == gen and all_["forwards"] == nfe
    assert all_["tokens_per_forward"] == pytest.approx(gen / nfe)  # summed, not a mean of per-item ratios
    assert all_["accuracy"] == pytest.approx(100 * sum(x["score"] for x in rows) / 6)
    wall = sum(x["time"] / x["batch_size"] for x in rows)
    assert all_["tokens_per_second"] == pytest.approx(gen / wall)
    assert set(r["per_task"]) == set(TASKS)
    for t in TASKS:
        mine = [x for x in rows if x["task"] == t]
        assert r["per_task"][t]["items"] == 3
        assert r["per_task"][t]["accuracy"] == pytest.approx(100 * sum(x["score"] for x in mine) / 3)
        assert r["per_task"][t]["tokens_per_forward"] == pytest.approx(
            sum(x["gen_tokens"] for x in mine) / sum(x["nfe"] for x in mine))

    assert r["schema"] == rec.SCHEMA
    assert r["sampler"]["name"] == "entropy_bound" and r["sampler"]["knobs"]["gamma"] == 0.5
    assert r["sampler"]["class"].endswith("EntropyBoundSampler")
    assert (r["model"]["name_or_path"] == "dllm-tiny" and r["model"]["family"] == "llada"
            and r["model"]["parameters"] > 0)
    assert r["decode"] == {"gen_length": 32, "block_length": 32, "steps": 32, "cache": "none", "cfg_scale": 0.0,
                           "stop_at_eos": True}  # block_length null -> the window actually used
    assert r["batch_size"] == 2 and r["processes"] == 1 and r["concurrency"] == 2
    assert r["benchmark"] == {"tasks": TASKS, "n_items": 3, "split": "test"}
    hw = r["hardware"]
    assert hw["torch"] == torch.__version__ and hw["device"] == "cpu" and hw["cpu"] and hw["gpu"] is None
    assert r["dllm"]["version"]


def test_commit_is_the_checkout_head_or_none_outside_git(monkeypatch):
    from pathlib import Path

    root = Path(dllm.__file__).resolve().parent.parent
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    src = rec.dllm_source()
    if head.returncode == 0:
        assert src["commit"] == head.stdout.strip() and isinstance(src["dirty"], bool)

    def no_git(*a, **k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(rec.subprocess, "run", no_git)  # an installed wheel, or no git on the machine
    src = rec.dllm_source()
    assert src["commit"] is None and src["dirty"] is None and src["version"]


def test_record_of_a_resolved_run_is_json():
    per_task = {"a": {"items": 2, "accuracy": 50.0, "nfe": 3.5, "real_tokens_per_forward": 12 / 7,
                      "tokens_per_second": 10.0, "latency": 0.1, "wall_time": 0.2},
                "b": {}}
    per_task["all"] = per_task["a"]
    model = tiny_model("fast_dllm_v2", seed=0, block_size=8)
    r = rec.run_record(per_task, model, EntropyBoundSampler(0.2, temperature=0.5),
                       {"batch_size": 4, "decode": {"gen_length": 16, "block_length": None, "steps": None},
                        "n_items": 2, "model": {"name_or_path": "x"}}, processes=2, command="dllm eval")
    json.dumps(r, allow_nan=False)
    assert r["overall"]["forwards"] == 7 and r["overall"]["generated_tokens"] == 12
    assert r["per_task"]["b"] == {"items": 0}
    assert r["decode"]["block_length"] == 8  # the model's own block
    assert r["concurrency"] == 8 and r["sampler"]["knobs"]["temperature"] == 0.5
    assert rec.plain({"x": float("nan"), "y": (1, torch.float32)}) == {"x": "nan", "y": [1, "torch.float32"]}


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    rec.write_record(path, {"v": 1})
    assert json.loads(path.read_text()) == {"v": 1}

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rec.os, "replace", broken)
    with pytest.raises(DllmError, match=r"^record .*run.json cannot be written \(No space left on device\)$"):
        rec.write_record(path, {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1}  # the old record is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left

    (tmp_path / "dir.json").mkdir()
    with pytest.raises(DllmError, match="record .*dir.json cannot be written"):
        rec.write_record(tmp_path / "dir.json", {"v": 3})


def test_record_from_the_command_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dllm.cli", "eval", "tasks=[waiting_line/copy]", "n_items=2",
                        "sampler=entropy_bound", f"output={tmp_path}/e.jsonl", f"record={tmp_path}/run.json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "run.json").read_text())
    assert out["overall"]["items"] == 2 and "record=" in out["command"] and f"wrote {tmp_path}/run.json" in r.stdout
