"""``dllm eval``: one model + sampler over task items; per-item JSONL and a summary table."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from dllm.apps.common import build, decode_of, one_line_errors
from dllm.errors import DllmError, check
from dllm.eval.resume import model_settings
from dllm.eval.tasks import task_list


@one_line_errors
def run(cfg: DictConfig) -> None:
    from dllm.eval.runner import evaluate, markdown_table

    check(cfg.n_items > 0, f"n_items must be a positive integer, got {cfg.n_items}")
    check(cfg.batch_size > 0, f"batch_size must be a positive integer, got {cfg.batch_size}")
    if cfg.get("summary"):  # checked before anything runs: a bad path leaves no items behind
        check(not Path(cfg.summary).is_dir(), f"summary {cfg.summary} cannot be written: it is a folder")
    tasks = task_list(cfg.tasks)
    if "humaneval" in tasks:  # one line on how model-written code is confined here
        from dllm.eval.sandbox import announce

        announce()
    job_dir = sweep_job_dir()
    output = job_dir / "items.jsonl" if job_dir else cfg.output  # a sweep run keeps its items in its own folder
    settings = {}
    if any(t.startswith("parallelbench/") for t in tasks):  # whose items: ours, or the user's copy of the benchmark's
        from dllm.eval.tasks import use_parallelbench_items

        settings["parallelbench_items"] = use_parallelbench_items(cfg.get("data_dir"), cfg.get("hub_dataset"))
    model, sampler = build(cfg.model), build(cfg.sampler)
    settings["model"] = model_settings(cfg.model)
    per_task = evaluate(model, sampler, tasks, cfg.n_items, decode_of(cfg), cfg.batch_size, output, settings=settings)
    from dllm.eval.runner import dist_state

    if not dist_state().is_main_process:  # several processes: the main one reports
        return
    table = markdown_table(per_task)
    print(table)
    s = per_task["all"]
    strict = f" (strict {s['strict_accuracy']:.1f} % where scored)" if "strict_accuracy" in s else ""
    print(f"[{sampler!r}] accuracy {s['accuracy']:.1f} %{strict} | NFE {s['nfe']:.1f} | tokens/forward "
          f"{s['tokens_per_forward']:.2f} | {s['tokens_per_second']:.1f} tok/s | latency {s['latency']:.3f} s")
    if cfg.summary:  # whole or not at all: a temporary file moved into place
        path = Path(cfg.summary)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(table + "\n")
            tmp.replace(path)
        except OSError as e:
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
            raise DllmError(f"summary {cfg.summary} cannot be written: {e.strerror or e}") from e
    if cfg.get("record"):  # the run record (dllm/eval/record.py); a sweep run writes it in its own folder
        import sys

        from omegaconf import OmegaConf

        from dllm.eval.record import run_record, write_record

        rec = run_record(per_task, model, sampler, OmegaConf.to_container(cfg, resolve=True),
                         dist_state().num_processes, " ".join(["dllm eval", *sys.argv[1:]]))
        print(f"wrote {write_record(job_dir / Path(cfg.record).name if job_dir else cfg.record, rec)}")
    if job_dir:  # one summary row per sweep run, gathered by `dllm sweep_report`
        from hydra.core.hydra_config import HydraConfig

        row = {"run": HydraConfig.get().job.override_dirname or job_dir.name,
               "overrides": list(HydraConfig.get().overrides.task), "sampler": repr(sampler),
               "cache": cfg.decode.get("cache", "none"), "block_length": cfg.decode.get("block_length"),
               "gen_length": cfg.decode.gen_length,
               "model": str(cfg.model.get("name_or_path", "")), "tasks": tasks, **s}
        (job_dir / "summary.json").write_text(json.dumps(row, indent=1))


def sweep_job_dir() -> Path | None:
    """The run's own folder inside a Hydra multirun sweep (None outside a sweep)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    path = Path(HydraConfig.get().runtime.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


@hydra.main(config_path="pkg://dllm.conf", config_name="eval", version_base=None)
def main(cfg: DictConfig) -> None:
    run(cfg)
