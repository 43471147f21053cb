"""The ``dllm`` console script: ``dllm <command> [hydra overrides]``."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

COMMANDS = {
    "generate": ("dllm.apps.generate", "decode prompts with a model and a sampler"),
    "train": ("dllm.apps.train", "run a training recipe (conf/recipe/)"),
    "eval": ("dllm.apps.eval", "accuracy and speed of a model + sampler on task items"),
    "bench": ("dllm.apps.bench", "samplers side by side with the baseline and the oracle; table + Pareto PNG"),
    "sweep_report": ("dllm.apps.sweep_report", "gather a `dllm eval --multirun` sweep: CSV, table, Pareto PNGs"),
    "serve": ("dllm.apps.serve", "an OpenAI-compatible HTTP server (completions, chat, streaming, metrics)"),
    "serve_ray": ("dllm.apps.serve_ray", "dllm serve on N Ray Serve replicas (the serve-ray extra)"),
    "bench_serve": ("dllm.apps.bench_serve", "dllm serve under load vs one request at a time; table in bench/serve"),
    "bench_ar": ("dllm.apps.bench_ar",
                 "a real AR model: dllm's loop vs transformers' generate; table in bench/real_ar"),
    "bench_smol": ("dllm.apps.bench_smol",
                   "dllm-smol-bd vs its AR parent on held-out prompts; table + plot in bench/smol"),
    "bench_cache": ("dllm.apps.bench_cache", "KV caches x samplers at several generation lengths; table + plot"),
}


def conf_dir() -> Path:
    import dllm.conf

    return Path(dllm.conf.__file__).resolve().parent


def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def check_group_overrides(args: list[str]) -> str | None:
    """Unknown config-group choices get one line here instead of Hydra's multi-line report."""
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and "." not in key and not key.startswith(("+", "~", "hydra")) and (conf_dir() / key).is_dir():
            if "," in value:  # multirun lists are checked item by item
                bad = [v for v in value.split(",") if v not in group_choices(key)]
            else:
                bad = [value] if value not in group_choices(key) else []
            if bad:
                return f"{key} must be one of {group_choices(key)}, got {bad[0]!r}"
    return None


_PARENT = re.compile(r"(?:^|[/\\(,\s])\.\.(?:$|[/\\),\s])")  # a ".." path component
_NOT_IN_RUN_DIR = ("sweep_dir", "hydra.sweep.dir", "output", "summary", "record")  # keys that name no run folder


def check_sweep_values(args: list[str]) -> str | None:
    """A --multirun run's folder is named by its overrides inside sweep_dir: a value with a ".."
    component would put it outside, so it is refused before Hydra makes any folder."""
    if not {"--multirun", "-m"} & set(args):
        return None
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") not in _NOT_IN_RUN_DIR and _PARENT.search(value):
            return (f"sweep value {key}={value!r} has a '..' path component: "
                    "each run's folder must stay inside sweep_dir")
    return None


_TYPE_ERROR = re.compile(r"Value '(.*)' of type '\w+' could not be converted to (Integer|Float|Boolean)")
_KINDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}


def check_composes(cmd: str, args: list[str]) -> str | None:
    """Compose the command's config with the overrides first, so an unknown key or a malformed
    override is one line (Hydra would print a multi-line report and exit 1)."""
    if not (conf_dir() / f"{cmd}.yaml").exists() or any(a.startswith("-") for a in args):
        return None  # --multirun, --config-name, --help ...: Hydra's own handling
    from hydra import compose, initialize_config_module

    try:
        with initialize_config_module("dllm.conf", version_base=None):
            compose(cmd, overrides=args)
    except Exception as e:  # noqa: BLE001  any composition error becomes its first lines, joined
        moved = old_decode_spelling(args)
        if moved:
            return moved
        typed = _TYPE_ERROR.match(str(e.__cause__ or ""))
        if typed and getattr(e.__cause__, "full_key", None):  # a typed node (a structured config) refused a value
            return f"{e.__cause__.full_key} must be {_KINDS[typed[2]]}, got {typed[1]!r}"
        first = str(e).strip().splitlines()[:1]
        cause = [line for line in str(e.__cause__ or "").strip().splitlines()[:1] if line not in first]
        return " ".join(first + cause) or type(e).__name__
    return None


def old_decode_spelling(args: list[str]) -> str | None:
    """A decode setting written at the top level of a command without a ``decode:`` node (where
    :func:`decode_shorthand` cannot place it) gets the ``decode.`` spelling in its one line."""
    from dllm.generate import DECODE_KEYS

    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") in DECODE_KEYS:
            return f"{key.lstrip('+')} is a decode setting: write decode.{key.lstrip('+')}={value}"
    return None


def decode_shorthand(cmd: str, args: list[str]) -> list[str]:
    """``cache=block`` at the top level means ``decode.cache=block`` for a command whose config has a
    ``decode:`` node and no top-level key of that name (``dllm generate model=smol_bd cache=block ...``);
    ``decode.<key>`` stays the documented spelling."""
    from dllm.generate import DECODE_KEYS

    if not any(a.partition("=")[0] in DECODE_KEYS for a in args) or not (conf_dir() / f"{cmd}.yaml").exists():
        return args
    from hydra import compose, initialize_config_module

    try:
        with initialize_config_module("dllm.conf", version_base=None):
            cfg = compose(cmd)
    except Exception:  # noqa: BLE001  the composition check that follows reports it
        return args
    if "decode" not in cfg:
        return args
    return [f"decode.{a}" if a.partition("=")[0] in DECODE_KEYS and a.partition("=")[0] not in cfg else a
            for a in args]


def quote_text_overrides(args: list[str]) -> list[str]:
    """``prompt=<free text>`` reaches Hydra as a quoted string, so brackets, commas and quotes in
    a prompt (``reverse: ["Ann Lee", "Bob Stone"]``) are text, not override grammar."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in ("prompt", "title") and not (value[:1] in "'\"" and value[-1:] == value[:1]
                                                       and len(value) > 1):
            value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
            arg = f"{key}={value}"
        out.append(arg)
    return out


def usage() -> str:
    lines = ["usage: dllm <command> [key=value ...]   (dllm <command> --help lists the choices)", "", "commands:"]
    lines += [f"  {name:<10} {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return
    cmd = args[0]
    if cmd not in COMMANDS:
        print(f"error: command must be one of {sorted(COMMANDS)}, got {cmd!r}", file=sys.stderr)
        sys.exit(2)
    problem = check_group_overrides(args[1:]) or check_sweep_values(args[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    overrides = decode_shorthand(cmd, quote_text_overrides(args[1:]))
    problem = check_composes(cmd, overrides)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [f"dllm {cmd}"] + overrides
    importlib.import_module(COMMANDS[cmd][0]).main()


if __name__ == "__main__":
    main()
