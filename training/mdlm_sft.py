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

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from dllm.errors import check
from dllm.loading import load, new_model
from dllm.models.core import CoreConfig
from dllm.training import common
from dllm.training.fit import TrainConfig, fit


def build_model(init: str | None, arch: dict | None, tokenizer_from: str | None, data_rows, vocab_size: int, seed: int,
                alphabet: str = "data", merges: int = 0, new_rows: str = "pieces", expand_layers: int = 0):
    """Start from a checkpoint (``init``; ``alphabet`` and ``merges`` grow its tokenizer, see
    :func:`grow_tokenizer`; ``expand_layers`` adds zero-output blocks, training/expand.py) or a new
    LLaDA-format model of shape ``arch`` with a BPE tokenizer trained on the data (or copied from
    ``tokenizer_from``)."""
    if init:
        from dllm.training.expand import expand

        return expand(grow_tokenizer(load(init), alphabet, merges, data_rows, new_rows, seed), expand_layers, seed)
    check(arch is not None, "give init=<model> to fine-tune or arch={...} to train a new model")
    tokenizer = common.new_tokenizer(tokenizer_from, data_rows, vocab_size, alphabet)
    vocab = tokenizer.get_vocab()
    shape = CoreConfig(vocab_size=len(tokenizer), attention="bidirectional", **arch)
    return new_model(shape, tokenizer, "llada", vocab[tokenizer.mask_token], [tokenizer.eos_token_id],
                     tokenizer.eos_token_id, seed=seed)


def grow_tokenizer(model, alphabet: str, merges: int, rows, new_rows: str = "pieces", seed: int = 0):
    """``model`` with a larger tokenizer (training/tokenizer.py): the characters of ``alphabet`` it
    lacks, then up to ``merges`` merges learned from the texts of ``rows`` that it could not write
    before (a row it could write whole keeps its tokens: the model's own tasks read exactly as they
    did; a newline, where it could not write one, becomes a pre-token of its own).
    ``new_rows="pieces"``: each new token's embedding and output rows start as the mean of its
    characters' rows (a new character: the mean of all rows). ``"random"``: embedding rows are drawn at
    the old rows' per-dimension scale (distinct from the start: mean-of-pieces rows of 643 new tokens
    kept a mean pairwise cosine of 0.97 through 1,200 steps, too alike to copy a name) and output rows at
    a tenth of it, so a new token's logit starts near zero and greedy decoding of old text is unchanged.
    Existing rows and ids stay as they were."""
    from dllm.training.tokenizer import extend_alphabet, learn_merges, split_lines

    old = model.tokenizer
    tokenizer, added = extend_alphabet(old, alphabet)
    if "\n" not in old.get_vocab() and "\n" in tokenizer.get_vocab():  # it could not write a newline: no text changes
        tokenizer = split_lines(tokenizer)
    chars = tokenizer  # the old merges over the grown alphabet: what a merged token's pieces are
    if merges:
        # A row it could write whole (its own tasks) keeps its tokens; a row with a character it lacks is
        # new text, all of it: its merges reach the parts it could spell (a list of new names in an
        # answer), so a name reads the same in the prompt and in the answer.
        pairs = [(row.get("prompt", ""), row.get("response", "")) for row in rows]
        texts = sorted({t for p in pairs for t in p})  # a fixed order
        ids = old(texts, add_special_tokens=False)["input_ids"]
        writes = dict(zip(texts, (old.unk_token_id not in i for i in ids)))
        keep = {t for p in pairs if all(writes[t] for t in p) for t in p}
        new = {t for p in pairs if not all(writes[t] for t in p) for t in p} - keep
        tokenizer, learned = learn_merges(tokenizer, sorted(new), sorted(keep), merges)
        added += learned
    if not added:
        return model
    core, n = model.core, len(tokenizer)
    n_old = core.embed_tokens.weight.shape[0]
    parts = []  # per new token, the old ids it joins (none for a new character: the mean of all rows)
    for i in range(n_old, n):
        piece = tokenizer.convert_ids_to_tokens(i)
        ids = chars(piece.replace("\u2581", " "), add_special_tokens=False)["input_ids"]
        parts.append([] if len(piece) == 1 else [p for p in ids if p < n_old])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("embed_tokens",) if core.cfg.tie_embeddings else ("embed_tokens", "lm_head"):
            weight = getattr(core, name).weight
            if new_rows == "random":
                scale = weight.std(0) * (1.0 if name == "embed_tokens" else 0.1)
                grown = [torch.randn(weight.shape[1], generator=gen) * scale for _ in parts]
            else:
                grown = [weight[p].mean(0) if p else weight.mean(0) for p in parts]
            getattr(core, name).weight = torch.nn.Parameter(torch.cat([weight, torch.stack(grown)]))
    if core.cfg.tie_embeddings:
        core.lm_head.weight = core.embed_tokens.weight
    core.embed_tokens.num_embeddings = core.lm_head.out_features = core.cfg.vocab_size = n
    model.tokenizer = tokenizer
    print(f"tokenizer grown by {n - n_old} tokens ({alphabet} alphabet, {merges} merges at most): {n} tokens")
    return model


