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
    r = subprocess.run([sys.executable, "-m", "dllm.cli", "sweep_report", str(tmp_path)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "no finished runs" in r.stderr


def test_two_processes_equal_one(tmp_path):
    """`torchrun --nproc_per_node 2` shards the items over two CPU processes (gloo) and gathers them:
    the merged rows equal a single-process run item for item."""
    import shutil

    common = ["eval", "tasks=[waiting_line/reverse,sudoku/4x4]", "n_items=5", "batch_size=2", "sampler=threshold"]
    dllm(*common, f"output={tmp_path / 'one.jsonl'}")
    torchrun = shutil.which("torchrun") or "torchrun"
    r = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "dllm.cli", *common,
                        f"output={tmp_path / 'two.jsonl'}"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]

    def rows(name):
        return {(x["task"], x["index"]): (x["output"], x["score"], x["nfe"])
                for x in map(json.loads, (tmp_path / name).read_text().splitlines())}

    one, two = rows("one.jsonl"), rows("two.jsonl")
    assert len(one) == 10 and one == two
    assert not list(tmp_path.glob("two.jsonl.rank*"))  # merged and removed
    assert r.stdout.count("accuracy") == 1  # the main process alone reports
