"""dllm: fast decoding for diffusion language models.

    import dllm
    model = dllm.load("dllm-tiny")
    out = dllm.generate(model, ["reverse: [\"Ann Lee\", \"Bob Stone\"]"], dllm.samplers.LLaDASampler())
"""

from importlib.util import find_spec

if find_spec("dllm.samplers") is None:  # samplers/, training/, kernels/, conf/ become dllm.* only when installed
    raise ImportError("dllm is not installed: run `pip install -e .` in the checkout")

from dllm import samplers  # noqa: E402
from dllm.errors import DllmError  # noqa: E402
from dllm.generate import GenerationResult, generate  # noqa: E402
from dllm.loading import load, save_pretrained  # noqa: E402

__all__ = ["load", "save_pretrained", "generate", "GenerationResult", "DllmError", "samplers"]
__version__ = "0.1.0"
