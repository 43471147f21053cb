"""Linear layers whose inference on a CPU runs oneDNN on a prepacked weight (:mod:`.onednn`), in
float32 and, where the CPU has oneDNN's bfloat16 support (AVX-512 BF16 / AMX), in bfloat16;
``F.linear`` (:mod:`.reference`) everywhere else: CUDA, other dtypes, training, and under
``DLLM_KERNELS=torch`` (or ``kernels.use("torch")``), which turns the fast path off."""

from __future__ import annotations

import torch
from torch import nn

from dllm.kernels import backend
from dllm.kernels.linear.onednn import bf16_available, linear_onednn, onednn_available
from dllm.kernels.linear.reference import linear_reference


def use_onednn(x: torch.Tensor) -> bool:
    return (backend() == "auto" and x.device.type == "cpu" and x.numel() > 0 and not torch.is_grad_enabled()
            and onednn_available() and (x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and bf16_available())))


# One float32 row (an AR step at batch 1) goes through oneDNN only on wide products: the vocabulary head is
# 1.67x faster there, SmolLM2's 576-1536-wide layer linears 0.94x (MKL's matrix-vector product wins; measured
# side by side, bench/cpu_linear/bench.md). From two rows on, oneDNN wins on every shape measured; in
# bfloat16 it wins at one row too (F.linear's bf16 product has no fast matrix-vector kernel here).
ONE_ROW_MIN_OUT = 8192


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state dict and LoRA wrapping) with the CPU inference fast path.
    The packed copy costs the weight's memory again, on CPU float32 / bfloat16 models only."""

    def takes_onednn(self, x: torch.Tensor) -> bool:
        """Whether :meth:`forward` runs ``x`` [..., in] through the packed weight."""
        return (use_onednn(x) and self.weight.dtype == x.dtype
                and (x.dtype == torch.bfloat16 or self.out_features >= ONE_ROW_MIN_OUT or x.numel() > x.shape[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.takes_onednn(x):
            out = linear_onednn(x, self)
            if out is not None:
                return out
        return linear_reference(x, self.weight, self.bias)


__all__ = ["Linear", "ONE_ROW_MIN_OUT", "bf16_available", "linear_reference", "linear_onednn", "onednn_available"]
