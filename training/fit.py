"""The optimisation loop every training recipe shares: ``accelerate``, AdamW + warm-up/cosine,
optional LoRA (merged into a plain checkpoint on save) and gradient checkpointing, atomic
checkpoints, exact resume (batches and noise are pure functions of the step), a progress bar and
``loss.jsonl``.

Its settings are one dataclass, :class:`TrainConfig`; a recipe is an object with three verbs
(:class:`Recipe`: build, setup, loss). Each recipe module holds its defaults as ``TRAIN`` (a
``TrainConfig``), and its YAML's ``train:`` node only the values that differ from them."""

from __future__ import annotations

import copy
import dataclasses
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from dllm.delta import lora_tensors, read_adapter, set_lora
from dllm.errors import DllmError, check
from dllm.loading import load, save_pretrained
from dllm.training import common

LINEAR_LAYERS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainConfig:
    """Every setting of the optimisation loop. A new training knob is one field here."""

    max_steps: int = 1000
    batch_size: int = 64  # global batch: examples per optimiser step, over all processes
    lr: float = 1e-3
    warmup_steps: int = 100  # linear warm-up, then cosine decay to lr × min_lr_ratio
    min_lr_ratio: float = 0.1  # 1.0: constant after warm-up
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max gradient norm; 0: no clipping
    seed: int = 0  # batches, noise and a new model's initialisation
    save_every: int = 200  # optimiser steps between checkpoints
    log_every: int = 10  # optimiser steps between loss.jsonl rows
    lora_r: int | None = 0  # LoRA rank; 0 or null: full fine-tuning
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: list(LINEAR_LAYERS))  # suffixes of the core's linears
    gradient_checkpointing: bool = False
    init_adapter: str | None = None  # a delta or LoRA run folder whose adapter this run continues (needs lora_r)
    mixed_precision: str = "no"  # accelerate's: no | fp16 | bf16

    def __post_init__(self):
        check(self.max_steps > 0, f"max_steps must be a positive integer, got {self.max_steps}")
        check(self.batch_size > 0, f"batch_size must be a positive integer, got {self.batch_size}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        for knob in ("save_every", "log_every"):
            value = getattr(self, knob)
            check(isinstance(value, int) and value > 0, f"{knob} must be a positive integer, got {value}")
        check(not self.lora_r or self.lora_r > 0,
              f"lora_r must be a positive integer (0 or null: full fine-tuning), got {self.lora_r}")
        check(not self.init_adapter or bool(self.lora_r),
              f"init_adapter continues a LoRA adapter: it needs lora_r > 0, got lora_r {self.lora_r}")

    def updated(self, changes: TrainConfig | dict | None) -> TrainConfig:
        """These settings with ``changes`` applied: a dict (a YAML ``train:`` node, a Python
        caller's few values) changes only its keys; a TrainConfig replaces every value."""
        if isinstance(changes, TrainConfig):
            return changes
        known = [f.name for f in dataclasses.fields(self)]
        for key in changes or {}:
            check(key in known, f"train has no setting {key!r}; the settings are {known}")
        return dataclasses.replace(self, **dict(changes or {}))


class Recipe(Protocol):
    """What :func:`fit` needs from a training recipe (one class per file in ``training/``)."""

    name: str  # recipe.json's "recipe" and the progress bar's label
    meta: dict  # written into recipe.json beside the step (data, init, ...)

    def build(self):
        """-> a fresh DiffusionLM (a resumed full fine-tuning run loads its checkpoint instead)."""

    def setup(self, model) -> int:
        """Once the model and its tokenizer are known: encode the data; -> the number of examples."""

    def loss(self, model, indices: list[int], generator: torch.Generator, device, step: int):
        """-> (scalar loss of the batch ``indices``, a dict of floats logged beside it in loss.jsonl)."""


# Knobs that change how often a run writes, never what it computes: a resumed run may change them.
CADENCE = ("save_every", "log_every")


def run_settings(recipe: Recipe, train: TrainConfig) -> dict:
    """What a checkpoint records of its run, and what a resume must match: the recipe, its meta
    (data, init, lengths ...) and every training setting but the cadence."""
    knobs = {k: v for k, v in dataclasses.asdict(train).items() if k not in CADENCE}
    return {"recipe": recipe.name, **recipe.meta, "train": knobs}


def check_same_run(ckpt: Path, settings: dict, defaults: dict | None = None) -> None:
    """Refuse to resume a checkpoint written with other settings (a mixed run is neither one). A
    checkpoint from before a setting was recorded ran with that setting's ``defaults`` value (a
    recipe's ``meta_defaults``: the value that changes nothing); a setting with no default there is
    compared on what the checkpoint recorded."""
    def flat(d: dict) -> dict:  # train's knobs as "train.<knob>"; JSON values (a tuple reads as a list)
        d = json.loads(json.dumps(d))
        knobs = {f"train.{k}": v for k, v in d.pop("train", {}).items()}
        return {**d, **knobs}

    path = ckpt / "recipe.json"
    saved, here = flat(json.loads(path.read_text()) if path.exists() else {}), flat(settings)
    saved = {**(defaults or {}), **saved}
    differ = [f"{k}: {json.dumps(saved[k])} there, {json.dumps(v)} here" for k, v in here.items()
              if k in saved and saved[k] != v]
    if differ:
        raise DllmError(f"{ckpt.parent} holds a run with other settings ({'; '.join(differ)}); resume it with the "
                        "same settings or give a new output_dir")


class StopOnSignal:
    """SIGTERM/SIGINT during training: finish the step, write a checkpoint, exit (128 + signal).
    A second signal acts at once, as it would without this handler."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread only
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame):
        self.received = signum
        for sig, handler in self.previous.items():  # the next signal is not deferred
            signal.signal(sig, handler)

    def agreed(self, acc) -> bool:
        """Whether to stop now: on several processes, when any of them got the signal (all stop at
        the same step, so no collective waits on a process that left)."""
        if acc.num_processes == 1:
            return self.received is not None
        flag = torch.tensor([float(self.received is not None)], device=acc.device)
        return bool(acc.gather(flag).max() > 0)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def merged_copy(base):
    """A LoRA-wrapped model -> a plain model with the adapters merged (the adapter keeps training)."""
    merged = copy.deepcopy(base.core).merge_and_unload()
    return type(base)(merged, base.tokenizer, family=base.family, mask_token_id=base.mask_token_id,
                      eos_token_ids=base.eos_token_ids, pad_token_id=base.pad_token_id, shifted=base.shifted)


def cpu_has_bf16_units() -> bool | None:
    """Whether this CPU multiplies bf16 natively (AMX or AVX512-BF16), read from /proc/cpuinfo; None
    where that file is missing. Without them bf16 matmuls are emulated: ~60x an fp32 one measured here."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def start_from_adapter(core, train: TrainConfig, init: str | None) -> None:
    """Set a fresh peft core's factors to ``train.init_adapter``'s; its LoRA settings (and its parent,
    where it records one) must be this run's."""
    lora, tensors = read_adapter(train.init_adapter)
    mine = {"r": train.lora_r, "alpha": float(train.lora_alpha), "targets": sorted(train.lora_targets or [])}
    theirs = {"r": lora.get("r"), "alpha": float(lora.get("alpha", 0)), "targets": sorted(lora.get("targets", []))}
    check(mine == theirs,
          f"init_adapter {train.init_adapter!r} has LoRA {theirs}; this run's train settings are {mine}")
    check(init is None or lora.get("parent") in (None, str(init)),
          f"init_adapter {train.init_adapter!r} adapts {lora.get('parent')!r}, this run's init is {init!r}")
    set_lora(core, tensors)


def fit(recipe: Recipe, train: TrainConfig, output_dir: str) -> Path:
    """Train ``recipe`` with ``train``'s settings. Resumes from ``output_dir/checkpoint``; the final
    model lands in ``output_dir/final/model``."""
    from accelerate import Accelerator  # heavy, and only a training run needs it

    if not isinstance(train, TrainConfig):
        raise DllmError(f"train must be a TrainConfig, got {type(train).__name__}")
    out = Path(output_dir)
    ckpt = out / "checkpoint"
    acc = Accelerator(mixed_precision=train.mixed_precision, cpu=not torch.cuda.is_available())
    if train.mixed_precision == "bf16" and not torch.cuda.is_available() and cpu_has_bf16_units() is False:
        print("warning: train.mixed_precision=bf16 on a CPU without AMX or AVX512-BF16: its bf16 matmuls are "
              "emulated, many times slower than fp32; train.mixed_precision=no is faster here", file=sys.stderr)
    resumed = (ckpt / "trainer_state.pt").exists()
    settings = run_settings(recipe, train)
    if resumed:
        check_same_run(ckpt, settings, getattr(recipe, "meta_defaults", None))
    lora = bool(train.lora_r)
    model = load(ckpt / "model") if resumed and not lora else recipe.build()
    n_examples = recipe.setup(model)
    if lora:
        torch.manual_seed(train.seed)  # the adapters' initialisation follows the recipe's seed
        model.core = common.apply_lora(model.core, train.lora_r, train.lora_alpha, train.lora_dropout,
                                       list(train.lora_targets or []))
        if train.init_adapter and not resumed:  # continue a trained adapter (a resume has its own)
            start_from_adapter(model.core, train, getattr(recipe, "meta", {}).get("init"))
    model.core.gradient_checkpointing = train.gradient_checkpointing
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=train.lr,
                            weight_decay=train.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, common.lr_lambda(train.warmup_steps, train.max_steps,
                                                                    train.min_lr_ratio))
    step, seconds = 0, 0.0
    if resumed:
        state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
        if lora:
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
        to_save = merged_copy(base) if lora else base  # LoRA: a merged copy in the plain format

        def write(tmp: Path):
            save_pretrained(to_save, tmp / "model")
            if lora:  # the adapter alone too: a delta checkpoint ships it instead of the merged model
                save_file(lora_tensors(base.core), str(tmp / "lora.safetensors"))
                (tmp / "lora.json").write_text(json.dumps({"r": train.lora_r, "alpha": train.lora_alpha,
                                                           "targets": list(train.lora_targets or [])}))
            elapsed = seconds + time.perf_counter() - started
            if not final:
                state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
                         "train_seconds": elapsed}
                if lora:
                    state["core"] = base.core.state_dict()
                torch.save(state, tmp / "trainer_state.pt")
            (tmp / "recipe.json").write_text(json.dumps({**settings, "step": step, "train_seconds": elapsed}))

        common.atomic_dir(out / ("final" if final else "checkpoint"), write)

    started = time.perf_counter()
    bar = tqdm(total=train.max_steps, initial=step, desc=recipe.name, disable=not acc.is_main_process)
    with StopOnSignal() as stop:
        while step < train.max_steps and not stop.agreed(acc):
            idx = common.batch_indices(n_examples, train.batch_size, step, train.seed)
            idx = idx[acc.process_index::acc.num_processes]
            with acc.autocast():
                loss, parts = recipe.loss(model, idx, common.step_generator(train.seed, step, acc.process_index),
                                          acc.device, step)
            acc.backward(loss)
            if train.grad_clip:
                acc.clip_grad_norm_(model.parameters(), train.grad_clip)
            opt.step()
            if hasattr(recipe, "after_step"):  # e.g. put frozen rows back (training/expand.py)
                recipe.after_step(base)
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            loss_value = acc.gather(loss.detach()[None]).mean().item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if log is not None and (step % train.log_every == 0 or step == train.max_steps):
                log.add(step=step, loss=loss_value, lr=sched.get_last_lr()[0], **parts)
            if step % train.save_every == 0 or step == train.max_steps:
                save()
    if step < train.max_steps:  # interrupted: every finished step is kept
        if step % train.save_every:
            save()
        bar.close()
        code = stop.received or signal.SIGTERM  # a process that did not get it stops with the one that did
        if acc.is_main_process:
            print(f"\n{recipe.name}: stopped by signal {code} at step {step}; checkpoint saved in {ckpt}; "
                  "the same command resumes it", flush=True)
        raise SystemExit(128 + int(code))
    bar.close()
    save(final=True)
    acc.wait_for_everyone()
    return out
