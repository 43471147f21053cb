"""``dllm train recipe=<name>``: run a training recipe from conf/recipe/."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from dllm.apps.common import one_line_errors


@one_line_errors
def run(cfg: DictConfig) -> None:
    from hydra.utils import get_method

    from dllm.errors import DllmError

    node = OmegaConf.to_container(cfg.recipe, resolve=True)
    target = get_method(node.pop("_target_"))
    try:
        out = target(**node)
    except TypeError as e:  # an unknown recipe key
        raise DllmError(str(e).splitlines()[0]) from e
    print(f"done: {out}")


@hydra.main(config_path="pkg://dllm.conf", config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    run(cfg)
