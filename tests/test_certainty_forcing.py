"""Certainty-forcing distillation (dParallel): the loss on hand-made logits, the masking views,
teacher trajectories (resumable), a short recipe run with LoRA, and bad input."""

import json
import math

import pytest
import torch

import dllm
from dllm.errors import DllmError
from dllm.training.certainty_forcing import certainty_loss, run, views
from dllm.training.trajectories import run as trajectories

ARCH = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64, max_length=128)
DATA = "tasks:waiting_line/reverse+sudoku/4x4:12"


def test_entropy_term_only_on_positions_the_model_already_gets_right():
    # three masked positions: argmax right (confident), argmax right (unsure), argmax wrong
    logits = torch.tensor([[[4.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 3.0, 0.0], [9.0, 9.0, 9.0]]])
    target = torch.tensor([[0, 0, 0, 2]])
    masked = torch.tensor([[True, True, True, False]])
    ce, ent = certainty_loss(logits, target, masked, temperature=0.5)
    want_ce = sum(-torch.log_softmax(logits[0, i], -1)[0] for i in range(3)) / 3
    assert math.isclose(ce.item(), want_ce.item(), rel_tol=1e-6)

    def entropy(x):
        p = torch.softmax(x / 0.5, -1)
        return -(p * p.log()).sum()

    want_ent = (entropy(logits[0, 0]) + entropy(logits[0, 1])) / 2  # not position 2 (wrong), not 3 (unmasked)
    assert math.isclose(ent.item(), want_ent.item(), rel_tol=1e-6)
    # nothing right -> no entropy term; nothing masked -> both zero
    assert certainty_loss(logits, torch.tensor([[2, 2, 2, 2]]), masked, 0.5)[1].item() == 0
    assert [t.item() for t in certainty_loss(logits, target, torch.zeros_like(masked), 0.5)] == [0, 0]


def test_views_follow_the_semi_autoregressive_scheme():
    b, prompt, r, block = 64, 5, 20, 8  # 20 answer tokens: blocks of 8, 8, 4
    answer = torch.zeros(b, prompt + r, dtype=torch.bool)
    answer[:, prompt:] = True
    mask, comp = views(answer, prompt, block, 0.5, torch.Generator().manual_seed(0))
    seen = set()
    for i in range(b):
        m, c = mask[i, prompt:], comp[i, prompt:]
        assert not mask[i, :prompt].any() and not comp[i, :prompt].any()  # the prompt is never masked
        both = m & c  # later positions: MASK in both views
        k = int((m ^ c).nonzero()[0]) // block if (m ^ c).any() else int(both.nonzero()[0]) // block
        seen.add(k)
        blk = torch.arange(r) // block
        assert not (m | c)[blk < k].any()  # earlier blocks clean
        assert (m ^ c)[blk == k].all()  # block k split exactly between the two views
        assert both[blk > k].all() and not both[blk <= k].any()
    assert seen == {0, 1, 2}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("cf")
    from dllm.training.mdlm_sft import run as sft

    out = sft(DATA, str(root / "teacher"), arch=ARCH, train=dict(max_steps=2, batch_size=8, warmup_steps=1))
    return out / "final" / "model"


def test_trajectories_resume_without_decoding_twice(teacher, tmp_path):
    full = trajectories(str(teacher), DATA, str(tmp_path / "a"), gen_length=16, block_length=8, batch_size=8)
    lines = (full / "rows.jsonl").read_text().splitlines()
    assert len(lines) == 24
    part = tmp_path / "b"
    part.mkdir()
    (part / "rows.jsonl").write_text("\n".join(lines[:10]) + "\n" + lines[10][:17])  # killed mid-line
    (part / "rows.settings.json").write_text((full / "rows.settings.json").read_text())  # written before decoding
    calls = []
    import dllm.training.trajectories as tr

    real = tr.generate
    tr.generate = lambda model, prompts, *a, **k: calls.append(len(prompts)) or real(model, prompts, *a, **k)
    try:
        again = trajectories(str(teacher), DATA, str(part), gen_length=16, block_length=8, batch_size=8)
    finally:
        tr.generate = real
    assert sum(calls) == 14  # only the missing rows were decoded
    assert (again / "rows.jsonl").read_text().splitlines() == lines
    meta = json.loads((again / "meta.json").read_text())
    assert meta["rows"] == 24 and len(meta["tokenizer"]) == 16
    row = json.loads(lines[0])
    assert len(row["response_ids"]) == 16 and row["prompt_ids"]
    assert all(isinstance(json.loads(line)["correct"], bool) for line in lines)  # scored by the task's scorer
    assert meta["scored"] == 24 and 0 <= meta["teacher_accuracy"] <= 100


