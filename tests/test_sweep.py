"""A two-run Hydra multirun sweep of `dllm eval`, its report, and a rerun that skips finished runs."""

import csv
import json
import subprocess
import sys


def dllm(*args, timeout=600):
    r = subprocess.run([sys.executable, "-m", "dllm.cli", *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_two_run_sweep_and_report(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["eval", "--multirun", "sampler=llada,threshold", "tasks=[waiting_line/copy]", "n_items=3", "batch_size=3",
            f"sweep_dir={sweep}"]
    dllm(*args)
    runs = sorted(p.name for p in sweep.iterdir() if (p / "summary.json").exists())
    assert runs == ["sampler=llada", "sampler=threshold"]
    items = (sweep / "sampler=llada" / "items.jsonl").read_text().splitlines()
    assert len(items) == 3
    summary = json.loads((sweep / "sampler=threshold" / "summary.json").read_text())
    assert summary["items"] == 3 and summary["nfe"] < 32 and "ThresholdSampler" in summary["sampler"]

    before = (sweep / "sampler=llada" / "items.jsonl").stat().st_mtime_ns
    r = dllm(*args)  # a rerun finds every item done and decodes nothing
    assert (sweep / "sampler=llada" / "items.jsonl").read_text().splitlines() == items
    assert "eval:" not in r.stderr  # no progress bar: nothing left to decode
    assert before <= (sweep / "sampler=llada" / "items.jsonl").stat().st_mtime_ns

    out = dllm("sweep_report", str(sweep)).stdout
    assert "sampler=threshold" in out
    rows = list(csv.DictReader((sweep / "sweep.csv").open()))
    assert [r["run"] for r in rows] == runs
    for png in ("pareto_tpf.png", "pareto_tps.png"):
        assert (sweep / png).stat().st_size > 5000


def test_report_of_an_empty_folder(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dllm.cli", "sweep_report", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "no finished runs" in r.stderr
