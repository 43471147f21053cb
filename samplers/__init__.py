"""Unmasking samplers, one per file. ``SAMPLERS`` is the explicit registry the CLI, configs and
the conformance test read."""

from dllm.errors import DllmError
from dllm.samplers.base import Decision, Sampler, StepState
from dllm.samplers.credit import CreditSampler
from dllm.samplers.dream import DreamSampler
from dllm.samplers.entropy_bound import EntropyBoundSampler
from dllm.samplers.entropy_threshold import EntropyThresholdSampler
from dllm.samplers.factor import FactorSampler
from dllm.samplers.frechet import FrechetSampler
from dllm.samplers.freedave import FreeDaveSampler
from dllm.samplers.learn2pd import Learn2PDFilter, Learn2PDSampler
from dllm.samplers.llada import LLaDASampler
from dllm.samplers.localleap import LocalLeapSampler
from dllm.samplers.oracle import OracleSampler
from dllm.samplers.threshold import ThresholdSampler

SAMPLERS: dict[str, type[Sampler]] = {
    "llada": LLaDASampler,
    "dream": DreamSampler,
    "threshold": ThresholdSampler,
    "factor": FactorSampler,
    "frechet": FrechetSampler,
    "localleap": LocalLeapSampler,
    "entropy_threshold": EntropyThresholdSampler,
    "entropy_bound": EntropyBoundSampler,
    "credit": CreditSampler,
    "freedave": FreeDaveSampler,
    "learn2pd": Learn2PDSampler,
}


def build_sampler(name: str, **kwargs) -> Sampler:
    if name not in SAMPLERS:
        raise DllmError(f"sampler must be one of {sorted(SAMPLERS)}, got {name!r}")
    return SAMPLERS[name](**kwargs)


__all__ = ["SAMPLERS", "Sampler", "StepState", "Decision", "build_sampler", "CreditSampler"]
# Analysis samplers need a reference output and are kept out of the production registry.
ANALYSIS: dict[str, type[Sampler]] = {"oracle": OracleSampler}

__all__ += ["LLaDASampler", "DreamSampler", "ThresholdSampler", "FactorSampler", "FrechetSampler", "LocalLeapSampler",
            "EntropyThresholdSampler", "EntropyBoundSampler", "FreeDaveSampler", "Learn2PDSampler", "Learn2PDFilter",
            "OracleSampler", "ANALYSIS"]
