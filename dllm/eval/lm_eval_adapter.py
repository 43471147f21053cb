"""lm-evaluation-harness adapter: ``--model dllm`` runs any harness task through dllm's decode loop.

    python -m dllm.eval.lm_eval_adapter --model dllm --tasks gsm8k \\
        --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct,sampler=threshold,threshold=0.9,cache=dual,gen_length=256

The harness has no plugin entry points (0.4.x), so the model registers when this module is
imported; ``python -m dllm.eval.lm_eval_adapter <lm_eval args>`` imports it and hands the command
line to lm_eval's own CLI, and from Python ``import dllm.eval.lm_eval_adapter`` before
``lm_eval.simple_evaluate(model="dllm", ...)`` (or pass a ``DllmLM`` instance).

* ``generate_until`` decodes with any registered sampler and cache; stop strings cut the text
  (a diffusion canvas is filled as a whole, so stopping is a cut, never an early exit).
* ``loglikelihood`` is LLaDA's Monte Carlo bound: a masked diffusion model has no left-to-right
  factorisation, so log p(target | context) is estimated by masking l ~ U{1..L} of the L target
  tokens and weighting the masked tokens' negative log-probabilities by L / l (an unbiased estimate
  of the ELBO); ``mc_num`` draws are averaged. The draws' l are stratified over each forward batch
  (one uniform offset, evenly spaced), which keeps each draw uniform but lowers the variance.
  ``ll_canvas=N`` places the continuation at the start of an N-position answer area whose rest
  stays MASK and is never scored: a model fine-tuned on end-of-text-padded answers (LLaDA-Instruct,
  dllm-tiny) has never seen an answer area that ends right after a short answer, and predicts
  end-of-text there; ``ll_canvas=0`` (default) is LLaDA's estimate for base models. Block-causal
  and token-shifted models take the same forward (the wrapper's row i predicts token i; a
  block-causal model's attention just hides later blocks).
* ``loglikelihood_rolling`` (perplexity tasks) is not provided.
"""

from __future__ import annotations

import inspect
import json
import math
import time
import warnings
import zlib
from pathlib import Path

import lm_eval.models  # noqa: F401  the harness's own models first: get_model() loads them only into an empty registry
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from dllm.cache import make_cache
from dllm.engine import decode_window
from dllm.errors import DllmError, check, check_types
from dllm.generate import DECODE_KEYS, encode_prompts, generate
from dllm.loading import DTYPES
from dllm.samplers import SAMPLERS, build_sampler

# model_args the adapter itself reads (every other key must be a knob of the chosen sampler)
OPTIONS = {
    "pretrained": "dllm-tiny",  # built-in name, folder or hub id (dllm.load)
    "dtype": "float32",
    "device": None,  # None: cuda when available, else cpu (so is cuda asked for on a machine without it)
    "cache": "none",  # none | prefix | dual | block | sub_block
    "gen_length": 256,  # answer canvas when a request gives no max_gen_toks
    "block_length": None,  # decode window; None: the model's block (block diffusion), else 32
    "steps": None,  # steps over gen_length (None = gen_length); rescaled per request, see _settings
    "cfg_scale": 0.0,
    "batch_size": 1,
    "max_batch_size": None,  # passed by the harness for batch_size=auto; unused
    "chat_template": False,  # the harness templates contexts itself (--apply_chat_template)
    "mc_num": 128,  # Monte Carlo draws per loglikelihood request (LLaDA's default)
    "mc_batch_size": 32,  # draws per forward
    "ll_canvas": 0,  # loglikelihood answer area: 0 = the continuation alone; N = padded with MASK to N
    "greedy": "argmax",  # is_greedy: argmax (one forward, all target masked) | decode (the sampler)
    "seed": 1234,
    "stats_file": None,  # JSONL of per-request stats, appended
    "disable_tqdm": False,
}
# generate()'s other keywords (multi_block, stop_at_eos, ... and any added later) are model_args as given,
# with generate()'s defaults; the ones above it decides itself (length and steps per request, seed, window)
HANDLED = ("gen_length", "block_length", "steps", "cfg_scale", "seed", "cache", "chat_template")
PASSED = tuple(k for k in DECODE_KEYS if k not in HANDLED)
OPTIONS.update({k: inspect.signature(generate).parameters[k].default for k in PASSED})
GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k")


