"""The reference linear: ``F.linear`` (MKL / cuBLAS), what every device and training use."""

import torch
import torch.nn.functional as F


def linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., in] -> [..., out] = x Wᵀ + b."""
    return F.linear(x, weight, bias)