def encode_dataset(rows, tokenizer, answer_length: int, max_prompt_length: int, after_prompt: bool = False):
    """-> list of (prompt ids, answer ids of exactly answer_length); over-long examples are dropped
    and counted (a silent truncation would teach the model to stop mid-answer)."""
    eos = tokenizer.eos_token_id
    return common.encode_examples(rows, tokenizer, answer_length, max_prompt_length,
                                  lambda prompt, answer: answer + [eos] * (answer_length - len(answer)), after_prompt)


def mdlm_loss(model, ids, positions, valid, answer, gen: torch.Generator, mask_id: int, eps: float = 1e-3,
              teacher=None, taught=None):
    """LLaDA SFT loss for one batch (see the module docstring). Returns a scalar, or with ``teacher``
    (a frozen model of the same shape whose vocabulary is the first V_t ids) ``(loss, kl)``: kl is the
    mean over the ``taught`` rows' masked positions of KL(teacher || model) on the same noisy canvas
    (:func:`distill_kl`)."""
    b = ids.shape[0]
    t = torch.rand(b, generator=gen)
    p = ((1 - eps) * t + eps).to(ids.device)[:, None]  # [B, 1]
    u = torch.rand(ids.shape, generator=gen).to(ids.device)
    masked = answer & (u < p)
    noisy = ids.masked_fill(masked, mask_id)
    logits = model(noisy, positions, valid)  # [B, L, V]
    ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")  # [B, L]
    per_example = (ce * masked / p).sum(-1) / answer.sum(-1)
    if teacher is None:
        return per_example.mean()
    return per_example.mean(), distill_kl(teacher, logits, noisy, positions, valid, masked & taught[:, None])


def distill_kl(teacher, logits, noisy, positions, valid, where):
    """Mean KL(teacher || model) over the positions ``where`` [B, L] (learning without forgetting, Li &
    Hoiem 2016): the model is held to the teacher's whole distribution, not one sampled label, on the
    canvases the teacher can read. The teacher's vocabulary is the model's first V_t ids; the ids the
    model gained have teacher probability 0, so their mass counts fully against the model."""
    rows = where.any(-1)
    if not rows.any():
        return logits.sum() * 0.0
    with torch.no_grad():
        t_logp = F.log_softmax(teacher(noisy[rows], positions[rows], valid[rows]).float(), -1)  # [b, L, V_t]
    s_logp = F.log_softmax(logits[rows].float(), -1)[..., : t_logp.shape[-1]]  # [b, L, V_t]
    kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)  # [b, L]
    w = where[rows]
    return (kl * w).sum() / w.sum()


