"""What every Hydra app shares: building objects from config groups, one-line errors."""

from __future__ import annotations

import functools
import sys

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from dllm.errors import DllmError


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
    """Bad input exits with status 2 and one line on stderr, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DllmError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
