"""Publish a LoRA block-diffusion run as a delta checkpoint (dllm/delta.py): the adapter and the
added token rows, applied at load time to the parent named in the run's recipe.json.

    python -m training.publish_delta runs/dllm-smol-bd dllm/assets/dllm-smol-bd

The run folder's ``final/`` (or ``checkpoint/`` with ``from=checkpoint``) holds ``lora.safetensors``
and ``lora.json`` (written by fit() for every LoRA run), ``recipe.json`` (parent = ``init``, block
size) and ``model/`` (the merged student, read for its added rows). The output folder is replaced
atomically; a model card or eval files already there are kept.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file

from dllm.delta import DELTA_JSON, DELTA_TENSORS, write_delta
from dllm.errors import check
from dllm.loading import load
from dllm.training import common
from dllm.training.block_diffusion import MASK_TOKEN
from dllm.training.publish import LOSS_LABEL, loss_plot


def publish(run_dir: str | Path, out_dir: str | Path, stage: str = "final") -> Path:
    src, out = Path(run_dir) / stage, Path(out_dir)
    for name in ("lora.safetensors", "lora.json", "recipe.json", "model"):
        check((src / name).exists(), f"{src / name} is missing: publish_delta needs a LoRA run's {stage}/ folder")
    recipe = json.loads((src / "recipe.json").read_text())
    check(recipe.get("recipe") == "block_diffusion" and "init" in recipe,
          f"{src / 'recipe.json'}: a block_diffusion run is expected, got {recipe.get('recipe')!r}")
    parent_vocab = load(recipe["init"]).core.embed_tokens.weight.shape[0]
    student = load(src / "model")
    tensors = load_file(str(src / "lora.safetensors"))
    tensors["rows.embed_tokens"] = student.core.embed_tokens.weight.detach()[parent_vocab:].clone()
    tensors["rows.lm_head"] = student.core.lm_head.weight.detach()[parent_vocab:].clone()
    lora = json.loads((src / "lora.json").read_text())
    mask_token = student.tokenizer.convert_ids_to_tokens(student.mask_token_id)

    def write(tmp: Path):
        if out.exists():  # keep the card and the figures beside the weights
            for f in out.iterdir():
                if f.name not in (DELTA_JSON, DELTA_TENSORS) and f.is_file():
                    shutil.copy2(f, tmp / f.name)
        write_delta(tmp, parent=recipe["init"], block_size=int(recipe["block_size"]), lora=lora, tensors=tensors,
                    parent_vocab=parent_vocab, vocab_size=student.core.embed_tokens.weight.shape[0],
                    mask_token=mask_token or MASK_TOKEN)
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
        if (Path(run_dir) / "loss.jsonl").exists():
            loss_plot([Path(run_dir) / "loss.jsonl"], tmp / "loss.png", out.name, LOSS_LABEL["block_diffusion"])

    common.atomic_dir(out, write)
    return out


if __name__ == "__main__":
    check(len(sys.argv) in (3, 4), "usage: python -m training.publish_delta <run_dir> <out_dir> [final|checkpoint]")
    print(publish(*sys.argv[1:]))
