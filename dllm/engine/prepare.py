"""``prepare``: a request checked and laid out as a :class:`~dllm.engine.row.Row` (encode with
:func:`dllm.generate.encode_prompts` first). The CLI, the Python API and the server share these
checks, so a bad value gets the same one-line error everywhere."""

from __future__ import annotations

import warnings

import torch

from dllm.cache import CachePolicy, make_cache
from dllm.engine.recorder import SequenceStats
from dllm.engine.row import Row, Settings, layout, row_seed
from dllm.errors import check
from dllm.samplers.base import Sampler


def decode_window(model, block_length: int | None) -> int:
    """The decode window a request gets: the model's own block for block diffusion, LLaDA's 32
    otherwise (``block_length=None``); an autoregressive model (blocks of one token) has a real
    logit only at the leftmost MASK, so it always decodes one-token windows."""
    if getattr(model, "autoregressive", False):  # models outside dllm's wrappers may not say
        return 1
    if block_length is None:
        return model.block_size if model.attention_kind == "block_causal" else 32
    return block_length


def settings(model, sampler: Sampler, *, gen_length: int, block_length: int | None = None, steps: int | None = None,
             cfg_scale: float = 0.0, cache: str | CachePolicy = "none", stop_at_eos: bool = True,
             multi_block: float = 1.0, stacklevel: int = 3) -> Settings:
    """Check one request's decode settings against the model."""
    check(isinstance(sampler, Sampler), f"sampler must be a dllm Sampler, got {type(sampler).__name__}")
    for name, v in (("gen_length", gen_length), ("block_length", block_length), ("steps", steps)):
        check(v is None or (isinstance(v, int) and not isinstance(v, bool)), f"{name} must be an integer, got {v!r}")
    block_length = decode_window(model, block_length)
    if getattr(model, "autoregressive", False):
        steps = None  # one-token windows: one token per forward, whatever was asked
    check(gen_length > 0, f"gen_length must be a positive integer, got {gen_length}")
    check(block_length > 0, f"block_length must be a positive integer, got {block_length}")
    check(gen_length % block_length == 0,
          f"gen_length ({gen_length}) must be a multiple of block_length ({block_length})")
    blocks = gen_length // block_length
    steps = gen_length if steps is None else steps
    check(steps > 0 and steps % blocks == 0,
          f"steps ({steps}) must be a positive multiple of the number of blocks gen_length/block_length = {blocks}")
    check(isinstance(cfg_scale, (int, float)) and cfg_scale >= 0, f"cfg_scale must be >= 0, got {cfg_scale}")
    check(isinstance(multi_block, (int, float)) and not isinstance(multi_block, bool) and 0 < multi_block <= 1,
          f"multi_block must be in (0, 1] (1 = block by block), got {multi_block!r}")
    check(multi_block == 1 or not getattr(sampler, "fixed_window", False),
          f"multi_block < 1 widens the window to two blocks, but {type(sampler).__name__} reads exactly "
          f"block_length positions: use multi_block=1")
    policy = make_cache(cache, model, block_length)
    if model.attention_kind == "block_causal" and model.block_size % block_length:
        warnings.warn(f"block_length {block_length} does not divide the block size the model was trained with "
                      f"({model.block_size}); accuracy usually drops", stacklevel=stacklevel)
    return Settings(sampler=sampler, gen_length=gen_length, block_length=block_length, per_block=steps // blocks,
                    cache=policy, cfg_scale=float(cfg_scale), stop_at_eos=stop_at_eos, multi_block=float(multi_block))


def check_prompts(model, prompt_ids: list[list[int]], gen_length: int) -> None:
    for i, p in enumerate(prompt_ids):
        check(len(p) > 0, f"prompt {i} is empty: every prompt needs at least one token")
        check(len(p) + gen_length <= model.max_length,
              f"prompt {i} ({len(p)} tokens) + gen_length ({gen_length}) exceeds the model's max_length "
              f"{model.max_length}")


def row(model, prompt: list[int], s: Settings, *, seed: int | None = None, reference: torch.Tensor | None = None,
        tag=None) -> Row:
    """A request laid out for the engine. ``seed``: the row's generator is seeded from (seed, prompt),
    so seeded sampling gives the same text alone or in any batch."""
    windows, width = layout(len(prompt), s.gen_length, s.block_length, model.attention_kind, model.block_size)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(row_seed(seed, prompt))
    if reference is not None:
        check(reference.numel() == s.gen_length,
              f"reference must hold gen_length={s.gen_length} ids, got {reference.numel()}")
    return Row(prompt=list(prompt), settings=s, windows=windows, width=width, generator=generator,
               reference=reference, tag=tag, stats=SequenceStats(prompt_tokens=len(prompt)))
