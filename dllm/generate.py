"""The decode loop, written once (design.md §2).

    for each block, left to right:
        while a live row has MASK in the block:
            logits = forward(live rows)              # window logits only
            decision = sampler.step(state)           # which masked positions, which tokens
            commit; record stats and trace; retire rows whose text is complete

Caches and samplers are objects handed in; nothing here knows which sampler runs.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field

import torch

from dllm.cache import CachePolicy, make_cache
from dllm.canvas import Canvas, build_canvas
from dllm.errors import DllmError, check
from dllm.samplers.base import Sampler, StepState


@dataclass
class SequenceStats:
    """Per-sequence figures. Forwards count a CFG pair as one (the papers' NFE); forward_tokens
    counts every token position fed to the model (CFG doubles it)."""

    nfe: int = 0
    forward_tokens: int = 0
    committed: int = 0  # positions decoded by the model (not filled after the end token)
    gen_tokens: int = 0  # real tokens: before the first end-of-text token
    prompt_tokens: int = 0
    wall_time: float = 0.0  # seconds of the batch this row was decoded in
    stopped_early: bool = False  # retired once its text was complete
    truncations: int = 0  # end-of-text predictions that cut the canvas (Learn2PD EoTP)

    @property
    def tokens_per_forward(self) -> float:
        """Decoded answer-area tokens (end-of-text included) per forward."""
        return self.committed / max(self.nfe, 1)

    @property
    def real_tokens_per_forward(self) -> float:
        return self.gen_tokens / max(self.nfe, 1)

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens (prompt, padding and end-of-text excluded) per wall second."""
        return self.gen_tokens / max(self.wall_time, 1e-9)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(tokens_per_forward=self.tokens_per_forward, real_tokens_per_forward=self.real_tokens_per_forward,
                 tokens_per_second=self.tokens_per_second)
        return d


@dataclass
class Trace:
    """Which forward committed each generated position, and with what confidence.
    step [G] long: 1-based forward index (0 = filled after the end token); confidence [G] float64."""

    step: torch.Tensor
    confidence: torch.Tensor
    tokens: torch.Tensor
    block_length: int
    offset: int = 0  # window columns before the first generated position (block diffusion starts mid-block)


@dataclass
class GenerationResult:
    ids: list[torch.Tensor]  # generated area per row [G] (end-of-text and fill included)
    text: list[str]  # decoded up to the first end-of-text token
    stats: list[SequenceStats]
    trace: list[Trace] = field(default_factory=list)
    cache: str = "none"
    cache_bytes: int = 0  # preallocated K/V storage of the batch (0 without a cache)

    def summary(self) -> dict:
        n = len(self.stats)
        nfe = sum(s.nfe for s in self.stats)
        wall = max((s.wall_time for s in self.stats), default=0.0)
        gen = sum(s.gen_tokens for s in self.stats)
        return {
            "sequences": n,
            "nfe_per_seq": nfe / max(n, 1),
            "tokens_per_forward": sum(s.committed for s in self.stats) / max(nfe, 1),
            "real_tokens_per_forward": gen / max(nfe, 1),
            "gen_tokens": gen,
            "tokens_per_second": gen / max(wall, 1e-9),
            "wall_time": wall,
        }


def encode_prompts(tokenizer, prompts: list[str], chat_template: bool | None = None) -> list[list[int]]:
    """Text -> ids; the tokenizer's chat template wraps each prompt as a user turn when it has one
    (``chat_template=None``) or when asked (True)."""
    check(isinstance(prompts, (list, tuple)) and len(prompts) > 0, "prompts must be a non-empty list of strings")
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat_template is None else chat_template
    out = []
    for i, p in enumerate(prompts):
        check(isinstance(p, str) and p.strip() != "", f"prompt {i} is empty: every prompt needs text")
        if use_chat:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        else:
            ids = tokenizer(p)["input_ids"]
        out.append(list(ids))
    return out


def validate(model, prompt_ids: list[list[int]], gen_length: int, block_length: int, steps: int | None, cfg_scale: float) -> int:
    """Check the request; return the per-block step budget."""
    check(gen_length > 0, f"gen_length must be a positive integer, got {gen_length}")
    check(block_length > 0, f"block_length must be a positive integer, got {block_length}")
    check(gen_length % block_length == 0,
          f"gen_length ({gen_length}) must be a multiple of block_length ({block_length})")
    blocks = gen_length // block_length
    steps = gen_length if steps is None else steps
    check(steps > 0 and steps % blocks == 0,
          f"steps ({steps}) must be a positive multiple of the number of blocks gen_length/block_length = {blocks}")
    check(cfg_scale >= 0, f"cfg_scale must be >= 0, got {cfg_scale}")
    for i, p in enumerate(prompt_ids):
        check(len(p) > 0, f"prompt {i} is empty: every prompt needs at least one token")
        check(len(p) + gen_length <= model.max_length,
              f"prompt {i} ({len(p)} tokens) + gen_length ({gen_length}) exceeds the model's max_length {model.max_length}")
    return steps // blocks


def retire_finished(canvas: Canvas, rows: torch.Tensor, mask_id: int, end_ids: torch.Tensor) -> torch.Tensor:
    """Rows (of ``rows``) whose text is complete: an end token is committed and nothing before it
    is still MASK. Later positions cannot change the text, so they are filled with that end token
    and the row stops. Returns a bool [len(rows)]."""
    x, gen = canvas.x[rows], canvas.gen[rows]
    is_end = torch.isin(x, end_ids) & gen
    has_end = is_end.any(-1)
    first = torch.where(has_end, is_end.int().argmax(-1), x.shape[1])  # [n]
    col = torch.arange(x.shape[1], device=x.device)[None]
    before = (x == mask_id) & gen & (col < first[:, None])
    done = has_end & ~before.any(-1)
    end_tok = x.gather(1, first.clamp_max(x.shape[1] - 1)[:, None])  # [n, 1]
    fill = done[:, None] & gen & (col > first[:, None]) & (x == mask_id)
    canvas.x[rows] = torch.where(fill, end_tok, x)
    return done


def truncate(canvas: Canvas, rows: torch.Tensor, a: int, end_at: torch.Tensor, eos: torch.Tensor, stats: list) -> None:
    """End-of-text prediction: for each row with end_at ≥ 0, the canvas ends at window index end_at:
    every generation position after it becomes end-of-text (the reference truncates the canvas
    there) and is never decoded. Counted per row."""
    col = torch.arange(canvas.x.shape[1], device=canvas.x.device)[None]
    cut = (end_at >= 0)[:, None] & (col > (a + end_at)[:, None])
    x = canvas.x[rows]
    canvas.x[rows] = torch.where(cut & canvas.gen[rows], eos, x)
    for r, hit in zip(rows.tolist(), (end_at >= 0).tolist()):
        stats[r].truncations += int(hit)


def decode_window(model, block_length: int | None) -> int:
    """The decode window a request gets: the model's own block for block diffusion, LLaDA's 32
    otherwise (``block_length=None``); an autoregressive model (blocks of one token) has a real
    logit only at the leftmost MASK, so it always decodes one-token windows."""
    if getattr(model, "autoregressive", False):  # models outside dllm's wrappers may not say
        return 1
    if block_length is None:
        return model.block_size if model.attention_kind == "block_causal" else 32
    return block_length


def answer_text(tokenizer, ids: list[int], end_ids) -> tuple[str, int]:
    """(text of ``ids`` up to the first end-of-text token, number of tokens before it)."""
    ends = set(int(e) for e in end_ids)
    cut = next((i for i, t in enumerate(ids) if t in ends), len(ids))
    return tokenizer.decode(ids[:cut], skip_special_tokens=True), cut


@torch.no_grad()
def generate(model, prompts: list[str] | list[list[int]], sampler: Sampler, *, gen_length: int = 64,
             block_length: int | None = None, steps: int | None = None, cfg_scale: float = 0.0, stop_at_eos: bool = True,
             chat_template: bool | None = None, seed: int | None = None, trace: bool = False,
             reference: list[torch.Tensor] | None = None, cache: str | CachePolicy = "none",
             monitor=None) -> GenerationResult:
    """Decode ``prompts`` (text, or token-id lists) with ``sampler``.

    steps: schedule budget over the whole generation (None = gen_length, one token per forward for
    schedule-driven samplers); it must divide over the gen_length/block_length blocks.
    block_length: the decode window (None = the model's block for block-diffusion models, else 32). Threshold
    samplers ignore it and loop until each block is clean.
    reference: per prompt, a known output of the generation area ([gen_length] ids) handed to
    analysis samplers (the oracle); decoding itself never reads it.
    cache: a policy name (none, prefix, dual for bidirectional models; block, sub_block for
    block-causal ones) or a :class:`dllm.cache.CachePolicy`; it decides what each forward feeds.
    monitor: called after every step as ``monitor(canvas)``; it returns the indices of rows to
    retire now (a server's cancelled requests and stop strings). Never changes another row.
    """
    check(isinstance(sampler, Sampler), f"sampler must be a dllm Sampler, got {type(sampler).__name__}")
    if not isinstance(prompts, (list, tuple)):  # a bare string would decode one prompt per character
        raise TypeError(f"prompts must be a list of strings or of token-id lists, got {type(prompts).__name__}")
    if prompts and isinstance(prompts[0], str):
        prompt_ids = encode_prompts(model.tokenizer, list(prompts), chat_template)
    else:
        check(len(prompts) > 0, "prompts must be a non-empty list")
        prompt_ids = [list(map(int, p)) for p in prompts]
    block_length = decode_window(model, block_length)
    if getattr(model, "autoregressive", False):
        steps = None  # one-token windows: one token per forward, whatever was asked
    per_block = validate(model, prompt_ids, gen_length, block_length, steps, cfg_scale)
    policy = make_cache(cache, model, block_length)
    if model.attention_kind == "block_causal" and model.block_size % block_length:
        warnings.warn(f"block_length {block_length} does not divide the block size the model was trained with "
                      f"({model.block_size}); accuracy usually drops", stacklevel=2)
    device = model.device
    mask_id = model.mask_token_id
    end_ids = torch.tensor(model.eos_token_ids, device=device)
    banned = [mask_id] + ([model.pad_token_id] if model.pad_token_id not in model.eos_token_ids else [])
    canvas = build_canvas(prompt_ids, gen_length, block_length, model.attention_kind, mask_id, model.pad_token_id,
                          model.block_size if model.attention_kind == "block_causal" else None, device)
    policy.setup(model, canvas, cfg_scale)
    n, width = canvas.x.shape
    ref = None
    if reference is not None:
        check(len(reference) == n, f"reference must have one entry per prompt ({n}), got {len(reference)}")
        ref = torch.full((n, width), -1, dtype=torch.long, device=device)
        for i, r in enumerate(reference):
            check(r.numel() == gen_length, f"reference {i} must hold gen_length={gen_length} ids, got {r.numel()}")
            ref[i, canvas.gen[i]] = r.to(device)
    stats = [SequenceStats(prompt_tokens=len(p)) for p in prompt_ids]
    step_at = torch.zeros((n, width), dtype=torch.long, device=device)
    conf_at = torch.zeros((n, width), dtype=torch.float64, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    start = time.perf_counter()

    def count(rows: torch.Tensor, fed: torch.Tensor) -> None:
        """One forward for each of ``rows``; ``fed`` [len(rows)] tokens each fed to the model."""
        for r, f in zip(rows.tolist(), fed.tolist()):
            stats[r].nfe += 1
            stats[r].forward_tokens += f

    def window_logits(rows, a, b, windows=None):
        """([len(rows), W, V] logits, tokens fed per row); with ``windows`` [len(rows), W] the
        window is replaced first (rows may repeat). The cache policy decides what is fed."""
        logits, fed = policy.logits(rows, a, b, windows)
        logits[..., banned] = float("-inf")  # never propose MASK (or a pad that is not an end token)
        return logits, fed

    for a, b in canvas.blocks:
        block_masked = canvas.window_masked(a, b, mask_id).sum(-1)  # [n]
        pending = None  # (rows, logits) a sampler already computed for the current state
        j = 0
        while True:
            masked = canvas.window_masked(a, b, mask_id)
            live = (~finished & masked.any(-1)).nonzero().squeeze(-1)
            if live.numel() == 0:
                break
            if j > b - a:  # every step commits ≥ 1, so a block can never need more forwards
                raise RuntimeError(f"block [{a}, {b}) did not finish in {b - a} forwards")
            if pending is not None and bool(torch.isin(live, pending[0]).all()):
                logits = pending[1][torch.searchsorted(pending[0], live)]
            else:
                logits, fed = window_logits(live, a, b)
                count(live, fed)

            def verify(drafts: torch.Tensor, rows=live, a=a, b=b) -> torch.Tensor:
                """drafts [n, K, W] -> logits [n, K, W, V] in one batched forward (counted as one
                forward of K× the tokens)."""
                n_rows, k, w = drafts.shape
                out, fed = window_logits(rows.repeat_interleave(k), a, b, drafts.reshape(n_rows * k, w))
                count(rows, fed.view(n_rows, k).sum(1))
                return out.view(n_rows, k, w, -1)

            state = StepState(logits=logits, tokens=canvas.x[live, a:b], masked=masked[live], block_step=j,
                              steps_per_block=per_block, block_masked=block_masked[live],
                              end_token_ids=model.eos_token_ids, generator=generator,
                              reference=None if ref is None else ref[live, a:b], verify=verify)
            d = sampler.step(state)
            commit = d.commit & state.masked
            if not commit.any(-1).all():
                raise RuntimeError(f"{type(sampler).__name__} committed no token for a row that had masks")
            canvas.x[live, a:b] = torch.where(commit, d.tokens, state.tokens)
            forward_index = torch.tensor([stats[r].nfe for r in live.tolist()], device=device)[:, None]
            step_at[live, a:b] = torch.where(commit, forward_index, step_at[live, a:b])
            conf_at[live, a:b] = torch.where(commit, d.confidence.double(), conf_at[live, a:b])
            for r, c in zip(live.tolist(), commit.sum(-1).tolist()):
                stats[r].committed += c
            if d.end_at is not None:
                truncate(canvas, live, a, d.end_at, end_ids[0], stats)
            pending = None if d.next_logits is None else (live, d.next_logits)
            if stop_at_eos:
                done = retire_finished(canvas, live, mask_id, end_ids)
                finished[live] |= done
            if monitor is not None:
                for r in monitor(canvas):
                    finished[r] = True
            j += 1

    wall = time.perf_counter() - start
    ids, texts, traces = [], [], []
    for i in range(n):
        g = canvas.gen[i]
        row = canvas.x[i][g]
        text, cut = answer_text(model.tokenizer, row.tolist(), model.eos_token_ids)
        stats[i].gen_tokens = cut
        stats[i].wall_time = wall
        stats[i].stopped_early = bool(finished[i]) and bool((step_at[i][g] == 0).any())
        ids.append(row.cpu())
        texts.append(text)
        if trace:
            offset = (int(canvas.gen_start[i]) - canvas.blocks[0][0]) % block_length
            traces.append(Trace(step=step_at[i][g].cpu(), confidence=conf_at[i][g].cpu(), tokens=row.cpu(),
                                block_length=block_length, offset=offset))
    return GenerationResult(ids=ids, text=texts, stats=stats, trace=traces, cache=policy.name,
                            cache_bytes=policy.nbytes)


__all__ = ["generate", "GenerationResult", "SequenceStats", "Trace", "DllmError"]
