"""What every Hydra app shares: building objects from config groups, checking values, one-line errors."""

from __future__ import annotations

import functools
import sys

from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from dllm.errors import DllmError, check, check_types, check_value
from dllm.generate import DECODE_KEYS, generate

# Top-level keys of the primary configs (conf/*.yaml) and the kind of value each takes; the
# keys of a node with a ``_target_`` (model, sampler, recipe) are checked against its signature,
# and those of the ``decode:`` node against generate()'s.
KINDS: dict[str, tuple[type, bool]] = {  # key -> (kind, null allowed)
    "n_items": (int, False), "batch_size": (int, False), "requests": (int, False), "max_batch": (int, False),
    "max_queue": (int, False), "max_tokens": (int, False), "port": (int, False), "replicas": (int, False),
}


def check_decode(values: dict, where: str = "decode.") -> None:
    """Decode settings (a ``decode:`` node, a bench entry's overrides): generate()'s keywords, typed as
    generate() types them."""
    bad = sorted(set(values) - set(DECODE_KEYS))
    check(not bad, f"{where}{bad[0] if bad else ''} is not a decode setting; decode settings are generate()'s "
                   f"keywords: {list(DECODE_KEYS)}")
    check_types(generate, values, prefix=where)


def decode_of(cfg: DictConfig) -> dict:
    """The config's ``decode:`` node as generate()'s keyword arguments (``generate(..., **decode_of(cfg))``)."""
    return OmegaConf.to_container(cfg.decode, resolve=True) if "decode" in cfg else {}


def check_config(cfg: DictConfig) -> None:
    """Non-numeric values (``decode.gen_length=abc``, ``sampler.top_k=1.5``) become one line naming the key."""
    for key, (kind, optional) in KINDS.items():
        if key in cfg:
            check_value(key, cfg[key], kind, optional)
    if "decode" in cfg:
        check_decode(decode_of(cfg))
    for key in cfg:
        node = cfg[key]
        if isinstance(node, DictConfig) and "_target_" in node:
            values = OmegaConf.to_container(node, resolve=True)
            try:
                target = get_method(values.pop("_target_"))
            except Exception:  # instantiate() reports a bad target itself
                continue
            check_types(target, values, prefix=f"{key}.")


def build(node):
    """instantiate() with the user's error surfaced, not Hydra's wrapper."""
    try:
        return instantiate(node)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, (DllmError, TypeError)):
            raise DllmError(str(cause).splitlines()[0]) from cause
        raise


def one_line_errors(fn):
    """Bad input exits with status 2 and one line on stderr, never a traceback. The config's values
    are checked first, before anything is loaded or written."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            if args and isinstance(args[0], DictConfig):
                check_config(args[0])
            return fn(*args, **kwargs)
        except DllmError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
