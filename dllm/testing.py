"""Tiny checkpoints in every real format, for tests and for trying the loaders offline.

The weights are random; the names, config keys, special tokens and file layout are the real
ones, so ``dllm.load`` takes exactly the path it takes for LLaDA-8B, Dream-7B or Fast-dLLM v2.
"""

from __future__ import annotations

import socket
from pathlib import Path

from dllm.loading import new_model, save_pretrained
from dllm.models import FAMILIES
from dllm.models.core import CoreConfig

WORDS = ("the a an is of and to in it on cat dog sat ran big red blue one two three four five six seven "
         "eight nine ten yes no up down left right hello world user assistant system").split()
SPECIALS = {
    "llada": {"mask": "<|mdm_mask|>", "eos": "<|endoftext|>", "extra": ["<|eot_id|>"]},
    "dream": {"mask": "<|mask|>", "eos": "<|endoftext|>", "extra": ["<|im_end|>"]},
    "fast_dllm_v2": {"mask": "|<MASK>|", "eos": "<|endoftext|>", "extra": ["<|im_end|>"]},
    # AR parents: no mask token (the loader picks a placeholder; block diffusion adds |<MASK>|)
    "qwen2": {"mask": None, "eos": "<|endoftext|>", "extra": ["<|im_end|>"]},
    "llama": {"mask": None, "eos": "<|endoftext|>", "extra": ["<|eot_id|>"]},
}


def tiny_tokenizer(mask_token: str | None = "<|mdm_mask|>", eos_token: str = "<|endoftext|>", extra=(), words=WORDS):
    """A word-level ``PreTrainedTokenizerFast`` (whitespace split) with the given special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [eos_token, *extra] + ([mask_token] if mask_token else []) + ["<unk>"]
    vocab = {t: i for i, t in enumerate(list(dict.fromkeys(specials)) + list(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    kwargs = dict(tokenizer_object=tok, eos_token=eos_token, unk_token="<unk>", pad_token=eos_token,
                  additional_special_tokens=list(extra))
    if mask_token:
        kwargs["mask_token"] = mask_token
    return PreTrainedTokenizerFast(**kwargs)


def tiny_core_config(family: str, vocab_size: int, **overrides) -> CoreConfig:
    base = dict(vocab_size=vocab_size, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                intermediate_size=48, rope_theta=10000.0, rms_norm_eps=1e-6, max_length=256)
    if family == "llada":
        base.update(qkv_bias=False, attention="bidirectional")
    elif family == "dream":
        base.update(qkv_bias=True, attention="bidirectional")
    elif family in ("qwen2", "llama"):  # causal = block-causal with one-token blocks
        base.update(qkv_bias=family == "qwen2", attention="block_causal", block_size=1)
    else:
        base.update(qkv_bias=True, attention="block_causal", block_size=8)
    base.update(overrides)
    return CoreConfig(**base)


def tiny_model(family: str = "llada", seed: int = 0, **overrides):
    sp = SPECIALS[family]
    tok = tiny_tokenizer(sp["mask"], sp["eos"], sp["extra"])
    cfg = tiny_core_config(family, len(tok), **overrides)
    vocab = tok.get_vocab()
    ends = [vocab[sp["eos"]]] + [vocab[t] for t in sp["extra"]]
    mask = vocab[sp["mask"]] if sp["mask"] else vocab["<unk>"]  # what the AR loader picks
    return new_model(cfg, tok, family, mask, ends, vocab[sp["eos"]], seed=seed)


def tiny_checkpoint(folder: str | Path, family: str = "llada", seed: int = 0, max_shard_bytes: int | None = None,
                    **overrides) -> Path:
    """Write a random tiny model in ``family``'s real Hugging Face format and return the folder."""
    assert family in FAMILIES, family
    return save_pretrained(tiny_model(family, seed, **overrides), folder, max_shard_bytes=max_shard_bytes)


# Prompts the embedded model answers, for the server tests (tests/test_serve.py, tests/test_serve_ray.py)
SERVE_PROMPTS = ['reverse: ["Ann Lee", "Bob Stone"]', 'copy: ["Cy Young", "Dee Park", "Eve Hart"]',
                 'sort: ["Bob Stone", "Ann Lee"]', 'reverse: ["Ann Lee", "Bob Stone", "Cy Young", "Dee Park"]']


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for servers started by tests and benchmarks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
