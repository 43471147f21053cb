"""``dllm bench``: samplers side by side (with the baseline and the oracle); table + Pareto PNG."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from dllm.apps.common import build, check_decode, decode_of, one_line_errors
from dllm.errors import check
from dllm.eval import plots
from dllm.eval.tasks import task_list, use_parallelbench_items


@one_line_errors
def run(cfg: DictConfig) -> None:
    from dllm.eval.bench import bench, write_outputs

    plots.require()  # the Pareto figure is drawn at the end: say so before the run, not after
    check(cfg.baseline in cfg.samplers,
          f"baseline must be one of the samplers {list(cfg.samplers)}, got {cfg.baseline!r}")
    check(cfg.n_items > 0, f"n_items must be a positive integer, got {cfg.n_items}")
    tasks = task_list(cfg.tasks)
    if any(t.startswith("parallelbench/") for t in tasks):  # ours, or the user's copy of the benchmark's items
        use_parallelbench_items(cfg.get("data_dir"), cfg.get("hub_dataset"))
    model = build(cfg.model)
    entries, models = {}, {}
    for name, e in cfg.samplers.items():  # an entry: its sampler, maybe its own model, and decode overrides
        overrides = {k: v for k, v in e.items() if k not in ("sampler", "model")}
        check_decode(overrides, f"samplers.{name}.")
        entries[name] = {"sampler": build(e.sampler), **overrides}
        if e.get("model") is not None:  # its own model (built once per distinct config)
            key = OmegaConf.to_yaml(e.model, resolve=True)
            models[key] = models[key] if key in models else build(e.model)
            entries[name]["model"] = models[key]
    result = bench(model, entries, cfg.baseline, tasks, cfg.n_items, decode_of(cfg), cfg.batch_size,
                   oracle=cfg.get("oracle", True))
    command = "dllm bench " + " ".join(sys.argv[1:])
    md = write_outputs(result, cfg.baseline, cfg.out_dir, cfg.title, command.strip())
    for name, per_task in result.items():
        s = per_task["all"]
        print(f"{name:>16}: accuracy {s['accuracy']:5.1f} % | NFE {s['nfe']:6.2f} | tokens/forward "
              f"{s['tokens_per_forward']:.2f} (real {s['real_tokens_per_forward']:.2f}) | "
              f"{s['tokens_per_second']:.1f} tok/s")
    print(f"wrote {md}")


@hydra.main(config_path="pkg://dllm.conf", config_name="bench", version_base=None)
def main(cfg: DictConfig) -> None:
    run(cfg)
