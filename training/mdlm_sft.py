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

import json
import os
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dllm.errors import check
from dllm.loading import load, new_model, save_pretrained
from dllm.models.core import CoreConfig
from dllm.training import common


def build_model(init: str | None, arch: dict | None, tokenizer_from: str | None, data_rows, vocab_size: int, seed: int):
    """Start from a checkpoint (``init``) or a new LLaDA-format model of shape ``arch`` with a BPE
    tokenizer trained on the data (or copied from ``tokenizer_from``)."""
    if init:
        return load(init)
    check(arch is not None, "give init=<model> to fine-tune or arch={...} to train a new model")
    if tokenizer_from:
        tokenizer = load(tokenizer_from).tokenizer
    else:
        from dllm.training.tokenizer import build_bpe_tokenizer

        texts = (t for row in data_rows for t in (row.get("prompt", ""), row.get("response", "")))
        tokenizer = build_bpe_tokenizer(texts, vocab_size)
    vocab = tokenizer.get_vocab()
    cfg = CoreConfig(vocab_size=len(tokenizer), attention="bidirectional", **arch)
    return new_model(cfg, tokenizer, "llada", vocab[tokenizer.mask_token], [tokenizer.eos_token_id],
                     tokenizer.eos_token_id, seed=seed)


def encode_dataset(rows, tokenizer, answer_length: int, max_prompt_length: int):
    """-> list of (prompt ids, answer ids of exactly answer_length); over-long examples are dropped
    and counted (a silent truncation would teach the model to stop mid-answer)."""
    eos = tokenizer.eos_token_id
    out, dropped = [], 0
    for row in rows:
        prompt, resp = common.encode_record(row, tokenizer)
        if len(resp) + 1 > answer_length or len(prompt) > max_prompt_length or not prompt:
            dropped += 1
            continue
        out.append((prompt, resp + [eos] * (answer_length - len(resp))))
    check(len(out) > 0, f"no example fits answer_length={answer_length} and max_prompt_length={max_prompt_length}")
    return out, dropped


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
    from accelerate import Accelerator

    check(max_steps > 0, f"max_steps must be a positive integer, got {max_steps}")
    check(batch_size > 0, f"batch_size must be a positive integer, got {batch_size}")
    check(lr > 0, f"lr must be > 0, got {lr}")
    check(answer_length > 0, f"answer_length must be a positive integer, got {answer_length}")
    lengths = [int(n) for n in (answer_lengths or [answer_length])]
    check(all(n >= answer_length for n in lengths),
          f"answer_lengths must all be >= answer_length ({answer_length}), got {lengths}")
    out = Path(output_dir)
    ckpt = out / "checkpoint"
    acc = Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())
    rows = list(common.load_records(data))
    resumed = (ckpt / "trainer_state.pt").exists()
    if resumed and not lora_r:
        model = load(ckpt / "model")
    else:  # LoRA resumes from the base model plus the saved adapter state
        model = build_model(init, arch, tokenizer_from, rows, vocab_size, seed)
    tokenizer = model.tokenizer
    examples, dropped = encode_dataset(rows, tokenizer, answer_length, max_prompt_length)
    if dropped:
        acc.print(f"dropped {dropped} examples longer than answer_length/max_prompt_length")
    if lora_r:
        model.core = common.apply_lora(model.core, lora_r, lora_alpha, lora_dropout, list(lora_targets or []))
    model.core.gradient_checkpointing = gradient_checkpointing
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay,
                            betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, common.lr_lambda(warmup_steps, max_steps, min_lr_ratio))
    step, seconds = 0, 0.0
    if resumed:
        state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
        if lora_r:
            model.core.load_state_dict(state["core"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = state["step"]
        seconds = float(state.get("train_seconds", 0.0))
    model, opt = acc.prepare(model, opt)
    base = acc.unwrap_model(model)
    log = common.LossLog(out / "loss.jsonl", step) if acc.is_main_process else None

    def save(final: bool = False):
        if not acc.is_main_process:
            return
        core = base.core
        if lora_r:  # a merged copy in the plain format; the adapter keeps training
            import copy

            merged = copy.deepcopy(core).merge_and_unload()
            to_save = type(base)(merged, tokenizer, family=base.family, mask_token_id=base.mask_token_id,
                                 eos_token_ids=base.eos_token_ids, pad_token_id=base.pad_token_id, shifted=base.shifted)
        else:
            to_save = base

        def write(tmp: Path):
            save_pretrained(to_save, tmp / "model")
            if not final:
                state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
                         "train_seconds": seconds + time.perf_counter() - started}
                if lora_r:
                    state["core"] = core.state_dict()
                torch.save(state, tmp / "trainer_state.pt")
            (tmp / "recipe.json").write_text(json.dumps({"recipe": "mdlm_sft", "step": step, "data": data,
                                                         "train_seconds": seconds + time.perf_counter() - started}))

        common.atomic_dir(out / ("final" if final else "checkpoint"), write)

    started = time.perf_counter()
    bar = tqdm(total=max_steps, initial=step, desc="mdlm_sft", disable=not acc.is_main_process)
    while step < max_steps:
        idx = common.batch_indices(len(examples), batch_size, step, seed)[acc.process_index::acc.num_processes]
        # answers are end-of-text padded to this step's length (a pure function of the step, so a
        # resumed run pads exactly as the uninterrupted one): mixing lengths teaches the model the
        # canvas sizes it meets at generation time
        pad_to = lengths[int(torch.randint(len(lengths), (1,), generator=common.step_generator(seed + 1, step)))]
        batch = collate([examples[i] for i in idx], tokenizer.pad_token_id or tokenizer.eos_token_id, acc.device,
                        answer_length=pad_to, eos=tokenizer.eos_token_id)
        with acc.autocast():
            loss = mdlm_loss(model, *batch, common.step_generator(seed, step, acc.process_index), base.mask_token_id)
        acc.backward(loss)
        if grad_clip:
            acc.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        loss_value = acc.gather(loss.detach()[None]).mean().item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if log is not None and (step % log_every == 0 or step == max_steps):
            log.add(step=step, loss=loss_value, lr=sched.get_last_lr()[0])
        if step % save_every == 0 or step == max_steps:
            save()
            if debug_kill_at_step is not None and step >= debug_kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)  # tests: a real kill -9 right after a checkpoint
    bar.close()
    save(final=True)
    acc.wait_for_everyone()
    return out
