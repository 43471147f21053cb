"""``dllm serve``: an OpenAI-compatible server for a model (Hydra groups model, sampler as
``dllm generate``; the sampler is the default of requests that name none)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from dllm.apps.common import build, one_line_errors
from dllm.errors import DllmError, check


@one_line_errors
def run(cfg: DictConfig) -> None:
    try:
        import uvicorn

        from dllm.serve.app import create_app
    except ImportError as e:
        raise DllmError(f"dllm serve needs the serve extra: pip install -e '.[serve]' ({e.name} is missing)") from e
    check(cfg.max_batch > 0, f"max_batch must be a positive integer, got {cfg.max_batch}")
    check(cfg.max_queue > 0, f"max_queue must be a positive integer, got {cfg.max_queue}")
    check(cfg.max_tokens_limit > 0, f"max_tokens_limit must be a positive integer, got {cfg.max_tokens_limit}")
    check(cfg.batching in ("continuous", "static"), f"batching must be continuous or static, got {cfg.batching!r}")
    check(0 < cfg.port < 65536, f"port must be in [1, 65535], got {cfg.port}")
    check(cfg.keep_alive_s > 0, f"keep_alive_s must be a positive number of seconds, got {cfg.keep_alive_s}")
    name = cfg.served_name or str(cfg.model.get("name_or_path", "dllm"))

    def load():
        return build(cfg.model), build(cfg.sampler), name

    # keep_alive_s outlives the clients' own idle expiry (httpx, so openai: 5 s): with uvicorn's 5 s both ends
    # drop an idle connection at the same moment, and a request sent on it then gets no response at all
    uvicorn.run(create_app(cfg, load), host=cfg.host, port=cfg.port, log_level=cfg.log_level,
                timeout_keep_alive=cfg.keep_alive_s)


@hydra.main(config_path="pkg://dllm.conf", config_name="serve", version_base=None)
def main(cfg: DictConfig) -> None:
    run(cfg)
