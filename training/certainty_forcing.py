"""``dllm train recipe=certainty_forcing`` — dParallel's certainty-forcing distillation
(arXiv 2509.26488; algorithms.md §8.1): teach a model to be confident on many masked tokens at once
so an entropy threshold commits them in the same step.

Data: the teacher's trajectories (``recipe=trajectories``): prompt ids and the teacher's full
output of ``gen_length`` tokens. Masking (semi-autoregressive, block ``block_length``): draw the
segment k uniformly among the ceil(R / B) blocks of the R answer positions; blocks before k stay
clean, block k is masked i.i.d. with p = (1 − 1e-3)·mask_ratio + 1e-3, every later position is
MASK. The complementary view masks the other positions of block k (later ones still MASK), so every
position of block k is supervised once. Per view v:

    CE_v  = mean over masked positions of cross-entropy(logits, teacher token)
    Ent_v = mean over masked positions whose argmax already equals the teacher token of the
            entropy of softmax(logits / temperature)
    loss  = CE_mask + CE_comp + λ · (Ent_mask + Ent_comp)

Full fine-tuning or LoRA (``lora_r``; targets are checked against the core's module names and the
adapter is merged into a plain checkpoint on save), through the shared loop (``training/fit.py``):
accelerate, atomic checkpoints, exact resume, progress bar, ``loss.jsonl`` (with the CE and
entropy parts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from dllm.errors import DllmError, check
from dllm.loading import load
from dllm.training import common
from dllm.training.fit import TrainConfig, fit
from dllm.training.trajectories import tokenizer_fingerprint


def views(answer: torch.Tensor, gen_start: int, block_length: int, mask_ratio: float, gen: torch.Generator):
    """answer [B, L] bool (answer positions, which start at column ``gen_start`` in every row) ->
    (mask, complement) [B, L] bool, the two views of §8.1."""
    b, length = answer.shape
    r = length - gen_start
    segments = -(-r // block_length)
    k = torch.randint(segments, (b,), generator=gen)[:, None]  # [B, 1] the partially masked block
    col = torch.arange(length)[None] - gen_start  # answer index of each column
    block = torch.div(col, block_length, rounding_mode="floor")
    p = (1 - 1e-3) * mask_ratio + 1e-3
    coin = torch.rand((b, length), generator=gen) < p
    in_k, later = answer.cpu() & (block == k), answer.cpu() & (block > k)
    mask = (in_k & coin) | later
    comp = (in_k & ~coin) | later
    return mask.to(answer.device), comp.to(answer.device)


def certainty_loss(logits: torch.Tensor, target: torch.Tensor, masked: torch.Tensor, temperature: float):
    """logits [B, L, V], target [B, L], masked [B, L] bool -> (CE, entropy term), each a mean over
    its positions (0 when there are none). The entropy term only covers masked positions whose
    argmax already equals the target: certainty is forced where the model is already right."""
    lg, tg = logits[masked], target[masked]  # [M, V], [M]
    if tg.numel() == 0:
        zero = logits.sum() * 0
        return zero, zero
    ce = F.cross_entropy(lg.float(), tg)
    right = lg.argmax(-1) == tg
    if not bool(right.any()):
        return ce, logits.sum() * 0
    logp = F.log_softmax(lg[right].float() / temperature, -1)
    ent = -(logp.exp() * logp).sum(-1).mean()
    return ce, ent


def load_trajectories(path: str, student, keep: str = "all") -> list[tuple[list[int], list[int]]]:
    """(prompt ids, teacher output ids) rows; ``keep="correct"`` drops the rows the task scorer
    marked wrong (rows without a score are kept)."""
    import datasets

    folder = Path(path)
    check((folder / "dataset").exists() and (folder / "meta.json").exists(),
          f"trajectories {folder} not found: make them with `dllm train recipe=trajectories` first")
    meta = json.loads((folder / "meta.json").read_text())
    mine = tokenizer_fingerprint(student.tokenizer)
    if meta["tokenizer"] != mine:
        raise DllmError(f"trajectories {folder} were written with another tokenizer ({meta['tokenizer']}) than the "
                        f"student's ({mine}): the token ids would mean different words")
    ds = datasets.load_from_disk(str(folder / "dataset"))
    rows = [r for r in ds if keep == "all" or r.get("correct") is not False]
    check(len(rows) > 0, f"no trajectory left in {folder} with keep={keep!r}")
    return [(list(r["prompt_ids"]), list(r["response_ids"])) for r in rows]


@dataclass
class CertaintyForcing:
    """The recipe :func:`fit` drives (training/fit.py's ``Recipe``: build, setup, loss)."""

    trajectories: str
    init: str
    keep: str
    block_length: int
    mask_ratio: float
    lam: float
    temperature: float
    name: ClassVar[str] = "certainty_forcing"

    @property
    def meta(self) -> dict:
        return {"data": self.trajectories, "keep": self.keep, "lam": self.lam, "block_length": self.block_length,
                "init": self.init, "mask_ratio": self.mask_ratio, "temperature": self.temperature}

    def build(self):
        return load(self.init)

    def setup(self, model) -> int:
        self.examples = load_trajectories(self.trajectories, model, self.keep)
        self.mask_id = model.mask_token_id
        self.pad = model.tokenizer.pad_token_id or model.tokenizer.eos_token_id
        return len(self.examples)

    def loss(self, model, indices, gen, device, step):
        ids, pos, valid, answer = common.collate([self.examples[i] for i in indices], self.pad, device)
        gen_start = int(answer[0].int().argmax())  # prompts are left-padded: answers share a start column
        mask, comp = views(answer, gen_start, self.block_length, self.mask_ratio, gen)
        both = torch.cat([mask, comp])
        noisy = torch.cat([ids, ids]).masked_fill(both, self.mask_id)
        logits = model(noisy, torch.cat([pos, pos]), torch.cat([valid, valid]))  # the two views in one batch
        target = torch.cat([ids, ids])
        n = ids.shape[0]
        ce_m, ent_m = certainty_loss(logits[:n], target[:n], mask, self.temperature)
        ce_c, ent_c = certainty_loss(logits[n:], target[n:], comp, self.temperature)
        parts = {"ce": float((ce_m + ce_c).detach()), "entropy": float((ent_m + ent_c).detach())}
        return ce_m + ce_c + self.lam * (ent_m + ent_c), parts


# the reference's LLaDA settings: LoRA r = α = 128 (lora_r null: full fine-tuning), lr 2e-5 constant
TRAIN = TrainConfig(batch_size=32, lr=2e-5, warmup_steps=0, min_lr_ratio=1.0, lora_r=128, lora_alpha=128.0)


def run(trajectories: str, init: str, output_dir: str, keep: str = "all", block_length: int = 32,
        mask_ratio: float = 0.5, lam: float = 2.0, temperature: float = 0.5, train: TrainConfig | dict | None = None):
    """Distil; ``train`` holds the settings that differ from ``TRAIN``. Resumes from
    ``output_dir/checkpoint``. Returns the output folder."""
    train = TRAIN.updated(train)
    check(lam >= 0, f"lam (the entropy weight λ) must be >= 0, got {lam}")
    check(keep in ("all", "correct"), f"keep must be 'all' or 'correct', got {keep!r}")
    check(train.lora_r is None or train.lora_r > 0,
          f"lora_r must be a positive integer (or null for full fine-tuning), got {train.lora_r}")
    check(0 < mask_ratio < 1, f"mask_ratio must be in (0, 1), got {mask_ratio}")
    check(temperature > 0, f"temperature must be > 0, got {temperature}")
    check(block_length > 0, f"block_length must be a positive integer, got {block_length}")
    recipe = CertaintyForcing(trajectories, init, keep, block_length, mask_ratio, lam, temperature)
    return fit(recipe, train, output_dir)
