"""An eval output holds one run: settings recorded beside it, a rerun under other settings refused,
a lock against a second process, nothing written before the first batch decodes."""

import json
import os
import subprocess
import sys

import pytest

import dllm.eval.runner as runner
from dllm.errors import DllmError
from dllm.eval.resume import lock_path, output_lock, settings_path
from dllm.samplers import LLaDASampler, ThresholdSampler

TASKS = ["waiting_line/reverse"]
GEN = dict(gen_length=32, block_length=16, steps=None, cfg_scale=0.0, stop_at_eos=True, cache="none", seed=None)


class FakeModel:
    name = "fake"


@pytest.fixture
def decoded(monkeypatch):
    """run_batch without a model: every item answered by its reference; the calls are counted."""
    calls = []

    def run_batch(model, sampler, items, gen, reference=None):
        calls.append(len(items))
        return [{"task": it.task, "prompt": it.prompt, "reference": it.reference, "output": it.reference,
                 "score": 1.0, "nfe": 32, "committed": 32, "gen_tokens": 8, "forward_tokens": 40,
                 "tokens_per_forward": 1.0, "real_tokens_per_forward": 0.25, "time": 0.1,
                 "batch_size": len(items)} for it in items], None

    monkeypatch.setattr(runner, "run_batch", run_batch)
    return calls


def run(path, sampler=None, n=3, gen=GEN, **kw):
    return runner.evaluate(FakeModel(), sampler or LLaDASampler(), TASKS, n, gen, batch_size=2, out_path=path,
                           progress=False, **kw)


def test_settings_recorded_and_rerun_resumes(tmp_path, decoded):
    path = tmp_path / "items.jsonl"
    run(path)
    saved = json.loads(settings_path(path).read_text())
    assert saved["sampler"]["class"] == "LLaDASampler" and saved["gen_length"] == 32 and saved["tasks"] == TASKS
    assert saved["model"]["name"] == "fake" and "seed" in saved and "cache" in saved
    assert sum(decoded) == 3
    run(path, n=4)  # same settings, more items: only the new one is decoded
    assert sum(decoded) == 4 and len(path.read_text().splitlines()) == 4
    assert not lock_path(path).exists()  # released


def test_other_settings_are_refused_naming_the_keys(tmp_path, decoded):
    path = tmp_path / "items.jsonl"
    run(path)
    before = path.read_text()
    with pytest.raises(DllmError, match=r"other settings: sampler\.class .*differ") as e:
        run(path, sampler=ThresholdSampler())
    assert "\n" not in str(e.value)
    with pytest.raises(DllmError, match=r"gen_length \(32 -> 64\)"):
        run(path, gen={**GEN, "gen_length": 64})
    with pytest.raises(DllmError, match=r"sampler\.temperature \(0\.0 -> 0\.5\)"):
        run(path, sampler=LLaDASampler(temperature=0.5))
    with pytest.raises(DllmError, match=r"seed \(None -> 3\)"):
        run(path, gen={**GEN, "seed": 3})
    assert path.read_text() == before and sum(decoded) == 3  # nothing decoded, nothing written


def test_the_same_name_with_other_weights_is_refused(tmp_path, decoded):
    """A model folder retrained in place (or a checkpoint a run rewrites) keeps its name: the weight
    files' fingerprint tells the runs apart; an unchanged copy elsewhere is the same weights."""
    from dllm.eval.resume import weights_fingerprint

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x01" * 4096)
    model = type("Folder", (), {"name": str(folder)})()
    path = tmp_path / "items.jsonl"
    runner.evaluate(model, LLaDASampler(), TASKS, 2, GEN, batch_size=2, out_path=path, progress=False)
    first = json.loads(settings_path(path).read_text())["model"]["weights"]
    assert first == weights_fingerprint(str(folder)) and len(first) == 16
    (folder / "model.safetensors").write_bytes(b"\x01" * 4095 + b"\x02")  # one byte of one weight moved
    with pytest.raises(DllmError, match=r"other settings: model\.weights \('[0-9a-f]{16}' -> '[0-9a-f]{16}'\)"):
        runner.evaluate(model, LLaDASampler(), TASKS, 3, GEN, batch_size=2, out_path=path, progress=False)
    assert sum(decoded) == 2
    assert weights_fingerprint("dllm-tiny") == weights_fingerprint(str(dllm_assets() / "dllm-tiny"))
    assert weights_fingerprint("fake") is None and weights_fingerprint("org/not-here") is None


def test_a_record_from_before_fingerprints_resumes(tmp_path, decoded):
    path = tmp_path / "items.jsonl"
    run(path, n=2)
    saved = json.loads(settings_path(path).read_text())
    del saved["model"]["weights"]  # an output written before the fingerprint existed
    settings_path(path).write_text(json.dumps(saved))
    run(path, n=3)
    assert sum(decoded) == 3


def dllm_assets():
    from dllm.loading import ASSETS

    return ASSETS


def test_rows_without_a_settings_record_are_refused(tmp_path, decoded):
    path = tmp_path / "items.jsonl"
    path.write_text('{"task": "waiting_line/reverse", "index": 0}\n')
    with pytest.raises(DllmError, match="settings were not recorded"):
        run(path)


def test_a_second_run_on_one_output_is_refused(tmp_path, decoded):
    path = tmp_path / "items.jsonl"
    with output_lock(path):  # another run holds it
        with pytest.raises(DllmError, match=rf"being written by another dllm eval \(pid {os.getpid()}"):
            run(path)
    assert not path.exists() and not settings_path(path).exists()
    # held by another live process: refused too
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from dllm.eval.resume import output_lock\n"
                               f"with output_lock(Path({str(path)!r})):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DllmError, match=rf"pid {holder.pid}"):
            run(path)
    finally:
        holder.kill()
        holder.wait()
    run(path)  # the holder died: its lock (still on disk) is taken over
    assert len(path.read_text().splitlines()) == 3 and not lock_path(path).exists()


def test_stale_lock_file_of_a_dead_pid_is_taken_over(tmp_path, decoded):
    path = tmp_path / "items.jsonl"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock_path(path).write_text(dead.stdout)
    run(path)
    assert sum(decoded) == 3 and not lock_path(path).exists()


def test_a_validation_error_leaves_nothing(tmp_path, monkeypatch):
    def bad_batch(*a, **k):
        raise DllmError("gen_length (20) must be a multiple of block_length (8)")

    monkeypatch.setattr(runner, "run_batch", bad_batch)
    path = tmp_path / "new" / "deeper" / "items.jsonl"
    with pytest.raises(DllmError, match="multiple of block_length"):
        run(path)
    assert list(tmp_path.iterdir()) == []  # no items.jsonl, no settings, no lock, no folders
