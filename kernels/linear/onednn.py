"""The CPU fast path: oneDNN's linear on a weight reordered once into its blocked layout.

A decode step on a CPU multiplies a few rows (one token of an AR step, a sub-block's 9 columns, a
block's 33) by every weight. ``F.linear`` hands that to MKL's GEMM, which re-reads the weight in its
plain layout at every call and slows quickly with rows: on a 2-core AMD EPYC, SmolLM2-135M's 210 layer
linears cost 45 ms at 9 rows and 75 ms at 33 against 20 ms at one. With the weight prepacked (what
PyTorch's own inductor does for frozen CPU graphs) the same products take 25 and 44 ms; at one row MKL's
matrix-vector product is ~7 % faster on those narrow layers, so :class:`Linear` keeps it there
(``python bench/cpu_linear/run.py``, bench/cpu_linear/bench.md). The packed copy is made at the first
inference call and kept beside the module's weight (the reference and training still use that); any
change of the weight repacks it (:func:`packed_weight`).
"""

from __future__ import annotations

import functools
import warnings
import weakref

import torch

_broken: str | None = None  # set once the ops fail: every later call takes the reference
_HAS_OPS: bool | None = None  # whether this torch has the ops (looked up once: a call costs microseconds)


def onednn_available() -> bool:
    global _HAS_OPS
    if _HAS_OPS is None:
        _HAS_OPS = (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
                    and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
    return _HAS_OPS and _broken is None


@functools.cache
def bf16_available() -> bool:
    """Whether oneDNN has bfloat16 kernels for this CPU (torch's own test: AVX-512 or better; asked once).
    Without them the packed bf16 product does not exist and bf16 takes the reference."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe is not None and probe())


# module -> (key, probes view, their values, packed weight); weak, so copies, state dicts and .to() never see it
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PROBES = 4  # weight elements compared at each call (0.6 µs): a write through ``.data`` bumps no version


def packed_weight(module: torch.nn.Linear) -> torch.Tensor:
    """The module's weight in oneDNN's layout. Repacked when the weight was replaced (another storage),
    written in place (its version), or written through ``.data`` (peft's merge does; seen as a change
    of 4 probed elements spread over the matrix). A few microseconds a call against a layer's ~100."""
    w = module.weight
    key = (w.data_ptr(), w._version, tuple(w.shape))
    held = _PACKED.get(module)
    if held is None or held[0] != key or held[1].tolist() != held[2]:
        flat = w.detach().reshape(-1)
        probes = flat[:: max(1, flat.numel() // _PROBES)][:_PROBES]  # a view: it reads the live weight
        held = (key, probes, probes.tolist(), torch.ops.mkldnn._reorder_linear_weight(w.detach()))
        _PACKED[module] = held
    return held[3]


def linear_onednn(x: torch.Tensor, module: torch.nn.Linear) -> torch.Tensor | None:
    """x [..., in] (CPU, float32 or bfloat16 as the weight, no autograd) -> [..., out] through the packed
    weight; None when the ops fail (they are PyTorch internals: a version may change them), after a
    one-line warning."""
    global _broken
    try:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed_weight(module), module.bias, "none", [], "")
    except (RuntimeError, TypeError) as e:
        _broken = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        _PACKED.pop(module, None)
        warnings.warn(f"oneDNN linear failed ({_broken}); using F.linear from now on", stacklevel=2)
        return None
