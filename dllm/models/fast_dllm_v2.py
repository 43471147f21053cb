"""Fast-dLLM v2 checkpoint format (``Efficient-Large-Model/Fast_dLLM_v2_7B``): Qwen2.5 names,
QKV bias, an added ``|<MASK>|`` token, block-causal attention with ``bd_size`` (32) blocks
aligned to absolute positions, token-shifted logits (undone in the wrapper)."""

from dllm.models.core import CoreConfig
from dllm.models.family import QWEN2_NAMES, Family, read_qwen2_config, write_qwen2_config


def read_config(cfg: dict) -> CoreConfig:
    return read_qwen2_config(cfg, attention="block_causal", block_size=int(cfg.get("bd_size", 32)))


def write_config(core: CoreConfig, ids: dict) -> dict:
    return {
        "architectures": ["Fast_dLLM_QwenForCausalLM"],
        "model_type": "Fast_dLLM_Qwen",
        "bd_size": core.block_size,
        **write_qwen2_config(core),
        **ids,
    }


FAST_DLLM_V2 = Family(
    name="fast_dllm_v2",
    model_types=("fast_dllm_qwen", "fast_dllm_v2"),
    read_config=read_config,
    write_config=write_config,
    names=QWEN2_NAMES,
    shifted=True,
    mask_token_names=("|<MASK>|",),
    end_token_names=("<|im_end|>",),
)
