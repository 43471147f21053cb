"""Autoregressive checkpoint formats (Hugging Face ``Qwen2ForCausalLM`` and ``LlamaForCausalLM``):
the parents that block diffusion adapts (algorithms.md §4) and the AR baselines of its benchmark.

A causal model is a block-causal model whose blocks are one token long (query q sees key k iff
k <= q), and its logits are token-shifted (row i predicts token i+1). Reading it that way, the one
decode loop is already an AR decoder: decode windows of one token, and the exact ``block`` cache
feeds each step the token just decoded plus the window — the usual KV-cached AR step, with the
prompt prefilled in the first forward. The placeholder in the window (the mask id) is never read:
the window's logit comes from the column left of it.

Only what the core expresses is accepted; anything else (scaled RoPE, an output-projection or MLP
bias, sliding windows, another activation) is an error naming the field — silently ignoring it
would load a different function than the checkpoint's.
"""

from __future__ import annotations

from dllm.errors import DllmError
from dllm.models.core import CoreConfig
from dllm.models.family import QWEN2_NAMES, Family, read_qwen2_config, write_qwen2_config


def unsupported(cfg: dict, fields: dict) -> None:
    """``fields``: config key -> predicate that is True when the value is one the core can run."""
    for key, ok in fields.items():
        if key in cfg and not ok(cfg[key]):
            raise DllmError(f"{cfg.get('model_type')} checkpoint field {key}={cfg[key]!r} is not supported by the dllm "
                            "core (it runs RoPE without scaling, SwiGLU, full attention, no o_proj/MLP bias)")


def _no_rope_scaling(v) -> bool:
    return v is None or (isinstance(v, dict) and v.get("rope_type", v.get("type")) in (None, "default"))


MASK_NAMES = ("|<MASK>|", "<|mask|>", "<|mdm_mask|>")  # a mask token an AR tokenizer may already carry
COMMON = {"hidden_act": lambda v: v == "silu", "rope_scaling": _no_rope_scaling,
          "rope_parameters": lambda v: _no_rope_scaling(v) if isinstance(v, dict) else v is None}


def read_qwen2(cfg: dict) -> CoreConfig:
    unsupported(cfg, {**COMMON, "use_sliding_window": lambda v: not v})
    return read_qwen2_config({**cfg, "attention_bias": True}, attention="block_causal", block_size=1)


def read_llama(cfg: dict) -> CoreConfig:
    # Llama's attention_bias also puts a bias on o_proj, which the core does not have
    unsupported(cfg, {**COMMON, "attention_bias": lambda v: not v, "mlp_bias": lambda v: not v,
                      "pretraining_tp": lambda v: v in (None, 1)})
    return read_qwen2_config({**cfg, "attention_bias": False}, attention="block_causal", block_size=1)


def _check_ar(core: CoreConfig) -> None:
    if not core.autoregressive:
        raise DllmError(f"an autoregressive checkpoint has blocks of one token, this model has block_size "
                        f"{core.block_size}: save it as fast_dllm_v2")


def write_qwen2(core: CoreConfig, ids: dict) -> dict:
    _check_ar(core)
    if not core.qkv_bias:
        raise DllmError("the qwen2 format has QKV biases; save a model without them as llama")
    cfg = write_qwen2_config(core)
    cfg.pop("attention_bias")
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "use_sliding_window": False,
            "bos_token_id": ids.get("eos_token_id"), **cfg, **ids}


def write_llama(core: CoreConfig, ids: dict) -> dict:
    _check_ar(core)
    if core.qkv_bias:
        raise DllmError("the llama format has no QKV biases; save a model with them as qwen2")
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "mlp_bias": False,
            **write_qwen2_config(core), "attention_bias": False, **ids}


QWEN2 = Family(
    name="qwen2",
    model_types=("qwen2",),
    read_config=read_qwen2,
    write_config=write_qwen2,
    names=QWEN2_NAMES,
    shifted=True,
    mask_token_names=MASK_NAMES,
    end_token_names=("<|im_end|>", "<|endoftext|>"),
    mask_optional=True,
)

LLAMA = Family(
    name="llama",
    model_types=("llama",),
    read_config=read_llama,
    write_config=write_llama,
    names=tuple((c, m) for c, m in QWEN2_NAMES if not c.endswith(".bias")),
    shifted=True,
    mask_token_names=MASK_NAMES,
    end_token_names=("<|im_end|>", "<|eot_id|>", "<|endoftext|>"),
    mask_optional=True,
)