def test_trajectories_refuse_to_resume_other_settings(teacher, tmp_path):
    """A rerun into the same folder with another gen_length (or teacher, data, cache) is one line
    naming what differs, not rows of two runs mixed in one file."""
    out = trajectories(str(teacher), DATA, str(tmp_path / "t"), gen_length=16, block_length=8, batch_size=24)
    with pytest.raises(DllmError, match=r"gen_length \(16 -> 8\)") as e:
        trajectories(str(teacher), DATA, str(out), gen_length=8, block_length=8, batch_size=24)
    assert "\n" not in str(e.value)


def test_trajectories_device_is_checked(teacher, tmp_path):
    """device: auto | cpu | cuda, one line otherwise; cuda where torch sees no GPU is one line too."""
    with pytest.raises(DllmError, match="device must be auto, cpu or cuda, got 'tpu'"):
        trajectories(str(teacher), DATA, str(tmp_path / "t"), device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DllmError, match="device=cuda but torch sees no GPU"):
            trajectories(str(teacher), DATA, str(tmp_path / "t"), device="cuda")


def test_trajectories_where_keeps_the_listed_rows_and_is_a_setting(teacher, tmp_path):
    """``where`` with a list value keeps the rows whose column is any of it; a rerun with another
    ``where`` is refused, a rerun without one into a folder recorded before the key is not."""
    out = trajectories(str(teacher), DATA, str(tmp_path / "w"), gen_length=8, block_length=8, batch_size=24,
                       where={"task": ["sudoku/4x4"]})
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {r["task"] for r in rows} == {"sudoku/4x4"}
    assert json.loads((out / "meta.json").read_text())["where"] == {"task": ["sudoku/4x4"]}
    with pytest.raises(DllmError, match=r"where"):
        trajectories(str(teacher), DATA, str(out), gen_length=8, block_length=8, batch_size=24,
                     where={"task": ["waiting_line/reverse"]})
    with pytest.raises(DllmError, match=r"where=\{'task': \['nope'\]\} keeps none of the 24 data rows"):
        trajectories(str(teacher), DATA, str(tmp_path / "n"), gen_length=8, block_length=8, where={"task": ["nope"]})


def test_two_steps_with_lora_and_the_loss_falls_on_a_fixed_batch(teacher, tmp_path):
    traj = trajectories(str(teacher), DATA, str(tmp_path / "t"), gen_length=16, block_length=8, batch_size=24)
    out = run(str(traj), str(teacher), str(tmp_path / "s"), block_length=8,
              train=dict(max_steps=2, batch_size=8, lora_r=4, lora_alpha=8, lora_targets=["q_proj", "v_proj"],
                         save_every=1, log_every=1))
    rows = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) and r["ce"] > 0 and r["entropy"] >= 0 for r in rows)
    model = dllm.load(out / "final" / "model")  # LoRA merged into a plain checkpoint
    assert not any("lora" in n for n, _ in model.named_parameters())
    # full fine-tuning, one batch repeated with fixed noise: the loss must go down
    full = run(str(traj), str(teacher), str(tmp_path / "f"), block_length=8,
               train=dict(max_steps=8, batch_size=24, lora_r=None, lr=3e-3, save_every=100, log_every=1, seed=0))
    first, last = [json.loads(line)["loss"] for line in (full / "loss.jsonl").read_text().splitlines()][::7]
    assert last < first


@pytest.mark.parametrize("kw,message", [
    (dict(lam=-1.0), r"lam \(the entropy weight λ\) must be >= 0, got -1.0"),
    (dict(train=dict(lora_r=0)), r"lora_r must be a positive integer \(or null for full fine-tuning\), got 0"),
    (dict(train=dict(lora_r=4, lora_targets=["attn_out"])),
     r"lora target 'attn_out' matches no module; the model's linear layers are"),
    (dict(keep="wrong"), r"keep must be 'all' or 'correct', got 'wrong'"),
    # a 2-step teacher is never right
    (dict(keep="correct", train=dict(lora_r=None)), r"no trajectory left in .* with keep='correct'"),
])
def test_bad_input(teacher, tmp_path, kw, message):
    traj = trajectories(str(teacher), DATA, str(tmp_path / "t"), gen_length=16, block_length=8, batch_size=24)
    with pytest.raises(DllmError, match=message):
        train = dict(max_steps=1, batch_size=4, **kw.pop("train", {}))
        run(str(traj), str(teacher), str(tmp_path / "s"), block_length=8, train=train, **kw)


def test_trajectories_from_another_tokenizer(teacher, tmp_path):
    from dllm.testing import tiny_checkpoint

    traj = trajectories(str(teacher), DATA, str(tmp_path / "t"), gen_length=16, block_length=8, batch_size=24)
    other = tiny_checkpoint(tmp_path / "other", "llada")
    with pytest.raises(DllmError, match=r"were written with another tokenizer .* than the student's"):
        run(str(traj), str(other), str(tmp_path / "s"), train=dict(max_steps=1, batch_size=4, lora_r=None))
