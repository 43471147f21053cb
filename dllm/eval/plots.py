"""matplotlib, the optional dependency behind every figure (the ``plots`` extra)."""

from __future__ import annotations

from dllm.errors import DllmError

HINT = "matplotlib is not installed: pip install 'dllm[plots]' (figures of bench, bench_cache, sweep_report, traces)"


def require() -> None:
    """One line naming the ``plots`` extra when matplotlib is missing: call it before a long run
    whose figure is drawn at the end."""
    try:
        import matplotlib  # noqa: F401  heavy and optional
    except ImportError:
        raise DllmError(HINT) from None


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend."""
    require()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
