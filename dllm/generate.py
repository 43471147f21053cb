"""``dllm.generate``: a thin driver of the one decode loop (:mod:`dllm.engine`).

    rows = prepare(prompts)                 # encode, check, lay out
    while rows are live: engine.step()      # one forward over every live row, samplers, commit
    collect answers, stats and traces       # the recorder's snapshots

The server drives the same :class:`dllm.engine.Engine`, one request at a time.
"""

from __future__ import annotations

import inspect
import time

import torch

from dllm.cache import CachePolicy
from dllm.engine import Engine, check_prompts, decode_window, row, settings
from dllm.engine.recorder import GenerationResult, SequenceStats, Trace
from dllm.errors import DllmError, check
from dllm.samplers.base import Sampler


def encode_prompts(tokenizer, prompts: list[str], chat_template: bool | None = None) -> list[list[int]]:
    """Text -> ids; the tokenizer's chat template wraps each prompt as a user turn when it has one
    (``chat_template=None``) or when asked (True).

    Special-token text inside a prompt (``<|endoftext|>``, the mask token, ...) is tokenized as
    plain text (``split_special_tokens``), never as the special token itself: a prompt cannot end
    its own turn or plant a mask. A tokenizer whose plain-text pieces still hold a special id (a
    word-level vocabulary) refuses such a prompt. Prompts without such text are tokenized as before."""
    check(isinstance(prompts, (list, tuple)) and len(prompts) > 0, "prompts must be a non-empty list of strings")
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat_template is None else chat_template
    specials = {str(t) for t in getattr(tokenizer, "all_special_tokens", [])}
    specials |= {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values()
                 if getattr(t, "special", False)}
    out = []
    for i, p in enumerate(prompts):
        check(isinstance(p, str) and p.strip() != "", f"prompt {i} is empty: every prompt needs text")
        found = sorted(t for t in specials if t and t in p)
        if found:  # the prompt's own text, split: it must hold no special id
            text_ids = list(tokenizer(p, add_special_tokens=False, split_special_tokens=True)["input_ids"])
            planted = {tokenizer.convert_tokens_to_ids(t) for t in found} - {getattr(tokenizer, "unk_token_id", None)}
            check(not set(text_ids) & planted,
                  f"prompt {i} holds special-token text {found[0]!r} that this tokenizer cannot read as plain text")
        if use_chat and not found:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        elif use_chat:  # the template's own special tokens stay special, the user's text is split
            slot = "\ue000dllm-prompt\ue000"
            text = tokenizer.apply_chat_template([{"role": "user", "content": slot}], add_generation_prompt=True,
                                                 tokenize=False)
            head, _, tail = text.partition(slot)
            ids = (tokenizer(head, add_special_tokens=False)["input_ids"] + text_ids
                   + tokenizer(tail, add_special_tokens=False)["input_ids"])
        else:
            ids = tokenizer(p, split_special_tokens=bool(found))["input_ids"]
        out.append(list(ids))
    return out


def answer_text(tokenizer, ids: list[int], end_ids) -> tuple[str, int]:
    """(text of ``ids`` up to the first end-of-text token, number of tokens before it)."""
    ends = set(int(e) for e in end_ids)
    cut = next((i for i, t in enumerate(ids) if t in ends), len(ids))
    return tokenizer.decode(ids[:cut], skip_special_tokens=True), cut


def prompt_ids_of(model, prompts, chat_template: bool | None) -> list[list[int]]:
    if not isinstance(prompts, (list, tuple)):  # a bare string would decode one prompt per character
        raise TypeError(f"prompts must be a list of strings or of token-id lists, got {type(prompts).__name__}")
    if prompts and isinstance(prompts[0], str):
        return encode_prompts(model.tokenizer, list(prompts), chat_template)
    check(len(prompts) > 0, "prompts must be a non-empty list")
    return [list(map(int, p)) for p in prompts]


