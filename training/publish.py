"""Ship a trained run as a built-in model: copy the weights into ``dllm/assets/<name>``, draw the
loss curve, evaluate the one-token-per-step baseline on the held-out task items and write the
model card.

    python -m dllm.training.publish runs/dllm-tiny dllm-tiny --command "dllm train recipe=tiny"
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from dllm.engine import decode_window
from dllm.eval.plots import pyplot
from dllm.eval.runner import evaluate, markdown_table
from dllm.eval.tasks import task_list
from dllm.loading import ASSETS, load
from dllm.samplers import LLaDASampler, ThresholdSampler
from dllm.training.tokenizer import PRINTABLE

DEFAULT_DESCRIPTION = """A small masked-diffusion language model in the **LLaDA checkpoint format** (config keys `d_model`,
`n_heads`, ...; weights `model.transformer.blocks.N.*`), trained from scratch by dllm's own
`mdlm_sft` recipe on the toolkit's task suite. It loads through exactly the code path of
LLaDA-8B (`dllm.load("{name}")`) and is the default model of `dllm generate`, `dllm eval` and
`dllm bench`."""  # noqa: E501  (markdown: the string's text stays as written)


LOSS_LABEL = {"mdlm_sft": "MDLM loss (1/t weighted)", "ar_sft": "next-token cross-entropy",
              "block_diffusion": "masked-token cross-entropy", "certainty_forcing": "certainty-forcing loss"}


def loss_plot(loss_files: list[Path], png: Path, title: str, ylabel: str = LOSS_LABEL["mdlm_sft"]) -> None:
    """Loss of one or more consecutive stages (each stage's steps continue the previous one's). A stage
    stopped before its first logged step adds nothing; with no logged step at all no figure is written."""
    loss_files = [f for f in loss_files if _rows(f)]
    if not loss_files:
        return
    plt = pyplot()

    steps, losses, offset = [], [], 0
    for f in loss_files:
        rows = _rows(f)
        steps += [offset + r["step"] for r in rows]
        losses += [r["loss"] for r in rows]
        offset = steps[-1]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="loss")
    for f, x in zip(loss_files[:-1], _stage_ends(loss_files)):
        ax.axvline(x, color="gray", ls="--", lw=0.8)
    k = max(1, len(losses) // 40)
    smooth = [sum(losses[max(0, i - k):i + 1]) / len(losses[max(0, i - k):i + 1]) for i in range(len(losses))]
    ax.plot(steps, smooth, lw=1.8, label="moving average")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def _rows(f: Path) -> list[dict]:
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def _stage_ends(files: list[Path]) -> list[int]:
    ends, offset = [], 0
    for f in files:
        last = _rows(f)[-1]["step"]
        offset += last
        ends.append(offset)
    return ends[:-1]


def publish(run_dir: str, name: str, command: str, n_items: int = 100, gen_length: int = 32, notes: str = "",
            earlier_runs: tuple[str, ...] = (), description: str | None = None, tasks: str = "tiny",
            threshold: float | None = None, more_tasks: str | None = None, more_gen_length: int = 64) -> Path:
    """``tasks``: the card's held-out tasks (a ``tasks`` setting); ``threshold``: a second table
    with the confidence-threshold sampler at that threshold beside the one-token baseline;
    ``more_tasks``: a further section on other tasks at ``more_gen_length`` (ParallelBench's format:
    longer answers), the same samplers."""
    run = Path(run_dir)
    src = run / "final" if (run / "final" / "model").exists() else run / "checkpoint"
    dest = ASSETS / name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src / "model", dest)
    recipe = json.loads((src / "recipe.json").read_text())
    loss_plot([Path(r) / "loss.jsonl" for r in earlier_runs] + [run / "loss.jsonl"], dest / "loss.png", name,
              LOSS_LABEL.get(recipe.get("recipe"), "loss"))
    model = load(str(dest))
    arch = model.core.cfg
    # the default window (dllm.engine.decode_window: block diffusion its blocks, an AR model one token
    # per forward); block-causal models decode with their exact block cache (an AR model's KV cache)
    block = decode_window(model, None)
    if arch.attention == "block_causal":
        cache = "block"
        kind = ("causal (autoregressive)" if arch.autoregressive
                else f"block-causal (blocks of {arch.block_size}, aligned to absolute positions)")
    else:
        cache, kind = "none", "bidirectional"
    params = sum(p.numel() for p in model.core.parameters())
    size_mb = sum(f.stat().st_size for f in dest.glob("*.safetensors")) / 2**20
    names = task_list(tasks)
    per_task = evaluate(model, LLaDASampler(), names, n_items, dict(gen_length=gen_length, cache=cache), batch_size=50)
    alphabet = "all printable ASCII and newline, " if all(
        model.tokenizer.unk_token_id not in model.tokenizer(c, add_special_tokens=False)["input_ids"]
        for c in PRINTABLE) else ""
    second = ""
    if threshold is not None:
        fast = evaluate(model, ThresholdSampler(threshold=threshold), names, n_items,
                        dict(gen_length=gen_length, cache=cache), batch_size=50)
        second = f"""
