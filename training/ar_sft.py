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

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from dllm.errors import check
from dllm.loading import load, new_model
from dllm.models.core import CoreConfig
from dllm.training import common
from dllm.training.fit import TrainConfig, fit

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
    shape = CoreConfig(vocab_size=len(tokenizer), attention="block_causal", block_size=1,
                     qkv_bias=family == "qwen2", **arch)
    return new_model(shape, tokenizer, family, vocab[tokenizer.mask_token], [tokenizer.eos_token_id],
                     tokenizer.eos_token_id, seed=seed)


def encode_dataset(rows, tokenizer, max_answer_length: int, max_prompt_length: int):
    """-> list of (prompt ids, answer ids + end-of-text); over-long examples are dropped and counted."""
    return common.encode_examples(rows, tokenizer, max_answer_length, max_prompt_length)


def ar_loss(model, ids, positions, valid, target) -> torch.Tensor:
    """Token-mean next-token cross-entropy over the ``target`` (answer) columns."""
    logits = model(ids, positions, valid)  # [B, L, V], row i predicts token i
    return F.cross_entropy(logits[target], ids[target])


@dataclass
class ArSft:
    """The recipe :func:`fit` drives (training/fit.py's ``Recipe``: build, setup, loss)."""

    data: str
    rows: list
    init: str | None
    arch: dict | None
    tokenizer_from: str | None
    family: str
    vocab_size: int
    answer_length: int
    max_prompt_length: int
    seed: int
    name: ClassVar[str] = "ar_sft"

    @property
    def meta(self) -> dict:
        return {"data": self.data, "init": self.init, "arch": self.arch, "family": self.family,
                "answer_length": self.answer_length, "max_prompt_length": self.max_prompt_length}

    def build(self):
        return build_model(self.init, self.arch, self.tokenizer_from, self.rows, self.vocab_size, self.seed,
                           self.family)

    def setup(self, model) -> int:
        check(model.family in AR_FAMILIES, f"ar_sft trains autoregressive models, got a {model.family} model")
        self.examples, dropped = encode_dataset(self.rows, model.tokenizer, self.answer_length, self.max_prompt_length)
        if dropped:
            print(f"dropped {dropped} examples longer than answer_length/max_prompt_length")
        self.pad = model.pad_token_id
        return len(self.examples)

    def loss(self, model, indices, gen, device, step):
        batch = common.collate([self.examples[i] for i in indices], self.pad, device)
        return ar_loss(model, *batch), {}


TRAIN = TrainConfig()  # the recipe's training defaults: TrainConfig's own


def run(data: str, output_dir: str, init: str | None = None, arch: dict | None = None,
        tokenizer_from: str | None = None, family: str = "qwen2", vocab_size: int = 1024, answer_length: int = 32,
        max_prompt_length: int = 128, train: TrainConfig | dict | None = None):
    """Train; ``train`` holds the settings that differ from ``TRAIN``. Resumes from
    ``output_dir/checkpoint`` when it exists. Returns the output folder."""
    train = TRAIN.updated(train)
    check(answer_length > 0, f"answer_length must be a positive integer, got {answer_length}")
    rows = list(common.load_records(data))
    recipe = ArSft(data, rows, init, arch, tokenizer_from, family, vocab_size, answer_length, max_prompt_length,
                   train.seed)
    return fit(recipe, train, output_dir)