@torch.no_grad()
def generate(model, prompts: list[str] | list[list[int]], sampler: Sampler, *, gen_length: int = 64,
             block_length: int | None = None, steps: int | None = None, cfg_scale: float = 0.0,
             stop_at_eos: bool = True, chat_template: bool | None = None, seed: int | None = None, trace: bool = False,
             reference: list[torch.Tensor] | None = None, cache: str | CachePolicy = "none",
             multi_block: float = 1.0) -> GenerationResult:
    """Decode ``prompts`` (text, or token-id lists) with ``sampler``.

    steps: schedule budget over the whole generation (None = gen_length, one token per forward for
    schedule-driven samplers); it must divide over the gen_length/block_length blocks.
    block_length: the decode window (None = the model's block for block-diffusion models, else 32). Threshold
    samplers ignore it and loop until each block is clean.
    seed: seeds each row's own generator from (seed, its prompt): a row's text is the same alone or
    in any batch.
    reference: per prompt, a known output of the generation area ([gen_length] ids) handed to
    analysis samplers (the oracle); decoding itself never reads it.
    cache: a policy name (none, prefix, dual for bidirectional models; block, sub_block for
    block-causal ones) or a :class:`dllm.cache.CachePolicy`; it decides what each forward feeds.
    multi_block: in (0, 1]; once a row's active block is committed past this fraction, the next
    block joins the window (two blocks decoded in one forward). 1 = block by block.
    """
    check(isinstance(sampler, Sampler), f"sampler must be a dllm Sampler, got {type(sampler).__name__}")
    prompt_ids = prompt_ids_of(model, prompts, chat_template)
    s = settings(model, sampler, gen_length=gen_length, block_length=block_length, steps=steps, cfg_scale=cfg_scale,
                 cache=cache, stop_at_eos=stop_at_eos, multi_block=multi_block)
    check_prompts(model, prompt_ids, gen_length)
    if reference is not None:
        check(len(reference) == len(prompt_ids),
              f"reference must have one entry per prompt ({len(prompt_ids)}), got {len(reference)}")
    rows = [row(model, p, s, seed=seed, reference=None if reference is None else reference[i])
            for i, p in enumerate(prompt_ids)]
    engine = Engine(model, trace=trace)
    longest = max(r.end for r in rows)
    engine.reserve(len(rows), max(r.width for r in rows),
                   len(rows) * (2 if cfg_scale else 1) if s.cache.cached else 0, longest)
    start = time.perf_counter()
    for r in rows:
        engine.admit(r)
    while engine.live:
        engine.step()
    return collect(model, rows, time.perf_counter() - start, trace, s, engine.forward.nbytes)


# The keys of a config's ``decode:`` node (and of a bench entry's overrides): generate()'s keyword
# arguments, less the two that belong to one call, not to a setting: ``trace`` (what to record, an
# output choice; ``dllm generate trace=`` sits beside ``decode``) and ``reference`` (per-prompt data).
DECODE_KEYS = tuple(p.name for p in inspect.signature(generate).parameters.values()
                    if p.kind is p.KEYWORD_ONLY and p.name not in ("trace", "reference"))


def collect(model, rows, wall: float, trace: bool, s, cache_bytes: int) -> GenerationResult:
    ids, texts, stats, traces = [], [], [], []
    for r in rows:
        answer, tr = r.result
        text, cut = answer_text(model.tokenizer, answer.tolist(), model.eos_token_ids)
        r.stats.gen_tokens, r.stats.wall_time = cut, wall
        ids.append(answer)
        texts.append(text)
        stats.append(r.stats)
        if trace:
            traces.append(tr)
    return GenerationResult(ids=ids, text=texts, stats=stats, trace=traces, cache=s.cache.name, cache_bytes=cache_bytes)


__all__ = ["generate", "DECODE_KEYS", "encode_prompts", "answer_text", "decode_window", "GenerationResult",
           "SequenceStats", "Trace", "DllmError"]
