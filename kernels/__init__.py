"""Kernels: each op is a folder with ``reference.py`` (torch, fp32-accurate, the CPU path),
``triton.py`` (the Triton kernel and its launcher) and ``__init__.py`` (the dispatcher).

The backend is chosen once per call: Triton for CUDA tensors when Triton imports, the torch
reference otherwise. ``DLLM_KERNELS=torch|triton|auto`` or :func:`use` (a context manager, for
tests) overrides it; forcing ``triton`` on CPU tensors needs ``TRITON_INTERPRET=1`` set before the
kernel module is first imported (the parity tests do this).
"""

from __future__ import annotations

import contextlib
import os
import sys

if __name__ == "kernels":
    # This folder installs as ``dllm.kernels``; in a checkout whose root is on sys.path (``python -m`` there,
    # pytest) it is also found as the plain ``kernels``: the name of the Hugging Face hub-kernels package that
    # transformers >= 5.25 imports. Such an import gets that package (or an empty placeholder where it is not
    # installed), never this one: the import system returns what sys.modules holds once this file has run.
    import importlib.machinery
    import importlib.util
    from pathlib import Path

    _root = Path(__file__).resolve().parent.parent
    _spec = importlib.machinery.PathFinder.find_spec(
        "kernels", [p for p in sys.path if Path(p or ".").resolve() != _root])
    if _spec is None:
        # No hub package: a placeholder as empty as a stray namespace package (no __file__, no __version__).
        # transformers < 5.25, finding no metadata, imports the name to read a version and takes such a module
        # for "not installed" (an ImportError here escaped its check: every model load failed); importing
        # any name from it is an ImportError.
        import types

        sys.modules["kernels"] = types.ModuleType("kernels", "placeholder: the hub-kernels package is not installed")
    else:
        _hub = importlib.util.module_from_spec(_spec)
        sys.modules["kernels"] = _hub
        _spec.loader.exec_module(_hub)

BACKENDS = ("auto", "torch", "triton")
_forced: str | None = None


def backend() -> str:
    b = _forced or os.environ.get("DLLM_KERNELS", "auto")
    if b not in BACKENDS:
        raise ValueError(f"DLLM_KERNELS must be one of {BACKENDS}, got {b!r}")
    return b


@contextlib.contextmanager
def use(name: str):
    """Force a backend inside a ``with`` block: ``with kernels.use("triton"): ...``."""
    global _forced
    if name not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {BACKENDS}, got {name!r}")
    old, _forced = _forced, name
    try:
        yield
    finally:
        _forced = old


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def pick(tensor) -> str:
    """'triton' or 'torch' for an op whose data lives on ``tensor``'s device."""
    b = backend()
    if b == "auto":
        return "triton" if tensor.is_cuda and triton_available() else "torch"
    if b == "triton" and not triton_available():
        raise RuntimeError("DLLM_KERNELS=triton but triton is not installed (pip install triton)")
    return b


from dllm.kernels.cache_write import cache_write  # noqa: E402
from dllm.kernels.fused_window_attention import fused_window_attention  # noqa: E402
from dllm.kernels.window_attention import window_attention  # noqa: E402

__all__ = ["backend", "use", "pick", "window_attention", "cache_write", "fused_window_attention", "BACKENDS"]
