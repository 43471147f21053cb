"""``dllm train recipe=block_diffusion`` — Fast-dLLM v2's recipe (algorithms.md §4.2): adapt an
autoregressive model (Qwen2 / Llama format) into a block-diffusion model, saved in the Fast-dLLM v2
format (block-causal attention with ``bd_size`` blocks aligned to absolute positions, shifted logits).

One training example is [prompt | answer + end-of-text], the end-of-text padding running to the
next multiple of the block size, so no block straddles two samples (each row is one sample). For a
batch of B rows of length L:

1. Blocks are ``position // block_size``. Each (row, block) draws t ~ U(0, 1) and
   p = (1 − ε) t + ε; each answer token of the block is masked with probability p (prompt tokens
   never). The **complementary view** masks exactly the other answer tokens; both views go in the
   same batch (2B rows), so every answer token is supervised exactly once per step.
2. The input of a view is [x_t ; x_0] (noisy copy, then clean copy: 2L columns), both halves at
   positions 0..L−1.
3. Attention (:func:`bd_attention_mask`), with blk = block of a column within its half:
   noisy→noisy iff same block; noisy→clean iff clean block < noisy block; clean→clean iff
   key block ≤ query block; clean→noisy never. A noisy block therefore sees exactly what it sees
   when it is decoded: the clean earlier blocks and its own partly masked self.
4. Loss on the noisy half only, with the AR token shift: the hidden state at column i predicts the
   token at i+1 (the parent's own convention, which is why the adaptation is cheap); plain token
   mean of the cross-entropy over the masked tokens (no 1/t weighting).

Our choice where the reference differs: the end-of-text padding up to the block boundary is
supervised (the reference pads with MASK and ignores it), so the model learns to fill the rest of
the last block with end-of-text in parallel, as LLaDA supervises its padding.

Optional (``lam`` > 0, off by default): dParallel's certainty-forcing term (algorithms.md §8.1,
:func:`dllm.training.certainty_forcing.certainty_loss`) added to the same masked tokens: λ times the
entropy of softmax(logits / temperature) where the argmax already equals the target, so a threshold
sampler finds more tokens above its threshold in one forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from dllm.errors import check
from dllm.kernels.linear import Linear
from dllm.loading import load
from dllm.models.autoregressive import MASK_NAMES
from dllm.training import common
from dllm.training.ar_sft import AR_FAMILIES
from dllm.training.certainty_forcing import certainty_loss
from dllm.training.fit import TrainConfig, fit

MASK_TOKEN = "|<MASK>|"  # added when the parent's tokenizer has no mask token (as Fast-dLLM v2 does)


def bd_attention_mask(positions: torch.Tensor, valid: torch.Tensor, block_size: int, start: int = 0) -> torch.Tensor:
    """positions, valid [B, L] of the clean half; the noisy half is its columns ``start``.. (N = L − start)
    -> bool [B, 1, N + L, N + L] over [noisy ; clean], True = may attend."""
    blk = positions // block_size  # [B, L]
    nb = blk[:, start:]  # [B, N]
    nn_ = nb[:, :, None] == nb[:, None, :]  # noisy -> noisy: same block
    nc = blk[:, None, :] < nb[:, :, None]  # noisy -> clean: strictly earlier blocks
    cc = blk[:, None, :] <= blk[:, :, None]  # clean -> clean: block-causal
    cn = torch.zeros(nc.shape[0], nc.shape[2], nc.shape[1], dtype=torch.bool, device=nc.device)  # clean -> noisy: never
    allowed = torch.cat([torch.cat([nn_, nc], -1), torch.cat([cn, cc], -1)], 1)  # [B, N+L, N+L]
    keys = torch.cat([valid[:, start:], valid], -1)[:, None, :]  # [B, 1, N+L]
    allowed = allowed & keys
    empty = ~allowed.any(-1, keepdim=True)  # padding queries: any valid key, output ignored
    return (allowed | (empty & keys))[:, None]


def adapt(model, block_size: int):
    """An AR model -> the same weights as a Fast-dLLM v2 block-diffusion model (in place)."""
    check(block_size > 1, f"block_size must be an integer > 1, got {block_size}")
    tok = model.tokenizer
    if tok.mask_token is None and tok.convert_ids_to_tokens(model.mask_token_id) not in MASK_NAMES:
        # the AR loader's placeholder id is a real token of the parent: add a dedicated one
        tok.add_special_tokens({"mask_token": MASK_TOKEN})
        grow_vocab(model, len(tok))
        model.mask_token_id = tok.mask_token_id
    model.core.cfg.block_size = block_size
    model.family = "fast_dllm_v2"
    return model


def grow_vocab(model, n: int) -> None:
    """New token rows start at the mean embedding / output row (a neutral start for the mask)."""
    core = model.core
    old = core.embed_tokens.weight.data
    if n <= old.shape[0]:
        return
    emb = torch.nn.Embedding(n, old.shape[1]).to(old)
    emb.weight.data[:old.shape[0]] = old
    emb.weight.data[old.shape[0]:] = old.mean(0)
    core.embed_tokens = emb
    head = Linear(old.shape[1], n, bias=False).to(old)
    head.weight.data[:old.shape[0]] = core.lm_head.weight.data
    head.weight.data[old.shape[0]:] = core.lm_head.weight.data.mean(0)
    core.lm_head = head
    if core.cfg.tie_embeddings:
        core.lm_head.weight = core.embed_tokens.weight
    core.cfg.vocab_size = n


def is_cut(row: dict, eos: int) -> bool:
    """Whether a teacher's answer ran into its gen_length (recipe=trajectories' rows: ``response_ids`` is
    the whole answer canvas, end-of-text padded where the teacher stopped): no end-of-text in it."""
    ids = row.get("response_ids")
    return bool(ids) and eos not in ids


def encode_dataset(rows, tokenizer, block_size: int, max_answer_length: int, max_prompt_length: int,
                   cut_answers: bool = False):
    """-> (list of (prompt ids, answer ids), number dropped). A finished answer: + end-of-text, padded so
    prompt + answer ends on a block boundary. ``cut_answers``: an answer the teacher was cut off in
    (:func:`is_cut`) is kept as its prefix up to the last block boundary within ``max_answer_length``
    tokens, with no end-of-text: the student learns the parent's first blocks, never to stop there.
    Without it such an answer is dropped when over-long, as any."""
    eos = tokenizer.eos_token_id

    def to_block_end(prompt, answer):
        end = -(-(len(prompt) + len(answer)) // block_size) * block_size
        return answer + [eos] * (end - len(prompt) - len(answer))

    cut = [r for r in rows if cut_answers and is_cut(r, eos)]
    whole = [r for r in rows if not (cut_answers and is_cut(r, eos))]
    out, dropped = [], 0
    for row in cut:
        prompt, resp = common.encode_record(row, tokenizer)
        end = (len(prompt) + min(len(resp), max_answer_length)) // block_size * block_size  # the last boundary
        if not prompt or len(prompt) > max_prompt_length or end <= len(prompt):
            dropped += 1
            continue
        out.append((prompt, resp[:end - len(prompt)]))
    if whole:
        more, d = common.encode_examples(whole, tokenizer, max_answer_length, max_prompt_length, to_block_end)
        out, dropped = more + out, dropped + d
    check(len(out) > 0, f"no example fits answer_length={max_answer_length} and max_prompt_length={max_prompt_length}")
    return out, dropped


def block_masks(positions, answer, block_size: int, gen: torch.Generator, eps: float = 1e-3):
    """-> (mask, complement) bool [B, L]: per-(row, block) ratio p = (1 − ε) t + ε, answer tokens only."""
    b, length = positions.shape
    n_blocks = int(positions.max()) // block_size + 1
    t = torch.rand(b, n_blocks, generator=gen).to(positions.device)
    p = ((1 - eps) * t + eps).gather(1, positions // block_size)  # [B, L]: each column's block ratio
    u = torch.rand((b, length), generator=gen).to(positions.device)
    mask = answer & (u < p)
    return mask, answer & ~mask


def bd_loss(model, ids, positions, valid, answer, gen: torch.Generator, mask_id: int, block_size: int,
            lam: float = 0.0, temperature: float = 0.5, cut_answers: bool = False):
    """Both views in one forward of 2B rows; token-mean CE over the masked tokens (plus, with
    ``lam`` > 0, λ × the certainty-forcing entropy over the masked tokens already predicted right).
    -> (loss, parts: the CE and entropy terms as floats; empty when ``lam`` is 0).

    Two savings that leave the loss unchanged (tests/test_block_diffusion.py checks it and its
    gradients against the plain 2L-column, every-logit form):
    - the noisy half starts at the block holding the column that predicts the first answer token
      (``collate`` aligns blocks to columns, so every earlier block is prompt or padding in every row):
      nothing reads those noisy columns, and a noisy prompt block equals its clean copy;
    - the vocabulary projection runs only on the columns whose next token is masked (about a quarter
      of the noisy half; with SmolLM2's 49k vocabulary it is the largest single matmul of the step)."""
    mask, comp = block_masks(positions, answer, block_size, gen)
    masked = torch.cat([mask, comp])  # [2B, L]
    clean = torch.cat([ids, ids])
    pos = torch.cat([positions, positions])
    length = ids.shape[1]
    first = int(torch.where(answer.any(1), answer.float().argmax(1), length).min())  # first answer column of any row
    start = max(first - 1, 0) // block_size * block_size  # the block of the column that predicts it
    noisy = clean[:, start:].masked_fill(masked[:, start:], mask_id)  # [2B, N]
    inputs = torch.cat([noisy, clean], 1)  # [2B, N + L]
    attn = bd_attention_mask(pos, torch.cat([valid, valid]), block_size, start)
    target = masked[:, 1:]  # [2B, L-1]: column i predicts the token at i+1 (AR shift)
    count = target.sum(1)  # [2B]
    width = max(int(count.max()), 1)
    order = torch.sort((~target).to(torch.int8), dim=1, stable=True).indices[:, :width]  # target columns first
    keep = torch.arange(width, device=ids.device)[None] < count[:, None]  # [2B, W]
    core = model.module.core if hasattr(model, "module") else model.core
    logits = core(inputs, torch.cat([pos[:, start:], pos], 1), attn, out=(order - start).clamp_min(0))  # [2B, W, V]
    goal = clean[:, 1:].gather(1, order)  # [2B, W]: the token each kept column predicts
    if not lam:
        return F.cross_entropy(logits[keep], goal[keep]), {}
    ce, ent = certainty_loss(logits, goal, keep, temperature)
    return ce + lam * ent, {"ce": float(ce.detach()), "entropy": float(ent.detach())}


@dataclass
class BlockDiffusion:
    """The recipe :func:`fit` drives (training/fit.py's ``Recipe``: build, setup, loss)."""

    data: str | list
    rows: list
    init: str
    block_size: int
    answer_length: int
    max_prompt_length: int
    output_dir: str
    lam: float = 0.0
    temperature: float = 0.5
    cut_answers: bool = False
    name: ClassVar[str] = "block_diffusion"

    @property
    def meta(self) -> dict:
        meta = {"data": self.data, "init": str(self.init), "block_size": self.block_size,
                "answer_length": self.answer_length, "max_prompt_length": self.max_prompt_length}
        if self.lam:  # only then: a run without the term keeps the settings it was started with
            meta.update(lam=self.lam, temperature=self.temperature)
        if self.cut_answers:  # likewise
            meta["cut_answers"] = True
        return meta

    def build(self):
        model = load(self.init)
        check(model.family in AR_FAMILIES, f"init must be an autoregressive checkpoint ({'/'.join(AR_FAMILIES)}) "
                                           f"to adapt, {self.init} is {model.family}")
        return adapt(model, self.block_size)

    def setup(self, model) -> int:
        check(model.family == "fast_dllm_v2" and model.block_size == self.block_size,
              f"the checkpoint in {self.output_dir} was trained with block_size {model.block_size}, "
              f"not {self.block_size}")
        self.examples, dropped = encode_dataset(self.rows, model.tokenizer, self.block_size, self.answer_length,
                                                self.max_prompt_length, self.cut_answers)
        if dropped:
            print(f"dropped {dropped} examples longer than answer_length/max_prompt_length")
        self.pad, self.mask_id = model.pad_token_id, model.mask_token_id
        return len(self.examples)

    def loss(self, model, indices, gen, device, step):
        batch = common.collate([self.examples[i] for i in indices], self.pad, device, align=self.block_size)
        return bd_loss(model, *batch, gen, self.mask_id, self.block_size, self.lam, self.temperature)


# the reference's 7B settings (small models take a larger lr: see conf/recipe/tiny_bd.yaml); batch_size
# counts samples, the complementary view doubles the rows; constant lr after warm-up, as the reference
TRAIN = TrainConfig(batch_size=32, lr=2e-5, warmup_steps=30, min_lr_ratio=1.0, weight_decay=0.0)


def run(data: str | list, output_dir: str, init: str, block_size: int = 32, answer_length: int = 32,
        max_prompt_length: int = 128, train: TrainConfig | dict | None = None, where: dict | None = None,
        lam: float = 0.0, temperature: float = 0.5, cut_answers: bool = False):
    """Adapt ``init`` (an AR checkpoint); ``train`` holds the settings that differ from ``TRAIN``.
    ``where`` keeps only the data rows whose columns equal its values (e.g. ``{split: train}``);
    ``lam`` > 0 adds the certainty-forcing entropy term at ``temperature``; ``cut_answers`` keeps the
    teacher's cut-off answers as block-aligned prefixes (:func:`encode_dataset`).
    Resumes from ``output_dir/checkpoint`` when it exists. Returns the output folder."""
    train = TRAIN.updated(train)
    check(isinstance(block_size, int) and block_size > 1, f"block_size must be an integer > 1, got {block_size}")
    check(isinstance(lam, (int, float)) and lam >= 0, f"lam (the entropy weight λ) must be a number >= 0, got {lam}")
    check(isinstance(temperature, (int, float)) and temperature > 0, f"temperature must be > 0, got {temperature}")
    check(isinstance(cut_answers, bool), f"cut_answers must be true or false, got {cut_answers!r}")
    data = data if isinstance(data, str) else [str(d) for d in data]  # a list of files: their rows in order
    rows = common.select_rows(common.load_records(data), where)
    recipe = BlockDiffusion(data, rows, init, block_size, answer_length, max_prompt_length, output_dir,
                            float(lam), float(temperature), cut_answers)
    return fit(recipe, train, output_dir)
