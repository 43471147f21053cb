"""``dllm train recipe=mdlm_sft`` — LLaDA's supervised fine-tuning objective (Nie et al. 2025,
arXiv 2502.09992, §2.3), also the recipe that trains the embedded models from scratch.

Each example is [prompt | response + end-of-text, padded with end-of-text to ``answer_length``].
The prompt is never masked; every answer position (padding included, as LLaDA supervises it) is
masked with probability p = (1 − ε) t + ε, t ~ U(0, 1) per example, and the loss is

    L = mean_batch( Σ_{masked i} CE(logits_i, x_i) / p  /  answer_length ).

Prompts are left-padded in the batch, exactly the canvas layout the decode loop uses, so a model
is trained on the inputs it will see. Runs through ``accelerate`` (one CPU process by default;
DDP / FSDP / DeepSpeed from the user's accelerate config); checkpoints are written atomically and a
resumed run reproduces the uninterrupted loss curve exactly (batches and noise are functions of
the step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dllm.errors import check
from dllm.loading import load, new_model
from dllm.models.core import CoreConfig
from dllm.training import common
from dllm.training.fit import fit


def build_model(init: str | None, arch: dict | None, tokenizer_from: str | None, data_rows, vocab_size: int, seed: int):
    """Start from a checkpoint (``init``) or a new LLaDA-format model of shape ``arch`` with a BPE
    tokenizer trained on the data (or copied from ``tokenizer_from``)."""
    if init:
        return load(init)
    check(arch is not None, "give init=<model> to fine-tune or arch={...} to train a new model")
    tokenizer = common.new_tokenizer(tokenizer_from, data_rows, vocab_size)
    vocab = tokenizer.get_vocab()
    cfg = CoreConfig(vocab_size=len(tokenizer), attention="bidirectional", **arch)
    return new_model(cfg, tokenizer, "llada", vocab[tokenizer.mask_token], [tokenizer.eos_token_id],
                     tokenizer.eos_token_id, seed=seed)


def encode_dataset(rows, tokenizer, answer_length: int, max_prompt_length: int):
    """-> list of (prompt ids, answer ids of exactly answer_length); over-long examples are dropped
    and counted (a silent truncation would teach the model to stop mid-answer)."""
    eos = tokenizer.eos_token_id
    return common.encode_examples(rows, tokenizer, answer_length, max_prompt_length,
                                  lambda prompt, answer: answer + [eos] * (answer_length - len(answer)))


def collate(examples, pad_id: int, device, answer_length: int | None = None, eos: int | None = None):
    """Left-pad prompts: ids, positions, valid [B, P+A]; answer [B, P+A] bool. ``answer_length``
    pads the (already end-of-text padded) answers further with ``eos``."""
    p = max(len(e[0]) for e in examples)
    a = max(len(examples[0][1]), answer_length or 0)
    examples = [(q, ans + [eos] * (a - len(ans))) for q, ans in examples]
    ids = torch.full((len(examples), p + a), pad_id, dtype=torch.long)
    valid = torch.zeros_like(ids, dtype=torch.bool)
    answer = torch.zeros_like(valid)
    for i, (prompt, ans) in enumerate(examples):
        s = p - len(prompt)
        ids[i, s:] = torch.tensor(prompt + ans)
        valid[i, s:] = True
        answer[i, p:] = True
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    return ids.to(device), positions.to(device), valid.to(device), answer.to(device)


def mdlm_loss(model, ids, positions, valid, answer, gen: torch.Generator, mask_id: int, eps: float = 1e-3):
    """LLaDA SFT loss for one batch (see the module docstring). Returns a scalar."""
    b = ids.shape[0]
    t = torch.rand(b, generator=gen)
    p = ((1 - eps) * t + eps).to(ids.device)[:, None]  # [B, 1]
    u = torch.rand(ids.shape, generator=gen).to(ids.device)
    masked = answer & (u < p)
    noisy = ids.masked_fill(masked, mask_id)
    logits = model(noisy, positions, valid)  # [B, L, V]
    ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")  # [B, L]
    per_example = (ce * masked / p).sum(-1) / answer.sum(-1)
    return per_example.mean()


def run(data: str, output_dir: str, init: str | None = None, arch: dict | None = None, tokenizer_from: str | None = None,
        vocab_size: int = 1024, answer_length: int = 32, answer_lengths: list | None = None,
        max_prompt_length: int = 128, max_steps: int = 1000,
        batch_size: int = 64, lr: float = 1e-3, warmup_steps: int = 100, min_lr_ratio: float = 0.1,
        weight_decay: float = 0.01, grad_clip: float = 1.0, seed: int = 0, save_every: int = 200, log_every: int = 10,
        lora_r: int = 0, lora_alpha: float = 16.0, lora_dropout: float = 0.0, lora_targets: list | None = None,
        gradient_checkpointing: bool = False, mixed_precision: str = "no", debug_kill_at_step: int | None = None):
    """Train; resumes from ``output_dir/checkpoint`` when it exists. Returns the output folder."""
    check(answer_length > 0, f"answer_length must be a positive integer, got {answer_length}")
    lengths = [int(n) for n in (answer_lengths or [answer_length])]
    check(all(n >= answer_length for n in lengths),
          f"answer_lengths must all be >= answer_length ({answer_length}), got {lengths}")
    rows = list(common.load_records(data))
    holder = {}

    def build():
        return build_model(init, arch, tokenizer_from, rows, vocab_size, seed)

    def on_start(model):
        examples, dropped = encode_dataset(rows, model.tokenizer, answer_length, max_prompt_length)
        if dropped:
            print(f"dropped {dropped} examples longer than answer_length/max_prompt_length")
        holder.update(examples=examples, tokenizer=model.tokenizer, mask_id=model.mask_token_id)
        return len(examples)

    def loss_fn(model, idx, gen, device, step):
        tok = holder["tokenizer"]
        # answers are end-of-text padded to this step's length (a pure function of the step, so a
        # resumed run pads exactly as the uninterrupted one): mixing lengths teaches the model the
        # canvas sizes it meets at generation time
        pad_to = lengths[int(torch.randint(len(lengths), (1,), generator=common.step_generator(seed + 1, step)))]
        batch = collate([holder["examples"][i] for i in idx], tok.pad_token_id or tok.eos_token_id, device,
                        answer_length=pad_to, eos=tok.eos_token_id)
        return mdlm_loss(model, *batch, gen, holder["mask_id"])

    return fit(build, on_start, loss_fn, recipe="mdlm_sft", output_dir=output_dir,
               meta={"data": data}, max_steps=max_steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
               min_lr_ratio=min_lr_ratio, weight_decay=weight_decay, grad_clip=grad_clip, seed=seed,
               save_every=save_every, log_every=log_every, lora_r=lora_r, lora_alpha=lora_alpha,
               lora_dropout=lora_dropout, lora_targets=lora_targets, gradient_checkpointing=gradient_checkpointing,
               mixed_precision=mixed_precision, debug_kill_at_step=debug_kill_at_step)
