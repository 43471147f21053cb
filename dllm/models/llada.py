"""LLaDA checkpoint format (``GSAI-ML/LLaDA-8B-Instruct``; OLMo-derived names, no trust_remote_code).

Config keys: d_model, n_heads, n_kv_heads, n_layers, mlp_hidden_size, rope_theta, rms_norm_eps,
embedding_size (logit rows; >= vocab_size), max_sequence_length, include_bias /
include_qkv_bias, weight_tying, mask_token_id (126336 for LLaDA-8B). Logits are not shifted.
"""

from dllm.models.core import CoreConfig
from dllm.models.family import Family

_P = "model.transformer."
NAMES = (
    (_P + "wte.weight", "embed_tokens.weight"),
    (_P + "blocks.{n}.q_proj.weight", "layers.{n}.self_attn.q_proj.weight"),
    (_P + "blocks.{n}.q_proj.bias", "layers.{n}.self_attn.q_proj.bias"),
    (_P + "blocks.{n}.k_proj.weight", "layers.{n}.self_attn.k_proj.weight"),
    (_P + "blocks.{n}.k_proj.bias", "layers.{n}.self_attn.k_proj.bias"),
    (_P + "blocks.{n}.v_proj.weight", "layers.{n}.self_attn.v_proj.weight"),
    (_P + "blocks.{n}.v_proj.bias", "layers.{n}.self_attn.v_proj.bias"),
    (_P + "blocks.{n}.attn_out.weight", "layers.{n}.self_attn.o_proj.weight"),
    (_P + "blocks.{n}.ff_proj.weight", "layers.{n}.mlp.gate_proj.weight"),  # SiLU applied here
    (_P + "blocks.{n}.up_proj.weight", "layers.{n}.mlp.up_proj.weight"),
    (_P + "blocks.{n}.ff_out.weight", "layers.{n}.mlp.down_proj.weight"),
    (_P + "blocks.{n}.attn_norm.weight", "layers.{n}.input_layernorm.weight"),
    (_P + "blocks.{n}.ff_norm.weight", "layers.{n}.post_attention_layernorm.weight"),
    (_P + "ln_f.weight", "norm.weight"),
    (_P + "ff_out.weight", "lm_head.weight"),
)


def read_config(cfg: dict) -> CoreConfig:
    n_heads = cfg["n_heads"]
    return CoreConfig(
        vocab_size=cfg.get("embedding_size") or cfg["vocab_size"],
        hidden_size=cfg["d_model"],
        num_layers=cfg["n_layers"],
        num_heads=n_heads,
        num_kv_heads=cfg.get("n_kv_heads") or n_heads,
        intermediate_size=cfg.get("mlp_hidden_size") or cfg.get("mlp_ratio", 4) * cfg["d_model"],
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        qkv_bias=bool(cfg.get("include_bias") or cfg.get("include_qkv_bias")),
        tie_embeddings=bool(cfg.get("weight_tying", False)),
        max_length=int(cfg.get("max_sequence_length", 4096)),
        attention="bidirectional",
    )


def write_config(core: CoreConfig, ids: dict) -> dict:
    return {
        "architectures": ["LLaDAModelLM"],
        "model_type": "llada",
        "d_model": core.hidden_size,
        "n_heads": core.num_heads,
        "n_kv_heads": core.num_kv_heads,
        "n_layers": core.num_layers,
        "mlp_hidden_size": core.intermediate_size,
        "mlp_ratio": max(1, core.intermediate_size // core.hidden_size),
        "rope": True,
        "rope_theta": core.rope_theta,
        "rms_norm_eps": core.rms_norm_eps,
        "layer_norm_type": "rms",
        "activation_type": "silu",
        "block_type": "llama",
        "include_bias": False,
        "include_qkv_bias": core.qkv_bias,
        "weight_tying": core.tie_embeddings,
        "vocab_size": core.vocab_size,
        "embedding_size": core.vocab_size,
        "max_sequence_length": core.max_length,
        "mask_token_id": ids["mask_token_id"],
        "eos_token_id": ids["eos_token_id"],
        "pad_token_id": ids["pad_token_id"],
    }


LLADA = Family(
    name="llada",
    model_types=("llada",),
    read_config=read_config,
    write_config=write_config,
    names=NAMES,
    shifted=False,
    mask_token_names=("<|mdm_mask|>",),
    end_token_names=("<|eot_id|>", "<|endoftext|>"),
)
