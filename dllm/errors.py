"""User-facing errors: one line that names the parameter and what is allowed."""

from __future__ import annotations

import functools
import inspect
import types
import typing


class DllmError(ValueError):
    """Bad input from the user (a parameter, a file, a name). The CLI prints it as one line."""


def check(cond: bool, message: str) -> None:
    if not cond:
        raise DllmError(message)


def _kind(hint) -> tuple[type | None, bool]:
    """(int | float | bool | None, None allowed) for an annotation; None when it is something else."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    optional = type(None) in args
    kinds = [a for a in args if a is not type(None)]
    if len(kinds) == 1 and kinds[0] in (int, float, bool):
        return kinds[0], optional
    return None, optional


def check_value(name: str, value, kind: type, optional: bool = False) -> None:
    """``value`` must be an int (not a bool), a number, or a bool: one line naming ``name`` otherwise."""
    if value is None and optional:
        return
    ok = {int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          bool: isinstance(value, bool)}[kind]
    what = {int: "an integer", float: "a number", bool: "true or false"}[kind]
    check(ok, f"{name} must be {what}{' or null' if optional else ''}, got {value!r}")


@functools.lru_cache(maxsize=512)
def _hints(target) -> dict:
    """``target``'s resolved annotations, once per function (resolving compiles every annotation
    string: a server checks each request's fields against the same functions)."""
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: the callee checks its own values
        return {}


def check_types(fn, values: dict, prefix: str = "") -> None:
    """Check the int / float / bool arguments in ``values`` against ``fn``'s annotations, so a
    ``top_k=1.5`` or ``threshold=abc`` is one line naming the argument, not a TypeError deep inside."""
    hints = _hints(fn.__init__ if inspect.isclass(fn) else fn)
    for key, value in values.items():
        if key in hints:
            kind, optional = _kind(hints[key])
            if kind is not None:
                check_value(f"{prefix}{key}", value, kind, optional)
