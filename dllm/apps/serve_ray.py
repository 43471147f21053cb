"""``dllm serve_ray``: ``dllm serve`` on N Ray Serve replicas (the ``serve-ray`` extra).

    dllm serve_ray replicas=2                       # two CPU replicas of the embedded model, port 8000
"""

from __future__ import annotations

import signal
import threading

import hydra
from omegaconf import DictConfig

from dllm.apps.common import one_line_errors
from dllm.errors import DllmError, check


@one_line_errors
def run(cfg: DictConfig) -> None:
    try:
        import ray
        from ray import serve
    except ImportError as e:
        raise DllmError(f"dllm serve_ray needs the serve-ray extra: pip install -e '.[serve-ray]' "
                        f"({e.name} is missing)") from e
    from dllm.serve.ray_app import build_deployment

    check(isinstance(cfg.replicas, int) and cfg.replicas > 0,
          f"replicas must be a positive integer, got {cfg.replicas}")
    check(cfg.replica_cpus > 0, f"replica_cpus must be > 0, got {cfg.replica_cpus}")
    check(0 < cfg.port < 65536, f"port must be in [1, 65535], got {cfg.port}")
    check(cfg.keep_alive_s > 0, f"keep_alive_s must be a positive number of seconds, got {cfg.keep_alive_s}")
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": cfg.host, "port": cfg.port, "keep_alive_timeout_s": cfg.keep_alive_s})
        serve.run(build_deployment(cfg), name="dllm", route_prefix="/", blocking=False)
        print(f"dllm serve_ray: {cfg.replicas} replicas on http://{cfg.host}:{cfg.port}", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


@hydra.main(config_path="pkg://dllm.conf", config_name="serve_ray", version_base=None)
def main(cfg: DictConfig) -> None:
    run(cfg)
