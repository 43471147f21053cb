"""The checkout's top-level folders install as ``dllm.*`` (setup.py), but from the repository root
(``python -m``, pytest) they are also importable by their plain names. ``kernels`` is also the name
of the Hugging Face hub-kernels package, which transformers >= 5.25 requires and imports: such an
import must get that package (or, where it is not installed, the ImportError it would get without
the folder), while ``dllm.kernels`` stays ours."""

import importlib.machinery
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_at_root(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def hub_kernels_installed() -> bool:
    others = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    return importlib.machinery.PathFinder.find_spec("kernels", others) is not None


@pytest.mark.skipif(not hub_kernels_installed(), reason="the hub's kernels package is not installed")
def test_plain_kernels_import_gets_the_hub_package_and_transformers_imports():
    res = run_at_root(
        "import sys, kernels, dllm.kernels as ours\n"
        "assert sys.path[0] == '' and 'site-packages' in kernels.__file__, kernels.__file__\n"
        "assert ours.__file__.endswith('kernels/__init__.py') and 'site-packages' not in ours.__file__\n"
        "assert hasattr(ours, 'window_attention') and not hasattr(kernels, 'window_attention')\n"
        "import transformers.integrations.hub_kernels\n")
    assert res.returncode == 0, res.stderr[-2000:]


def test_without_the_hub_package_the_plain_import_fails_as_it_would_without_the_folder():
    res = run_at_root(  # hide every other kernels package: only the checkout's folder is left to find
        "import sys\n"
        "import importlib.machinery as m\n"
        "full = list(sys.path)\n"
        "sys.path[:] = [p for p in sys.path if p in ('', '.') or m.PathFinder.find_spec('kernels', [p]) is None]\n"
        "try:\n"
        "    import kernels\n"
        "except ImportError as e:\n"
        "    assert e.name == 'kernels' and 'kernels' not in sys.modules, e\n"
        "else:\n"
        "    raise SystemExit('the checkout folder was imported as kernels: ' + kernels.__file__)\n"
        "sys.path[:] = full\n"
        "import dllm.kernels as ours\n"
        "assert hasattr(ours, 'window_attention')\n")
    assert res.returncode == 0, res.stderr[-2000:] + res.stdout[-500:]
