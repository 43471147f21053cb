"""What every Hydra app shares: building objects from config groups, checking values, one-line errors."""

from __future__ import annotations

import functools
import sys

from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from dllm.errors import DllmError, check_types, check_value

# Top-level keys of the primary configs (conf/*.yaml) and the kind of value each takes; the
# keys of a node with a ``_target_`` (model, sampler, recipe) are checked against its signature.
KINDS: dict[str, tuple[type, bool]] = {  # key -> (kind, null allowed)
    "gen_length": (int, False), "block_length": (int, True), "steps": (int, True), "n_items": (int, False),
    "batch_size": (int, False), "seed": (int, True), "cfg_scale": (float, False), "stop_at_eos": (bool, False),
    "requests": (int, False), "max_batch": (int, False), "max_queue": (int, False), "max_tokens": (int, False),
    "port": (int, False), "multi_block": (float, False), "replicas": (int, False),
}


def check_config(cfg: DictConfig) -> None:
    """Non-numeric values (``gen_length=abc``, ``sampler.top_k=1.5``) become one line naming the key."""
    for key, (kind, optional) in KINDS.items():
        if key in cfg:
            check_value(key, cfg[key], kind, optional)
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
