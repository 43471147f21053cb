"""Dream checkpoint format (``Dream-org/Dream-v0-Instruct-7B``): Qwen2 names and config keys,
QKV bias, bidirectional attention, mask id 151666 (``<|mask|>``), logits shifted by one
(the wrapper undoes the shift so row i predicts token i)."""

from dllm.models.core import CoreConfig
from dllm.models.family import QWEN2_NAMES, Family, read_qwen2_config, write_qwen2_config


def read_config(cfg: dict) -> CoreConfig:
    return read_qwen2_config(cfg, attention="bidirectional")


def write_config(core: CoreConfig, ids: dict) -> dict:
    return {"architectures": ["DreamModel"], "model_type": "Dream", **write_qwen2_config(core), **ids}


DREAM = Family(
    name="dream",
    model_types=("dream",),
    read_config=read_config,
    write_config=write_config,
    names=QWEN2_NAMES,
    shifted=True,
    mask_token_names=("<|mask|>",),
    end_token_names=("<|im_end|>", "<|endoftext|>"),
)
