"""The checkout's top-level folders install as ``dllm.*`` (setup.py), but from the repository root
(``python -m``, pytest) they are also importable by their plain names. ``kernels`` is also the name
of the Hugging Face hub-kernels package, which transformers >= 5.25 requires and imports: such an
import must get that package (or, where it is not installed, an empty placeholder that transformers
reads as absent), while ``dllm.kernels`` stays ours."""

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


# As if the hub package were not installed: the folder's own lookup of it (a path search that leaves the
# checkout root out) finds nothing; every other import is untouched.
HIDE_HUB = (
    "import importlib, importlib.machinery as m\n"
    "find = m.PathFinder.find_spec.__func__\n"
    "def hide(cls, name, path=None, target=None):\n"
    "    return None if name == 'kernels' and path is not None else find(cls, name, path, target)\n"
    "m.PathFinder.find_spec = classmethod(hide)\n")


def test_without_the_hub_package_the_plain_import_is_an_empty_placeholder():
    """transformers < 5.25 imports ``kernels`` to read its version when it finds no metadata (on a GPU image
    with transformers 5.17 an ImportError there failed every model load from the checkout root): it gets
    a module with no __file__ and no __version__, which that check reads as "not installed"; importing a
    name from it is an ImportError, and ``dllm.kernels`` is still ours."""
    res = run_at_root(
        HIDE_HUB +
        "import kernels\n"
        "assert getattr(kernels, '__file__', None) is None and not hasattr(kernels, '__version__'), kernels\n"
        "assert not hasattr(kernels, 'window_attention') and not hasattr(kernels, 'pick')\n"
        "try:\n"
        "    from kernels import CUDAProperties  # what transformers >= 5.25 imports\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('a name was imported from the placeholder')\n"
        "import dllm.kernels as ours\n"
        "assert hasattr(ours, 'window_attention') and ours is not kernels\n")
    assert res.returncode == 0, res.stderr[-2000:] + res.stdout[-500:]


def test_transformers_5_17_check_reads_the_placeholder_as_absent():
    """The check transformers 5.17 runs (``_is_package_available``: no metadata -> import, then "N/A" and
    no __file__ -> absent), written out, on the placeholder."""
    res = run_at_root(
        HIDE_HUB +
        "package = importlib.import_module('kernels')\n"
        "version = getattr(package, '__version__', 'N/A')\n"
        "assert version == 'N/A' and getattr(package, '__file__', None) is None\n")
    assert res.returncode == 0, res.stderr[-2000:] + res.stdout[-500:]
