"""dllm: fast decoding for diffusion language models.

    import dllm
    model = dllm.load("dllm-tiny")
    out = dllm.generate(model, ["reverse: [\"Ann Lee\", \"Bob Stone\"]"], dllm.samplers.LLaDASampler())
"""

from dllm import samplers
from dllm.errors import DllmError
from dllm.generate import GenerationResult, generate
from dllm.loading import load, save_pretrained

__all__ = ["load", "save_pretrained", "generate", "GenerationResult", "DllmError", "samplers"]
__version__ = "0.1.0"