def canvas_length(n: int, drawn: int, lengths: list[int]) -> int:
    """The canvas an answer of ``n`` tokens is padded to when this step drew ``drawn``: the drawn
    length, or the smallest of ``lengths`` that holds the answer when it is longer."""
    return drawn if n <= drawn else min(x for x in lengths if x >= n)


def copy_string(prompt: list[int], ids: list[int], eos: int, gen: torch.Generator) -> tuple[list[int], list[int]]:
    """A synthetic row: ``copy:`` and 4-24 random token ids -> the same ids. Copying strings of every
    token teaches each id a copy map; tokens added to a trained model (a grown tokenizer) are
    otherwise never copied (issue 17: the printable retrain learned the ParallelBench format, not its names)."""
    n = int(torch.randint(4, 25, (1,), generator=gen))
    s = [ids[int(j)] for j in torch.randint(len(ids), (n,), generator=gen)]
    return prompt + s, s + [eos]


def gen_for(index: int, step: int, seed: int) -> torch.Generator:
    """The copy string that replaces example ``index`` at ``step``: a pure function of both (resumable)."""
    return common.step_generator(seed + 2, step, int(index))


@dataclass
class MdlmSft:
    """The recipe :func:`fit` drives (training/fit.py's ``Recipe``: build, setup, loss)."""

    data: str
    rows: list
    init: str | None
    arch: dict | None
    tokenizer_from: str | None
    vocab_size: int
    answer_length: int
    answer_lengths: list[int]
    max_prompt_length: int
    seed: int
    alphabet: str = "data"
    merges: int = 0
    copy_strings: float = 0.0
    new_rows: str = "pieces"
    expand_layers: int = 0
    distill: float = 0.0
    expanded_from: str | None = None
    answer_tokens: str = "alone"
    old_rows: str = "frozen"
    name: ClassVar[str] = "mdlm_sft"
    # what a checkpoint from before a setting ran with (copy strings were once padded to the drawn canvas)
    meta_defaults: ClassVar[dict] = {"copy_strings": 0.0, "copy_canvas": "drawn", "new_rows": "pieces",
                                     "expand_layers": 0, "distill": 0.0, "expanded_from": None,
                                     "answer_tokens": "alone", "old_rows": "frozen"}

    @property
    def meta(self) -> dict:
        # recorded in every checkpoint; a resume with other values is refused (fit.check_same_run)
        return {"data": self.data, "init": self.init, "arch": self.arch, "answer_length": self.answer_length,
                "answer_lengths": self.answer_lengths, "max_prompt_length": self.max_prompt_length,
                "alphabet": self.alphabet, "merges": self.merges, "copy_strings": self.copy_strings,
                **({"copy_canvas": "shortest"} if self.copy_strings else {}),  # only a run with copies has one
                **({"new_rows": self.new_rows} if self.new_rows != "pieces" else {}),
                **({"expand_layers": self.expand_layers} if self.expand_layers else {}),
                **({"distill": self.distill} if self.distill else {}),
                **({"expanded_from": self.expanded_from} if self.expanded_from else {}),
                **({"answer_tokens": self.answer_tokens} if self.answer_tokens != "alone" else {}),
                **({"old_rows": self.old_rows} if self.old_rows != "frozen" else {})}

    def build(self):
        # an init already expanded (expanded_from: an earlier stage's shipped model) gains no blocks
        self.fresh = True  # built, not resumed: setup may start rows (old_rows=unseen)
        return build_model(self.init, self.arch, self.tokenizer_from, self.rows, self.vocab_size, self.seed,
                           self.alphabet, self.merges, self.new_rows, 0 if self.expanded_from else self.expand_layers)

    def setup(self, model) -> int:
        self.frozen = self.teacher = None
        # what is old (frozen, and the distill teacher): init as it was, or the model init was expanded from
        old = load(self.expanded_from or self.init) if self.expand_layers or self.distill else None
        self.examples, dropped = encode_dataset(self.rows, model.tokenizer, self.answer_length, self.max_prompt_length,
                                                self.answer_tokens == "after_prompt")
        if dropped:
            print(f"dropped {dropped} examples longer than answer_length/max_prompt_length")
        tok = model.tokenizer
        if self.expand_layers:  # fresh or resumed: train the new blocks and rows only (training/expand.py)
            from dllm.training.expand import FreezeOld

            # what is old: its blocks and its vocabulary's rows; old_rows=unseen frees the rows of the old
            # tokens that no row the old model can read uses (its own tasks: what it was trained on)
            n_old = old.core.embed_tokens.weight.shape[0]
            used = set(tok.all_special_ids) | {model.mask_token_id}
            for q, a in self.examples:
                if max(q + a) < n_old:
                    used.update(q + a)
            free = [i for i in range(n_old) if i not in used] if self.old_rows == "unseen" else []
            if free and getattr(self, "fresh", False):  # a resume keeps the trained rows
                from dllm.training.expand import copy_twin_rows, marked_twins

                twins = marked_twins(tok, free, used)
                copy_twin_rows(model.core, twins)
                print(f"{len(twins)} unused old tokens read as their marked twins (e.g. 'Tina' <- '▁\"Tina')")
            self.frozen = FreezeOld(model, old.core.cfg.num_layers, self.expand_layers, n_old, free)
        if self.distill:  # init, frozen: the model is held to it on the rows it can read (distill_kl)
            self.teacher = old.eval().requires_grad_(False)
            self.n_teacher = old.core.embed_tokens.weight.shape[0]
        self.eos, self.pad, self.mask_id = tok.eos_token_id, tok.pad_token_id or tok.eos_token_id, model.mask_token_id
        special = set(tok.all_special_ids) | {self.mask_id}
        self.copy_ids = [i for i in range(len(tok)) if i not in special]
        self.copy_prompt = tok("copy:", add_special_tokens=False)["input_ids"]
        return len(self.examples)

    def loss(self, model, indices, gen, device, step):
        # answers are end-of-text padded to this step's length (a pure function of the step, so a
        # resumed run pads exactly as the uninterrupted one): mixing lengths teaches the model the
        # canvas sizes it meets at generation time. An answer longer than the drawn length takes the
        # smallest listed length that holds it (short tasks keep their short canvases beside long answers).
        draw = torch.randint(len(self.answer_lengths), (1,), generator=common.step_generator(self.seed + 1, step))
        pad_to = self.answer_lengths[int(draw)]
        # copy strings take the shortest canvas that holds them: they teach a token map, not canvas
        # sizes, and padded to a drawn 512 their 4-24 tokens were ~3 % of their row's loss (the first
        # stage-2 run, runs/dllm-tiny-printable-v3, formed no copy map in 1,173 steps)
        n_copy = round(len(indices) * self.copy_strings)
        pairs = [(*self.examples[i], pad_to) for i in indices[n_copy:]]
        pairs += [(*copy_string(self.copy_prompt, self.copy_ids, self.eos, gen_for(i, step, self.seed)),
                   min(self.answer_lengths)) for i in indices[:n_copy]]
        batch = [(q, a + [self.eos] * (canvas_length(len(a), n, self.answer_lengths) - len(a))) for q, a, n in pairs]
        inputs = common.collate(batch, self.pad, device)
        if self.teacher is None:
            return mdlm_loss(model, *inputs, gen, self.mask_id), {}
        # the teacher reads the rows written in its own vocabulary (init's own tasks); the copy strings,
        # the last n_copy rows, are not its task
        n_data = len(pairs) - n_copy
        taught = torch.tensor([i < n_data and max(q + a) < self.n_teacher for i, (q, a, _) in enumerate(pairs)],
                              device=device)
        self.teacher.to(device)
        ce, kl = mdlm_loss(model, *inputs, gen, self.mask_id, teacher=self.teacher, taught=taught)
        return ce + self.distill * kl, {"kl": round(float(kl.detach()), 5)}

    def after_step(self, model) -> None:
        if self.frozen is not None:
            self.frozen.restore()


