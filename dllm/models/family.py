"""What a model family is: how its config keys and checkpoint names map onto the core."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from dllm.models.core import CoreConfig


@dataclass(frozen=True)
class Family:
    """A checkpoint format.

    ``names`` lists (checkpoint regex, core template) pairs; ``{n}`` is the layer number. The
    inverse mapping (core -> checkpoint) is derived from the same table, so saving in a family's
    format never drifts from loading it.
    """

    name: str
    model_types: tuple[str, ...]  # config.json "model_type" values, lower-cased
    read_config: Callable[[dict], CoreConfig]
    write_config: Callable[[CoreConfig, dict], dict]  # (core config, token ids) -> config.json
    names: tuple[tuple[str, str], ...]
    shifted: bool  # logits at i predict token i+1 (Dream, Fast-dLLM v2); undone in the wrapper
    mask_token_names: tuple[str, ...] = ()  # tokenizer tokens tried when config has no mask id
    end_token_names: tuple[str, ...] = ()  # chat end tokens besides the tokenizer's eos
    mask_optional: bool = False  # AR parents have no mask token; a placeholder id fills the canvas
    _compiled: list = field(default_factory=list, compare=False, repr=False)

    def _table(self):
        if not self._compiled:
            for ckpt, core in self.names:
                pattern = re.compile("^" + re.escape(ckpt).replace(r"\{n\}", r"(?P<n>\d+)") + "$")
                self._compiled.append((pattern, ckpt, core))
        return self._compiled

    def to_core(self, ckpt_name: str) -> str | None:
        for pattern, _, core in self._table():
            m = pattern.match(ckpt_name)
            if m:
                return core.format(n=m.group("n")) if "{n}" in core else core
        return None

    def to_checkpoint(self, core_name: str) -> str:
        for _, ckpt, core in self._table():
            pattern = re.compile("^" + re.escape(core).replace(r"\{n\}", r"(?P<n>\d+)") + "$")
            m = pattern.match(core_name)
            if m:
                return ckpt.format(n=m.group("n")) if "{n}" in ckpt else ckpt
        raise KeyError(f"core tensor {core_name!r} has no name in the {self.name} format")


QWEN2_NAMES = (
    ("model.embed_tokens.weight", "embed_tokens.weight"),
    ("model.layers.{n}.self_attn.q_proj.weight", "layers.{n}.self_attn.q_proj.weight"),
    ("model.layers.{n}.self_attn.q_proj.bias", "layers.{n}.self_attn.q_proj.bias"),
    ("model.layers.{n}.self_attn.k_proj.weight", "layers.{n}.self_attn.k_proj.weight"),
    ("model.layers.{n}.self_attn.k_proj.bias", "layers.{n}.self_attn.k_proj.bias"),
    ("model.layers.{n}.self_attn.v_proj.weight", "layers.{n}.self_attn.v_proj.weight"),
    ("model.layers.{n}.self_attn.v_proj.bias", "layers.{n}.self_attn.v_proj.bias"),
    ("model.layers.{n}.self_attn.o_proj.weight", "layers.{n}.self_attn.o_proj.weight"),
    ("model.layers.{n}.mlp.gate_proj.weight", "layers.{n}.mlp.gate_proj.weight"),
    ("model.layers.{n}.mlp.up_proj.weight", "layers.{n}.mlp.up_proj.weight"),
    ("model.layers.{n}.mlp.down_proj.weight", "layers.{n}.mlp.down_proj.weight"),
    ("model.layers.{n}.input_layernorm.weight", "layers.{n}.input_layernorm.weight"),
    ("model.layers.{n}.post_attention_layernorm.weight", "layers.{n}.post_attention_layernorm.weight"),
    ("model.norm.weight", "norm.weight"),
    ("lm_head.weight", "lm_head.weight"),
)


def read_qwen2_config(cfg: dict, attention: str, block_size: int | None = None) -> CoreConfig:
    """Qwen2-style config.json keys (Dream, Fast-dLLM v2, Qwen2/Llama AR parents)."""
    return CoreConfig(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=cfg["num_attention_heads"],
        num_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"],
        head_dim=cfg.get("head_dim"),
        rope_theta=float(cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        qkv_bias=bool(cfg.get("attention_bias", True)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        max_length=int(cfg.get("max_position_embeddings", 4096)),
        attention=attention,
        block_size=block_size,
    )


def write_qwen2_config(core: CoreConfig) -> dict:
    return {
        "vocab_size": core.vocab_size,
        "hidden_size": core.hidden_size,
        "num_hidden_layers": core.num_layers,
        "num_attention_heads": core.num_heads,
        "num_key_value_heads": core.num_kv_heads,
        "intermediate_size": core.intermediate_size,
        "head_dim": core.head_dim,
        "rope_theta": core.rope_theta,
        "rms_norm_eps": core.rms_norm_eps,
        "attention_bias": core.qkv_bias,
        "tie_word_embeddings": core.tie_embeddings,
        "max_position_embeddings": core.max_length,
        "hidden_act": "silu",
    }
