"""The built wheel holds every package: build it from the checkout, install it into a fresh virtual
environment that cannot see the editable install, import every subpackage there and run
``dllm generate`` on the embedded model from the installed files."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOTS = {"dllm": "dllm", "dllm.samplers": "samplers", "dllm.training": "training", "dllm.kernels": "kernels",
         "dllm.conf": "conf"}  # as setup.py maps them
SOURCES = ["pyproject.toml", "setup.py", "README.md", *ROOTS.values()]

# runs last in the venv's start-up (after every .pth file): drops the editable install's import hook,
# so a package missing from the wheel cannot be found in the checkout instead
SITECUSTOMIZE = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
"""

CHECK = """import importlib, json, sys
import dllm
names = json.loads(sys.argv[1])
for name in names:
    importlib.import_module(name)
print(json.dumps({"dllm": dllm.__file__, "imported": len(names)}))
"""


def source_packages() -> list[str]:
    """Every package of the checkout under its installed name (each folder with an __init__.py)."""
    names = []
    for name, folder in ROOTS.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder).parts
            if "__pycache__" not in rel:
                names.append(".".join((name, *rel)))
    return names


@pytest.mark.slow
def test_wheel_installs_every_package_and_generates(tmp_path):
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ behind
    for entry in SOURCES:
        path = ROOT / entry
        if path.is_dir():
            shutil.copytree(path, src / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / entry)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    run = dict(capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-q", "-w", str(tmp_path / "dist"), str(src)], **run)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("dllm-*.whl")

    venv = tmp_path / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], **run)
    assert r.returncode == 0, r.stderr[-3000:]
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          **run).stdout.strip()
    assert site.startswith(str(venv)) and site != sysconfig.get_paths()["purelib"]
    (Path(site) / "sitecustomize.py").write_text(SITECUSTOMIZE)
    r = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
                        "--no-warn-script-location", str(wheel)], **run)
    assert r.returncode == 0, r.stderr[-3000:]

    packages = source_packages()
    assert {"dllm.kernels.window_attention", "dllm.eval.tasks", "dllm.engine"} <= set(packages)
    r = subprocess.run([str(python), "-c", CHECK, json.dumps(packages)], **run)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["dllm"].startswith(site), seen  # the installed copy, not the checkout
    assert seen["imported"] == len(packages)

    r = subprocess.run([str(venv / "bin" / "dllm"), "generate", 'prompt=copy: ["Ann Lee"]', "decode.gen_length=16",
                        "decode.block_length=16"], **run)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "NFE" in r.stdout, r.stdout