Confidence threshold {threshold:g} (`sampler=threshold sampler.threshold={threshold:g}`), same items:

{markdown_table(fast)}
"""
        (dest / f"eval_threshold_{threshold:g}.json").write_text(json.dumps(fast, indent=1))
    third = ""
    if more_tasks:
        window = dict(gen_length=more_gen_length, block_length=more_gen_length, cache=cache)
        more = {"one token per forward": evaluate(model, LLaDASampler(), task_list(more_tasks), n_items, window,
                                                  batch_size=50)}
        if threshold is not None:
            more[f"threshold {threshold:g}"] = evaluate(model, ThresholdSampler(threshold=threshold),
                                                        task_list(more_tasks), n_items, window, batch_size=50)
        (dest / "eval_more.json").write_text(json.dumps(more, indent=1))
        cmd = (f"dllm eval model.name_or_path={name} tasks={more_tasks} decode.gen_length={more_gen_length} "
               f"decode.block_length={more_gen_length}")
        third = f"""
## {more_tasks}: first {n_items} test items of each task, gen {more_gen_length}

`{cmd}`
(add `sampler=threshold sampler.threshold={threshold if threshold is not None else 0.9:g}` for the second table).
""" + "".join(f"""
{label}:

{markdown_table(rows)}
""" for label, rows in more.items())
    card = f"""# {name}

{description or DEFAULT_DESCRIPTION.format(name=name)}

| | |
|---|---|
| architecture | {kind} transformer ({model.family} format), {arch.num_layers} layers, d_model {arch.hidden_size}, {arch.num_heads} heads ({arch.num_kv_heads} KV heads), SwiGLU {arch.intermediate_size}, RoPE θ {arch.rope_theta:g} |
| parameters | {params / 1e6:.2f} M ({size_mb:.1f} MB float32 safetensors) |
| tokenizer | BPE, {len(model.tokenizer)} tokens, {alphabet}digits split one per token; `{model.tokenizer.convert_ids_to_tokens(model.mask_token_id)}` {model.mask_token_id}, `{model.tokenizer.convert_ids_to_tokens(model.eos_token_ids[0])}` {model.eos_token_ids[0]} |
| data | `{recipe["data"]}` — training split of the task suite (test items never seen) |
| training | last stage: {recipe["step"]} optimizer steps{f", {recipe['train_seconds'] / 60:.0f} min" if "train_seconds" in recipe else ""}; all stages, wall time and machine below |

Training command (resumable: rerun the same command after an interruption):

```
{command}
```

{notes}

![loss curve](loss.png)

## Accuracy on held-out test items

One token per forward (LLaDA top-k, `steps = gen_length = {gen_length}`, greedy), first {n_items} test
items of each task; `python -m dllm.training.publish` reproduces it
(`dllm eval model.name_or_path={name} tasks={tasks} decode.gen_length={gen_length} decode.block_length={block} decode.cache={cache}` gives the same figures):

{markdown_table(per_task)}
{second}{third}"""  # noqa: E501  (markdown table rows are one line each)
    (dest / "README.md").write_text(card)
    (dest / "eval.json").write_text(json.dumps(per_task, indent=1))
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("name")
    ap.add_argument("--command", required=True, help="the exact training command, for the model card")
    ap.add_argument("--n-items", type=int, default=100)
    ap.add_argument("--notes", default="", help="Markdown paragraph added to the card (wall time, machine, gaps)")
    ap.add_argument("--earlier-runs", nargs="*", default=[], help="runs this one continued, for the loss curve")
    ap.add_argument("--description", default=None, help="the card's opening paragraph (default: a from-scratch model)")
    ap.add_argument("--tasks", default="tiny", help="the held-out tasks of the card (a tasks setting)")
    ap.add_argument("--threshold", type=float, default=None, help="add a table with the threshold sampler")
    ap.add_argument("--more-tasks", default=None, help="a further section on these tasks (e.g. parallelbench)")
    ap.add_argument("--more-gen-length", type=int, default=64)
    args = ap.parse_args()
    print(publish(args.run_dir, args.name, args.command, args.n_items, notes=args.notes,
                  earlier_runs=tuple(args.earlier_runs), description=args.description, tasks=args.tasks,
                  threshold=args.threshold, more_tasks=args.more_tasks, more_gen_length=args.more_gen_length))


if __name__ == "__main__":
    main()
