"""One recipe=smol_bd step (loss + backward; LoRA r 16, batch 8, the real SmolLM2 parent) timed three
ways on the same batches: the plain loss in fp32 (2L columns, every logit: the test's reference form),
training/block_diffusion.py's bd_loss in fp32, and bd_loss under bf16 autocast (the recipe's setting).

    python bench/smol/steptime.py [--out bench/smol/steptime.md]      # needs pip install -e ".[smol]"
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.test_block_diffusion import plain_bd_loss  # noqa: E402
from training import block_diffusion as bd, common  # noqa: E402
from training.fit import LINEAR_LAYERS  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/smol/parent_rows.jsonl")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default="bench/smol/steptime.md")
    a = ap.parse_args()
    rows = common.select_rows(common.load_records(a.data), {"split": "train"})
    recipe = bd.BlockDiffusion(a.data, rows, "smollm2-135m-instruct", 32, 64, 96, "unused")
    model = recipe.build()
    recipe.setup(model)
    torch.manual_seed(0)
    model.core = common.apply_lora(model.core, 16, 32, 0.0, LINEAR_LAYERS)
    model.train()
    lines = [f"# One recipe=smol_bd step, {torch.get_num_threads()} CPU threads (`python bench/smol/steptime.py`)", "",
             "| loss | step 1 s | step 2 s | step 3 s | mean s |", "|---|---|---|---|---|"]
    for name, fn, bf16 in [("plain, fp32", plain_bd_loss, False), ("bd_loss, fp32", bd.bd_loss, False),
                           ("bd_loss, bf16 autocast", bd.bd_loss, True)]:
        times = []
        for k in range(a.steps):  # step k's batch and noise, the same for every form
            idx = common.batch_indices(len(recipe.examples), 8, k, 0)
            batch = common.collate([recipe.examples[i] for i in idx], recipe.pad, "cpu", align=32)
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = fn(model, *batch, common.step_generator(0, k), recipe.mask_id, 32)
            loss.backward()
            model.core.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t)
        lines.append(f"| {name} | " + " | ".join(f"{t:.1f}" for t in times) + f" | {sum(times) / len(times):.1f} |")
        print(lines[-1], flush=True)
    Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
