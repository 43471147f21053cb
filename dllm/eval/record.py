"""The run record of ``dllm eval ... record=run.json``: one JSON file holding everything another person
needs to compare their run with ours line by line — what was measured (accuracy, tokens per
forward, throughput; overall and per task) and under what (the dllm commit, model, sampler and
its knobs, cache, lengths, hardware, batch size and concurrency).

Tokens per forward is summed over the benchmark: Σ generated tokens ÷ Σ forwards, where a row's
generated tokens stop at its first end-of-text token (prompt and padding never count) and every
forward of a row's decode counts once (algorithms.md §0.6)."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
from pathlib import Path

SCHEMA = "dllm-run-record/1"
MEASURES = ("items", "accuracy", "tokens_per_forward", "forwards", "generated_tokens", "tokens_per_second", "nfe",
            "latency", "wall_time")


def measures(summary: dict) -> dict:
    """One ``evaluate`` summary -> the record's measures. ``tokens_per_forward`` is the summary's
    ``real_tokens_per_forward`` (Σ tokens before end-of-text ÷ Σ forwards); the totals are
    recovered from the per-item means, which are exact ratios of integers."""
    if not summary:
        return {"items": 0}
    forwards = round(summary["nfe"] * summary["items"])
    return {"items": summary["items"], "accuracy": summary["accuracy"],
            "tokens_per_forward": summary["real_tokens_per_forward"], "forwards": forwards,
            "generated_tokens": round(summary["real_tokens_per_forward"] * forwards),
            "tokens_per_second": summary["tokens_per_second"], "nfe": summary["nfe"], "latency": summary["latency"],
            "wall_time": summary["wall_time"]}


def dllm_source() -> dict:
    """The dllm commit when the package runs from its git checkout (``dirty``: tracked files differ
    from it), and the installed package version."""
    from importlib.metadata import PackageNotFoundError, version

    import dllm

    root = Path(dllm.__file__).resolve().parent.parent
    commit = dirty = None

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top and Path(top).resolve() == root:  # not some other repository the package happens to sit in
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    try:
        pkg = version("dllm")
    except PackageNotFoundError:
        pkg = None
    return {"commit": commit, "dirty": dirty, "version": pkg}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device) -> dict:
    import torch

    device = torch.device(device)
    cuda = device.type == "cuda" and torch.cuda.is_available()
    return {"device": str(device), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if cuda else None,
            "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "platform": platform.platform()}


def plain(value):
    """JSON-safe copy: numbers, strings, lists and dicts as they are, anything else by its repr."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return repr(value)


def sampler_entry(sampler) -> dict:
    from dllm.samplers import ANALYSIS, SAMPLERS

    names = {cls: name for name, cls in {**SAMPLERS, **ANALYSIS}.items()}
    knobs = {k: plain(v) for k, v in vars(sampler).items() if not k.startswith("_")}
    return {"name": names.get(type(sampler)), "class": f"{type(sampler).__module__}.{type(sampler).__name__}",
            "knobs": knobs}


def model_entry(model, config: dict) -> dict:
    params = sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else None
    dtype = next(model.parameters()).dtype if params else None
    return {"name_or_path": config.get("name_or_path"), "family": getattr(model, "family", None),
            "config": plain(config), "parameters": params,
            "dtype": str(dtype).removeprefix("torch.") if dtype else None}


def run_record(per_task: dict[str, dict], model, sampler, settings: dict, processes: int = 1,
               command: str | None = None) -> dict:
    """The record of one ``evaluate`` run. ``settings`` is the eval config as a plain dict (model,
    tasks, n_items, batch_size, and the ``decode`` node: gen_length, block_length, steps, cache, ...).
    ``concurrency`` is the number of rows decoded at once: ``batch_size`` rows in each of
    ``processes`` processes."""
    from dllm.generate import decode_window

    tasks = [t for t in per_task if t != "all"]
    batch = int(settings["batch_size"])
    decode = settings["decode"]
    gen_length = int(decode["gen_length"])
    return {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "dllm": dllm_source(),
        "model": model_entry(model, dict(settings.get("model") or {})),
        "sampler": sampler_entry(sampler),
        "decode": {"gen_length": gen_length, "block_length": decode_window(model, decode.get("block_length")),
                   "steps": decode.get("steps") or gen_length, "cache": decode.get("cache", "none"),
                   "cfg_scale": decode.get("cfg_scale", 0.0), "stop_at_eos": decode.get("stop_at_eos", True)},
        "hardware": hardware(getattr(model, "device", "cpu")),
        "batch_size": batch, "processes": processes, "concurrency": batch * processes,
        "benchmark": {"tasks": tasks, "n_items": settings.get("n_items"), "split": "test"},
        "overall": measures(per_task.get("all", {})),
        "per_task": {t: measures(per_task[t]) for t in tasks},
    }


def write_record(path: str | Path, record: dict) -> Path:
    """Write atomically: a temporary file beside ``path``, then ``os.replace`` (a reader never sees
    half a record; an interrupted write leaves the old one)."""
    from dllm.errors import DllmError

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w") as f:
            f.write(json.dumps(record, indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DllmError(f"record {path} cannot be written ({e.strerror})") from e
    return path
