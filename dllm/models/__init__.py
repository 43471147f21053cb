"""Model families (explicit registry) and the wrappers the decode loop talks to."""

from dllm.models.autoregressive import LLAMA, QWEN2
from dllm.models.core import CoreConfig, Transformer
from dllm.models.dream import DREAM
from dllm.models.fast_dllm_v2 import FAST_DLLM_V2
from dllm.models.llada import LLADA
from dllm.models.wrapper import DiffusionLM, HFDiffusionLM

FAMILIES = {f.name: f for f in (LLADA, DREAM, FAST_DLLM_V2, QWEN2, LLAMA)}

__all__ = ["FAMILIES", "CoreConfig", "Transformer", "DiffusionLM", "HFDiffusionLM"]
