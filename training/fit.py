"""The optimisation loop every training recipe shares: ``accelerate``, AdamW + warm-up/cosine,
optional LoRA (merged into a plain checkpoint on save) and gradient checkpointing, atomic
checkpoints, exact resume (batches and noise are pure functions of the step), a progress bar and
``loss.jsonl``. A recipe supplies the model and ``loss_fn(model, indices, generator, device)``."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from dllm.errors import check
from dllm.loading import load, save_pretrained
from dllm.training import common


def fit(build: Callable, on_start: Callable, loss_fn: Callable, *, recipe: str, output_dir: str, meta: dict,
        max_steps: int, batch_size: int, lr: float, warmup_steps: int, min_lr_ratio: float, weight_decay: float,
        grad_clip: float, seed: int, save_every: int, log_every: int, lora_r: int | None, lora_alpha: float,
        lora_dropout: float, lora_targets: list | None, gradient_checkpointing: bool, mixed_precision: str,
        debug_kill_at_step: int | None = None) -> Path:
    """``build()`` -> a fresh DiffusionLM (the resumed checkpoint is loaded instead for full
    fine-tuning); ``on_start(model)`` -> the number of training examples, once the model (and its
    tokenizer) is known; ``loss_fn(model, indices, generator, device, step)`` -> scalar loss of one
    batch. Resumes from
    ``output_dir/checkpoint``; the final model lands in ``output_dir/final/model``."""
    from accelerate import Accelerator

    check(max_steps > 0, f"max_steps must be a positive integer, got {max_steps}")
    check(batch_size > 0, f"batch_size must be a positive integer, got {batch_size}")
    check(lr > 0, f"lr must be > 0, got {lr}")
    check(isinstance(save_every, int) and save_every > 0, f"save_every must be a positive integer, got {save_every}")
    check(isinstance(log_every, int) and log_every > 0, f"log_every must be a positive integer, got {log_every}")
    out = Path(output_dir)
    ckpt = out / "checkpoint"
    acc = Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())
    resumed = (ckpt / "trainer_state.pt").exists()
    model = load(ckpt / "model") if resumed and not lora_r else build()
    n_examples = on_start(model)
    tokenizer = model.tokenizer
    check(not lora_r or lora_r > 0, f"lora_r must be a positive integer (0 or null: full fine-tuning), got {lora_r}")
    if lora_r:
        torch.manual_seed(seed)  # the adapters' initialisation follows the recipe's seed
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
            (tmp / "recipe.json").write_text(json.dumps({"recipe": recipe, "step": step, **meta,
                                                         "train_seconds": seconds + time.perf_counter() - started}))

        common.atomic_dir(out / ("final" if final else "checkpoint"), write)

    started = time.perf_counter()
    bar = tqdm(total=max_steps, initial=step, desc=recipe, disable=not acc.is_main_process)
    while step < max_steps:
        idx = common.batch_indices(n_examples, batch_size, step, seed)[acc.process_index::acc.num_processes]
        with acc.autocast():
            loss = loss_fn(model, idx, common.step_generator(seed, step, acc.process_index), acc.device, step)
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
            log.add(step=step, loss=loss_value, lr=sched.get_last_lr()[0], **getattr(loss_fn, "last_parts", {}))
        if step % save_every == 0 or step == max_steps:
            save()
            if debug_kill_at_step is not None and step >= debug_kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)  # tests: a real kill -9 right after a checkpoint
    bar.close()
    save(final=True)
    acc.wait_for_everyone()
    return out
