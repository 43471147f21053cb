"""An eval output file holds one run: its settings are recorded beside it, a rerun resumes only
with equal settings, and a lock keeps a second process off it while it is written.

``items.jsonl`` gets ``items.settings.json`` (the resolved model and a fingerprint of its weight
files, sampler and knobs, cache, gen/block length, steps, seed, tasks) and, while a run writes it,
``items.jsonl.lock``. How many items and how big a batch are not settings: a rerun with a larger
``n_items`` extends the run.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
from pathlib import Path

from dllm.errors import DllmError


def _plain(value):
    """JSON-safe copy (tensors, dtypes, enums become their repr)."""
    return json.loads(json.dumps(value, default=repr))


def _model_name(name: str) -> str:
    path = Path(os.path.expanduser(name)) if name else None
    return str(path.resolve()) if path is not None and path.exists() else name


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "*.pth")
WHOLE = 512 << 20  # files up to this size are hashed whole; larger ones at SAMPLES evenly spaced chunks
SAMPLES, CHUNK = 256, 1 << 20
# keys an output recorded before they existed may lack: such a record resumes as before
ADDED_KEYS = ("model.weights",)


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= WHOLE:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
        else:  # e.g. a 16 GB LLaDA-8B shard set: 256 MB read, wherever a retrain changed it
            for i in range(SAMPLES):
                f.seek((size - CHUNK) * i // (SAMPLES - 1))
                h.update(f.read(CHUNK))
    return h.hexdigest()


def weights_fingerprint(name_or_path: str) -> str | None:
    """A short hash of the weight files a model name stands for on this machine (a built-in name, a
    folder, a file, a packaged checkpoint), so an output resumes only on the same weights: a folder
    retrained in place or a checkpoint a run rewrites keeps its name. None where nothing is on disk
    (a hub id, a model object without a source)."""
    from dllm import loading

    if not name_or_path:
        return None
    try:
        path = loading.source(name_or_path)
    except DllmError:  # a packaged model whose package is not installed
        return None
    files = sorted(f for pattern in WEIGHT_FILES for f in path.glob(pattern)) if path.is_dir() else [path]
    files = [f for f in files if f.is_file()]
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{_file_digest(str(f.resolve()), st.st_size, st.st_mtime_ns)};".encode())
    return h.hexdigest()[:16]


def run_settings(model, sampler, tasks: list[str], gen: dict, extra: dict | None = None) -> dict:
    """Everything that decides a run's rows: model, sampler class and knobs, generation arguments,
    tasks. ``extra`` (the CLI's resolved model config, ...) replaces or adds top-level entries."""
    try:
        dtype = str(next(model.parameters()).dtype)
    except (AttributeError, StopIteration, TypeError):
        dtype = None
    name = str(getattr(model, "name", "") or "")
    settings = {
        "model": {"name": _model_name(name), "class": type(model).__name__,
                  "family": getattr(model, "family", None), "dtype": dtype, "weights": weights_fingerprint(name)},
        "sampler": {"class": type(sampler).__name__,
                    **{k: v for k, v in vars(sampler).items() if not k.startswith("_")}},
        "tasks": list(tasks),
        **gen,
    }
    settings.update(extra or {})
    return _plain(settings)


def model_settings(node) -> dict:
    """A model config node (``_target_: dllm.load``) as settings: a folder becomes its absolute path."""
    from omegaconf import DictConfig, OmegaConf

    node = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    node = {k: v for k, v in node.items() if k != "_target_"}
    if isinstance(node.get("name_or_path"), str):
        node["weights"] = weights_fingerprint(node["name_or_path"])
        node["name_or_path"] = _model_name(node["name_or_path"])
    return _plain(node)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def settings_path(out: Path) -> Path:
    return out.with_suffix(".settings.json")


def check_settings(out: Path, settings: dict) -> None:
    """Refuse (one line naming the differing keys) to resume ``out`` under other settings."""
    path = settings_path(out)
    if not path.exists():
        if out.exists() and out.stat().st_size > 0:
            raise DllmError(f"output {out} holds rows of a run whose settings were not recorded ({path.name} is "
                            "missing): choose another output= or delete it")
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DllmError(f"output {out}: its settings file {path} is unreadable; choose another output= or delete "
                        "both") from e
    a, b = flatten(old), flatten(_plain(settings))
    for key in ADDED_KEYS:  # recorded before the key existed: not a difference
        if key not in a:
            b.pop(key, None)
    differ = sorted((k for k in a.keys() | b.keys() if a.get(k, "<unset>") != b.get(k, "<unset>")),
                    key=lambda k: (k not in a or k not in b, k))  # changed values first, then added or dropped keys
    if differ:
        shown = ", ".join(f"{k} ({a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r})" for k in differ[:6])
        more = f" and {len(differ) - 6} more" if len(differ) > 6 else ""
        raise DllmError(f"output {out} holds a run with other settings: {shown}{more} differ; rerun with its "
                        "settings to resume it, or choose another output=")


def write_settings(out: Path, settings: dict) -> None:
    path = settings_path(out)
    if path.exists():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_plain(settings), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def lock_path(out: Path) -> Path:
    return out.with_name(out.name + ".lock")


@contextlib.contextmanager
def output_lock(out: Path):
    """Hold ``<out>.lock`` (an flock, so the lock of a process that died is free again and taken
    over); a second run on the same output gets one line naming the holder's pid."""
    path = lock_path(out)
    if not path.parent.is_dir():
        raise DllmError(f"output {out} cannot be written: its folder {path.parent} does not exist")
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DllmError(f"output {out} cannot be written: {path} ({e.strerror})") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 100).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DllmError(f"output {out} is being written by another dllm eval (pid {holder}, lock {path}): "
                            "wait for it to finish or choose another output=") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino  # not a file its last holder just removed
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