def parse_value(v):
    """Strings from a command line -> bool / None / int / float; anything else unchanged."""
    if not isinstance(v, str):
        return v
    low = v.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_options(opts: dict) -> None:
    """Every adapter option: one line naming it and what it takes (before anything is loaded)."""
    for k in ("gen_length", "batch_size", "mc_num", "mc_batch_size"):
        check(is_int(opts[k]) and opts[k] > 0, f"{k} must be a positive integer, got {opts[k]!r}")
    for k in ("block_length", "steps"):
        check(opts[k] is None or (is_int(opts[k]) and opts[k] > 0),
              f"{k} must be a positive integer or none, got {opts[k]!r}")
    check(is_int(opts["seed"]), f"seed must be an integer, got {opts['seed']!r}")
    check(is_int(opts["ll_canvas"]) and opts["ll_canvas"] >= 0,
          f"ll_canvas must be an integer >= 0, got {opts['ll_canvas']!r}")
    check(opts["greedy"] in ("argmax", "decode"), f"greedy must be 'argmax' or 'decode', got {opts['greedy']!r}")
    cfg = opts["cfg_scale"]
    check(isinstance(cfg, (int, float)) and not isinstance(cfg, bool) and math.isfinite(cfg) and cfg >= 0,
          f"cfg_scale must be a finite number >= 0, got {cfg!r}")
    for k in ("chat_template", "disable_tqdm"):
        check(isinstance(opts[k], bool), f"{k} must be true or false, got {opts[k]!r}")
    for k in ("pretrained", "cache"):
        check(isinstance(opts[k], str) and opts[k] != "", f"{k} must be a non-empty name, got {opts[k]!r}")
    check(opts["dtype"] in DTYPES, f"dtype must be one of {sorted(DTYPES)}, got {opts['dtype']!r}")
    check_types(generate, {k: opts[k] for k in PASSED})  # typed as generate() types them
    check(opts["max_batch_size"] is None or is_int(opts["max_batch_size"]),
          f"max_batch_size must be an integer or none, got {opts['max_batch_size']!r}")
    if opts["device"] is not None:
        try:
            torch.device(str(opts["device"]))
        except (RuntimeError, ValueError) as e:
            raise DllmError(f"device must be cpu, cuda or cuda:<n> (a torch device), got {opts['device']!r}") from e
    if opts["stats_file"] is not None:
        path = Path(str(opts["stats_file"]))
        check(isinstance(opts["stats_file"], str) and not path.is_dir() and
              not any(p.exists() and not p.is_dir() for p in path.parents),
              f"stats_file must be a file path whose folders are folders, got {opts['stats_file']!r}")


def sampler_knobs(name: str) -> list[str]:
    check(isinstance(name, str) and name in SAMPLERS, f"sampler must be one of {sorted(SAMPLERS)}, got {name!r}")
    return [p for p in inspect.signature(SAMPLERS[name].__init__).parameters if p not in ("self", "args", "kwargs")]


def cut_at_stop(text: str, until: list[str]) -> tuple[str, str | None]:
    """Text up to the earliest stop string (and which one matched)."""
    hits = [(text.find(s), s) for s in until if s and s in text]
    if not hits:
        return text, None
    at, stop = min(hits)
    return text[:at], stop


