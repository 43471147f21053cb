"""``dllm bench_cache``: KV cache policies × samplers at several generation lengths; table + plot."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from dllm.apps.common import build, decode_of, one_line_errors
from dllm.errors import check
from dllm.eval.tasks import task_list


@one_line_errors
def run(cfg: DictConfig) -> None:
    from dllm.eval import cache_bench as cb
    from dllm.eval.tasks import get_task

    check(cfg.n_items > 0, f"n_items must be a positive integer, got {cfg.n_items}")
    check(len(cfg.gen_lengths) > 0 or len(cfg.profile) > 0, "give gen_lengths (the bench) or profile entries, or both")
    check(len(cfg.caches) > 0 and cfg.caches[0] == "none",
          f"caches must start with none (the reference each cache is compared with), got {list(cfg.caches)}")
    tasks = task_list(cfg.tasks)
    model = build(cfg.model)
    samplers = {name: build(node) for name, node in cfg.samplers.items()}
    lengths = [int(g) for g in cfg.gen_lengths]
    decode = decode_of(cfg)
    result = cb.cache_bench(model, samplers, list(cfg.caches), tasks, cfg.n_items, lengths, decode,
                            cfg.batch_size) if lengths else {}
    profiles = {}
    items = [it for t in tasks for it in get_task(t).items("test", cfg.n_items)][:cfg.batch_size]
    for entry in cfg.profile:  # "<cache> + <sampler> @ <gen_length>"
        what, _, g = entry.partition(" @ ")
        cache, _, name = what.partition(" + ")
        check(name in samplers and g.strip().isdigit(),
              f"profile entries read '<cache> + <sampler> @ <gen_length>' with a sampler of {list(samplers)}, "
              f"got {entry!r}")
        every_position = {**decode, "gen_length": int(g), "stop_at_eos": False}
        profiles[entry] = cb.profile(model, [it.prompt for it in items], samplers[name], cache, every_position)
    command = ("dllm bench_cache " + " ".join(sys.argv[1:])).strip()
    md = cb.write(result, profiles, cfg.out_dir, cfg.title, command, model)
    for g, per in result.items():
        for name, f in per.items():
            print(f"gen {g:>4} | {name:>26}: acc {f['accuracy']:5.1f} % ({f['acc_vs_uncached']:+.1f}, "
                  f"{f['same_as_uncached']:.0f} % identical) | NFE {f['nfe']:6.1f} | "
                  f"{f['tokens_per_second']:8.1f} tok/s "
                  f"({f['speedup']:.2f}x) | {f['ms_per_step']:.1f} ms/step")
    print(f"wrote {md}")


@hydra.main(config_path="pkg://dllm.conf", config_name="bench_cache", version_base=None)
def main(cfg: DictConfig) -> None:
    run(cfg)
