"""bench/gpu/e2e.py (issue 19) runs on a lent GPU only; here: it imports, its arguments parse, one
timed decode of every variant runs on a tiny model, and the tables render."""

import importlib.util
from pathlib import Path

import pytest

from dllm.testing import tiny_model

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu" / "e2e.py"


@pytest.fixture(scope="module")
def e2e():
    spec = importlib.util.spec_from_file_location("bench_gpu_e2e", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_arguments(e2e):
    args = e2e.parse(["out", "--batches", "1,8", "--models", "llada8b"])
    assert args.batches == [1, 8] and args.contexts == [1024, 4096] and args.models == ["llada8b"]
    with pytest.raises(SystemExit):
        e2e.parse(["--gen-length", "48"])


@pytest.mark.parametrize("family", ["llada", "fast_dllm_v2"])
def test_every_variant_decodes_on_a_tiny_model(e2e, family):
    model = tiny_model(family, seed=0, num_layers=1, **({"block_size": 32} if family == "fast_dllm_v2" else {}))
    spec = e2e.MODELS["llada8b" if family == "llada" else "fast_dllm_v2_7b"]
    runs = []
    for label, cache, block, _, graphs in e2e.variants(spec):
        with e2e.variant_env("torch", graphs):  # CPU: the reference kernels; graphs fall back to eager
            rec = e2e.decode(model, 2, 32, cache, block, 4, 32, 2 if cache == "none" else None)
        assert rec["steps"] == (2 if cache == "none" else 8) and rec["tokens"] == 2 * 4 * rec["steps"]
        runs.append(dict(model=family, batch=2, context=32, schedule="4/step", variant=label, **rec))
    runs.append(dict(model=family, batch=8, context=5, schedule="4/step", variant="none", error="OOM"))
    md = e2e.markdown(dict(args=dict(gen_length=32, nocache_steps=2), runs=runs))
    assert "_graphs/none" in md and "OOM" in md