@register_model("dllm")
class DllmLM(LM):
    """A dllm model + sampler + cache as a harness ``LM``. Per-request stats land in ``self.stats``
    (and ``stats_file``) so a harness run reports speed (NFE, tokens/forward, tokens/s) beside accuracy."""

    def __init__(self, sampler: str = "llada", **model_args):
        super().__init__()
        import dllm

        knobs = sampler_knobs(sampler)
        opts, self.sampler_kwargs = dict(OPTIONS), {}
        for k, v in model_args.items():
            v = parse_value(v)
            if k in OPTIONS:
                opts[k] = v
            elif k in knobs:
                self.sampler_kwargs[k] = v
            else:
                raise DllmError(f"unknown model_args parameter {k!r}: sampler {sampler!r} takes {knobs}, "
                                f"the adapter takes {sorted(OPTIONS)}")
        self.opts, self.sampler_name, self.knobs = opts, sampler, knobs
        check_options(opts)
        check_types(SAMPLERS[sampler], self.sampler_kwargs)
        self.cache = opts["cache"] or "none"
        device = str(opts["device"] or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.startswith("cuda") and not torch.cuda.is_available():  # lm_eval's CLI defaults to cuda:0
            warnings.warn(f"device {device!r} requested but CUDA is not available; using cpu", stacklevel=2)
            device = "cpu"
        try:
            self.model = dllm.load(str(opts["pretrained"]), dtype=opts["dtype"], device=device)
        except DllmError as e:
            raise DllmError(f"pretrained={opts['pretrained']!r}: {e}") from e
        self._device = self.model.device
        if not opts["block_length"]:  # the one rule of dllm.generate (dllm.engine.decode_window)
            opts["block_length"] = decode_window(self.model, None)
        check(opts["gen_length"] % opts["block_length"] == 0,
              f"gen_length ({opts['gen_length']}) must be a multiple of block_length ({opts['block_length']})")
        make_cache(self.cache, self.model, opts["block_length"])  # a bad cache name fails here, in one line
        self.stats: list[dict] = []
        self._samplers: dict[tuple, object] = {}
        self._warned: set[str] = set()
        try:
            self.sampler = self._sampler({})  # a bad knob value fails here too
        except DllmError:
            raise
        except (TypeError, ValueError) as e:
            raise DllmError(f"sampler {sampler!r} refuses its knobs {self.sampler_kwargs}: "
                            f"{str(e).splitlines()[0]}") from e

    # ---- helpers -------------------------------------------------------------------------
    def _sampler(self, overrides: dict):
        """The configured sampler with a request's overrides (built once per distinct override)."""
        key = tuple(sorted(overrides.items()))
        if key not in self._samplers:
            self._samplers[key] = build_sampler(self.sampler_name, **{**self.sampler_kwargs, **overrides})
        return self._samplers[key]

    def _warn_once(self, msg: str) -> None:
        if msg not in self._warned:
            self._warned.add(msg)
            warnings.warn(msg, stacklevel=3)

    def _log(self, row: dict) -> None:
        self.stats.append(row)
        if self.opts["stats_file"]:
            path = Path(self.opts["stats_file"])
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    def _encode(self, context: str, room: int) -> list[int]:
        """Context ids, left-truncated to ``room`` tokens (the harness's convention for long
        few-shot contexts); an empty context becomes the end-of-text token."""
        tok = self.model.tokenizer
        if context.strip() and self.opts["chat_template"]:
            ids = encode_prompts(tok, [context], True)[0]
        else:
            # special-token text in a context is read as plain text, as in every prompt (encode_prompts)
            ids = encode_prompts(tok, [context], False)[0] if context.strip() else []
        ids = list(ids) or [self.model.eos_token_ids[0]]
        check(room > 0, f"no room for the context: the model's max_length is {self.model.max_length}")
        return ids[-room:]

    def _settings(self, kw: dict) -> tuple[int, int | None, dict]:
        """A request's (gen_length, steps, sampler overrides). max_gen_toks is rounded up to whole
        blocks; ``steps`` keeps the model_args' steps per block, so tokens per step stay the same
        whatever length a task asks for. do_sample / temperature / top_p / top_k override the
        sampler's knobs when it has them (the harness's convention: the task decides)."""
        bl, o = self.opts["block_length"], self.opts
        max_toks = kw.get("max_gen_toks") or o["gen_length"]
        gen_length = -(-int(max_toks) // bl) * bl
        steps = None
        if o["steps"] is not None:
            per_block = max(1, round(int(o["steps"]) * bl / o["gen_length"]))
            steps = per_block * (gen_length // bl)
        over = {k: kw[k] for k in ("temperature", "top_p", "top_k") if kw.get(k) is not None}
        if kw.get("do_sample") is False:
            over["temperature"] = 0.0
            over.pop("top_p", None), over.pop("top_k", None)
        for k in [k for k in over if k not in self.knobs]:
            if k == "temperature" and over[k] == 0:
                over.pop(k)
                continue
            self._warn_once(f"sampler {self.sampler_name!r} has no {k!r} knob; the request's {k} is ignored")
            over.pop(k)
        for k in kw:
            if k not in GEN_KWARGS:
                self._warn_once(f"generation argument {k!r} is not used by the dllm adapter")
        return gen_length, steps, over

    # ---- harness API ---------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool | None = None) -> list[str]:
        """Requests with the same generation settings are decoded together, ``batch_size`` at a
        time, longest context first (less padding). Each row's text is cut at its first stop
        string and at ``max_gen_toks`` tokens (the canvas is rounded up to whole blocks)."""
        disable = self.opts["disable_tqdm"] if disable_tqdm is None else disable_tqdm
        groups: dict[tuple, list[int]] = {}
        todo = []
        for i, req in enumerate(requests):
            context, kw = req.args[0], dict(req.args[1] or {})
            until = kw.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            gen_length, steps, over = self._settings(kw)
            ids = self._encode(context, self.model.max_length - gen_length)
            todo.append((context, req.args[1], ids, until, int(kw.get("max_gen_toks") or gen_length)))
            groups.setdefault((gen_length, steps, tuple(sorted(over.items()))), []).append(i)
        out: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="dllm generate_until", disable=disable)
        bs = self.opts["batch_size"]
        for (gen_length, steps, over), idx in groups.items():
            sampler = self._sampler(dict(over))
            idx = sorted(idx, key=lambda i: -len(todo[i][2]))
            for s in range(0, len(idx), bs):
                chunk = idx[s:s + bs]
                res = generate(self.model, [todo[i][2] for i in chunk], sampler, gen_length=gen_length,
                               block_length=self.opts["block_length"], steps=steps, cfg_scale=self.opts["cfg_scale"],
                               seed=self.opts["seed"], cache=self.cache, **{k: self.opts[k] for k in PASSED})
                for i, row, st in zip(chunk, res.ids, res.stats):
                    context, raw_kw, _, until, max_toks = todo[i]
                    keep = row[:min(st.gen_tokens, max_toks)].tolist()  # [≤ max_gen_toks] up to end-of-text
                    text = self.model.tokenizer.decode(keep, skip_special_tokens=True)
                    text, stop = cut_at_stop(text, until)
                    out[i] = text
                    self.cache_hook.add_partial("generate_until", (context, raw_kw), text)
                    self._log({"kind": "generate_until", "request": i, "nfe": st.nfe,
                               "tokens_per_forward": st.tokens_per_forward,
                               "real_tokens_per_forward": st.real_tokens_per_forward,
                               "tokens_per_second": st.tokens_per_second, "gen_tokens": st.gen_tokens,
                               "committed": st.committed, "prompt_tokens": st.prompt_tokens,
                               "wall_time": st.wall_time, "batch_size": len(chunk), "gen_length": gen_length,
                               "steps": steps, "stop": stop, "sampler": repr(sampler), "cache": res.cache})
                bar.update(len(chunk))
        bar.close()
        return out

    def loglikelihood(self, requests, disable_tqdm: bool | None = None) -> list[tuple[float, bool]]:
        """(Monte Carlo log-likelihood bound, is_greedy) per (context, continuation). Each request
        draws from its own generator seeded by ``seed`` and its text, so a score does not depend on
        the order or company of the requests. is_greedy (``greedy=argmax``): the argmax of one
        forward with the whole continuation masked equals it, the strictest parallel reading;
        ``greedy=decode`` decodes the continuation's length with the configured sampler instead."""
        disable = self.opts["disable_tqdm"] if disable_tqdm is None else disable_tqdm
        out = []
        for i, req in enumerate(tqdm(requests, desc="dllm loglikelihood", disable=disable)):
            context, continuation = req.args
            start = time.perf_counter()
            n = len(context) - len(context.rstrip())  # trailing spaces belong to the continuation
            context, continuation = context[:len(context) - n], context[len(context) - n:] + continuation
            target = list(self.model.tokenizer(continuation, add_special_tokens=False)["input_ids"])
            if not target:
                out.append((0.0, True))
                continue
            area = max(len(target), self.opts["ll_canvas"])
            check(area < self.model.max_length,
                  f"continuation of {area} tokens (ll_canvas included) exceeds the model's max_length "
                  f"{self.model.max_length}")
            ctx = self._encode(context, self.model.max_length - area)
            seed = (self.opts["seed"] + zlib.crc32(f"{context}\x00{continuation}".encode())) % 2**63
            gen = torch.Generator(device=self._device).manual_seed(seed)
            ll, greedy, forwards = self._mc_loglikelihood(ctx, target, gen, seed)
            out.append((ll, greedy))
            self.cache_hook.add_partial("loglikelihood", (req.args[0], req.args[1]), (ll, greedy))
            self._log({"kind": "loglikelihood", "request": i, "nfe": forwards, "context_tokens": len(ctx),
                       "target_tokens": len(target), "mc_num": self.opts["mc_num"],
                       "wall_time": time.perf_counter() - start})
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("dllm adapter: loglikelihood_rolling (perplexity tasks) is not implemented for "
                                  "masked diffusion models; use generate_until or loglikelihood tasks")

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.model.tokenizer, "name_or_path", self.model.name)).replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        tok = self.model.tokenizer
        check(bool(getattr(tok, "chat_template", None)),
              "--apply_chat_template: this model's tokenizer has no chat template")
        return tok.apply_chat_template(chat_history, tokenize=False, add_generation_prompt=add_generation_prompt)

    # ---- Monte Carlo likelihood ----------------------------------------------------------
    def _target_logits(self, x: torch.Tensor, p: int, length: int) -> torch.Tensor:
        """x [b, T] (context | partly masked target | MASK tail) -> logits [b, length, V] of the
        target positions; with cfg_scale the unconditional pass masks the context (LLaDA's CFG)."""
        pos = torch.arange(x.shape[1], device=x.device).expand_as(x)
        valid = torch.ones_like(x, dtype=torch.bool)
        cfg = self.opts["cfg_scale"]
        if not cfg:
            return self.model(x, pos, valid, window=(p, p + length)).float()
        un = x.clone()
        un[:, :p] = self.model.mask_token_id
        both = self.model(torch.cat([x, un]), torch.cat([pos, pos]), torch.cat([valid, valid]),
                          window=(p, p + length)).float()
        cond, uncond = both.chunk(2)
        return uncond + (cfg + 1) * (cond - uncond)

    @torch.no_grad()
    def _mc_loglikelihood(self, ctx: list[int], target: list[int], gen: torch.Generator,
                          seed: int) -> tuple[float, bool, int]:
        """-E_l[L/l · Σ_masked -log p(x_i | masked x)] over mc_num draws; returns (estimate,
        is_greedy, forwards)."""
        dev, mask_id = self._device, self.model.mask_token_id
        p, length = len(ctx), len(target)
        area = max(length, self.opts["ll_canvas"])
        seq = torch.tensor(ctx + target + [mask_id] * (area - length), device=dev)  # [T]: context | target | MASK tail
        tgt = seq[p:p + length]  # [L]
        total, done, forwards = 0.0, 0, 0
        while done < self.opts["mc_num"]:
            b = min(self.opts["mc_batch_size"], self.opts["mc_num"] - done)
            offset = torch.rand((), generator=gen, device=dev, dtype=torch.float64)
            frac = (offset + torch.arange(b, device=dev, dtype=torch.float64) / b) % 1.0  # [b] stratified
            n_masked = ((frac * length).long() + 1).clamp(1, length)  # [b] uniform on 1..L
            rank = torch.rand(b, length, generator=gen, device=dev).argsort(-1).argsort(-1)  # [b, L] random order
            masked = rank < n_masked[:, None]  # [b, L]: n_masked random target positions per draw
            x = seq.repeat(b, 1)  # [b, T]
            x[:, p:p + length] = torch.where(masked, mask_id, tgt)
            logp = self._target_logits(x, p, length).log_softmax(-1)  # [b, L, V]
            logp = logp.gather(-1, tgt.expand(b, -1)[..., None])[..., 0]  # [b, L]
            nll = -(logp.double() * masked).sum(-1) * (length / n_masked.double())  # [b]
            total += float(nll.sum())
            done, forwards = done + b, forwards + 1
        if self.opts["greedy"] == "argmax":
            x = seq.clone()[None]
            x[:, p:] = mask_id
            logits = self._target_logits(x, p, length)[0]  # [L, V]
            logits[:, mask_id] = float("-inf")
            greedy = bool((logits.argmax(-1) == tgt).all())
            forwards += 1
        else:
            res = generate(self.model, [ctx], self.sampler, gen_length=area, block_length=area,
                           cfg_scale=self.opts["cfg_scale"], seed=seed)
            greedy = res.ids[0][:length].tolist() == target
            forwards += res.stats[0].nfe
        return -total / self.opts["mc_num"], greedy, forwards


def main() -> None:
    """``python -m dllm.eval.lm_eval_adapter <lm_eval args>``: lm_eval's CLI with ``--model dllm``."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