TRAIN = TrainConfig()  # the recipe's training defaults: TrainConfig's own


def run(data: str, output_dir: str, init: str | None = None, arch: dict | None = None,
        tokenizer_from: str | None = None, vocab_size: int = 1024, answer_length: int = 32,
        answer_lengths: list | None = None,
        max_prompt_length: int = 128, train: TrainConfig | dict | None = None, alphabet: str = "data",
        merges: int = 0, copy_strings: float = 0.0, new_rows: str = "pieces", expand_layers: int = 0,
        distill: float = 0.0, expanded_from: str | None = None, answer_tokens: str = "alone",
        old_rows: str = "frozen"):
    """Train; ``train`` holds the settings that differ from ``TRAIN``. Resumes from
    ``output_dir/checkpoint`` when it exists. Returns the output folder. ``expanded_from``: ``init`` is
    an earlier stage of an expansion run (``expand_layers`` blocks already added to this model): the next
    stage adds none and keeps the same blocks and rows frozen, held (distill) to this model.
    ``answer_tokens`` "after_prompt": a response is tokenized as it reads behind its prompt
    (common.encode_record); ``old_rows`` "unseen": an expansion also trains the rows of the old tokens no
    row the old model reads uses (expand.FreezeOld)."""
    train = TRAIN.updated(train)
    check(answer_length > 0, f"answer_length must be a positive integer, got {answer_length}")
    lengths = [int(n) for n in (answer_lengths or [answer_length])]
    check(all(n > 0 for n in lengths) and max(lengths) >= answer_length,
          f"answer_lengths must be positive with one >= answer_length ({answer_length}), got {lengths}")
    from dllm.training.tokenizer import ALPHABETS

    check(alphabet in ALPHABETS, f"alphabet must be one of {sorted(ALPHABETS)}, got {alphabet!r}")
    check(isinstance(merges, int) and merges >= 0 and (not merges or init),
          f"merges must be a non-negative integer, given with init (it grows init's tokenizer), got {merges!r}")
    check(isinstance(copy_strings, (int, float)) and 0 <= copy_strings < 1,
          f"copy_strings must be a fraction of each batch in [0, 1), got {copy_strings!r}")
    check(new_rows in ("pieces", "random"), f"new_rows must be 'pieces' or 'random', got {new_rows!r}")
    check(isinstance(expand_layers, int) and expand_layers >= 0 and (not expand_layers or init),
          f"expand_layers must be a non-negative integer, given with init (it grows init), got {expand_layers!r}")
    check(isinstance(distill, (int, float)) and distill >= 0 and (not distill or init),
          f"distill must be a non-negative weight, given with init (the teacher), got {distill!r}")
    check(expanded_from is None or (init and expand_layers),
          f"expanded_from names the model init was expanded from: give it with init and expand_layers, "
          f"got expanded_from={expanded_from!r}")
    check(answer_tokens in ("alone", "after_prompt"),
          f"answer_tokens must be 'alone' or 'after_prompt', got {answer_tokens!r}")
    check(old_rows in ("frozen", "unseen") and (old_rows == "frozen" or expand_layers),
          f"old_rows must be 'frozen' or 'unseen' (with expand_layers: what an expansion trains), got {old_rows!r}")
    rows = list(common.load_records(data))
    recipe = MdlmSft(data, rows, init, arch, tokenizer_from, vocab_size, answer_length, lengths, max_prompt_length,
                     train.seed, alphabet, merges, float(copy_strings), new_rows, expand_layers, float(distill),
                     expanded_from, answer_tokens, old_rows)
    return fit(recipe, train, output_dir)
