import pytest
import torch

from dllm.testing import tiny_checkpoint


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """One tiny checkpoint per real format, written once per test session."""
    root = tmp_path_factory.mktemp("ckpt")
    return {fam: tiny_checkpoint(root / fam, fam, seed=i) for i, fam in enumerate(["llada", "dream", "fast_dllm_v2"])}


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
