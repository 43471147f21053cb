"""``dllm train recipe=ar_sft`` — autoregressive supervised fine-tuning in the same core: next-token
cross-entropy on the answer tokens (and the one end-of-text that closes them), the prompt only
conditioning. It trains the small AR parent that block diffusion adapts (algorithms.md §4) and
fine-tunes Qwen2 / Llama checkpoints (``init=``).

Layout per batch: [left padding | prompt | answer + end-of-text | right padding]. The core runs
causally (a block-causal model with one-token blocks, dllm/models/autoregressive.py); the wrapper
undoes the token shift, so row i of the logits predicts token i and the loss reads the answer
columns directly. Token-mean loss over the batch (the Hugging Face convention). Same loop as every
recipe (training/fit.py): accelerate, atomic checkpoints, exact resume, progress bar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dllm.errors import check
from dllm.loading import load, new_model
from dllm.models.core import CoreConfig
from dllm.training import common
from dllm.training.fit import fit

AR_FAMILIES = ("qwen2", "llama")


def build_model(init: str | None, arch: dict | None, tokenizer_from: str | None, data_rows, vocab_size: int,
                seed: int, family: str = "qwen2"):
    """An AR checkpoint (``init``) or a new causal model of shape ``arch`` in ``family``'s format,
    with the tokenizer of ``tokenizer_from`` (sharing it with a diffusion model keeps the mask
    token the adaptation needs) or a BPE tokenizer trained on the data."""
    if init:
        model = load(init)
        check(model.family in AR_FAMILIES, f"init must be an autoregressive checkpoint ({'/'.join(AR_FAMILIES)}), "
                                           f"{init} is {model.family}")
        return model
    check(arch is not None, "give init=<model> to fine-tune or arch={...} to train a new model")
    check(family in AR_FAMILIES, f"family must be one of {AR_FAMILIES}, got {family!r}")
    tokenizer = common.new_tokenizer(tokenizer_from, data_rows, vocab_size)
    vocab = tokenizer.get_vocab()
    cfg = CoreConfig(vocab_size=len(tokenizer), attention="block_causal", block_size=1,
                     qkv_bias=family == "qwen2", **arch)
    return new_model(cfg, tokenizer, family, vocab[tokenizer.mask_token], [tokenizer.eos_token_id],
                     tokenizer.eos_token_id, seed=seed)


def encode_dataset(rows, tokenizer, max_answer_length: int, max_prompt_length: int):
    """-> list of (prompt ids, answer ids + end-of-text); over-long examples are dropped and counted."""
    return common.encode_examples(rows, tokenizer, max_answer_length, max_prompt_length)


def collate(examples, pad_id: int, device):
    """-> ids, positions, valid, target [B, P+A]: prompts left-padded (the canvas layout), answers
    right-padded; ``target`` marks the answer tokens the loss reads."""
    p = max(len(q) for q, _ in examples)
    a = max(len(ans) for _, ans in examples)
    ids = torch.full((len(examples), p + a), pad_id, dtype=torch.long)
    valid = torch.zeros_like(ids, dtype=torch.bool)
    target = torch.zeros_like(valid)
    for i, (prompt, ans) in enumerate(examples):
        s = p - len(prompt)
        ids[i, s:p + len(ans)] = torch.tensor(prompt + ans)
        valid[i, s:p + len(ans)] = True
        target[i, p:p + len(ans)] = True
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    return ids.to(device), positions.to(device), valid.to(device), target.to(device)


def ar_loss(model, ids, positions, valid, target) -> torch.Tensor:
    logits = model(ids, positions, valid)  # [B, L, V], row i predicts token i
    return F.cross_entropy(logits[target], ids[target])


def run(data: str, output_dir: str, init: str | None = None, arch: dict | None = None,
        tokenizer_from: str | None = None, family: str = "qwen2", vocab_size: int = 1024, answer_length: int = 32,
        max_prompt_length: int = 128, max_steps: int = 1000, batch_size: int = 64, lr: float = 1e-3,
        warmup_steps: int = 100, min_lr_ratio: float = 0.1, weight_decay: float = 0.01, grad_clip: float = 1.0,
        seed: int = 0, save_every: int = 200, log_every: int = 10, lora_r: int = 0, lora_alpha: float = 16.0,
        lora_dropout: float = 0.0, lora_targets: list | None = None, gradient_checkpointing: bool = False,
        mixed_precision: str = "no", debug_kill_at_step: int | None = None):
    """Train; resumes from ``output_dir/checkpoint`` when it exists. Returns the output folder."""
    check(answer_length > 0, f"answer_length must be a positive integer, got {answer_length}")
    rows = list(common.load_records(data))
    holder = {}

    def on_start(model):
        check(model.family in AR_FAMILIES, f"ar_sft trains autoregressive models, got a {model.family} model")
        examples, dropped = encode_dataset(rows, model.tokenizer, answer_length, max_prompt_length)
        if dropped:
            print(f"dropped {dropped} examples longer than answer_length/max_prompt_length")
        holder.update(examples=examples, pad=model.pad_token_id)
        return len(examples)

    def loss_fn(model, idx, gen, device, step):
        batch = collate([holder["examples"][i] for i in idx], holder["pad"], device)
        return ar_loss(model, *batch)

    return fit(lambda: build_model(init, arch, tokenizer_from, rows, vocab_size, seed, family), on_start, loss_fn,
               recipe="ar_sft", output_dir=output_dir, meta={"data": data}, max_steps=max_steps,
               batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio,
               weight_decay=weight_decay, grad_clip=grad_clip, seed=seed, save_every=save_every,
               log_every=log_every, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
               lora_targets=lora_targets, gradient_checkpointing=gradient_checkpointing,
               mixed_precision=mixed_precision, debug_kill_at_step=debug_kill_at_step)
