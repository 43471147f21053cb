"""The mdlm_sft recipe: a two-step run, exact resume after kill -9, LoRA and gradient checkpointing,
and the loss itself on a hand-made case."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import dllm
from dllm.errors import DllmError
from dllm.training import common
from dllm.training.common import collate
from dllm.training.fit import TrainConfig
from dllm.training.mdlm_sft import mdlm_loss, run

ARCH = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64, max_length=128)
DATA = "tasks:waiting_line/reverse+sudoku/4x4:64"


# The kill -9 of the resume test, kept out of the product: the subprocess wraps the checkpoint write
# and kills itself right after the step-3 checkpoint lands.
KILL_AFTER_CHECKPOINT_3 = """
import json, os, signal
from dllm.training import common
from dllm.training.mdlm_sft import run

write_checkpoint = common.atomic_dir


def atomic_dir(target, write):
    write_checkpoint(target, write)
    if target.name == "checkpoint" and json.loads((target / "recipe.json").read_text())["step"] >= 3:
        os.kill(os.getpid(), signal.SIGKILL)


common.atomic_dir = atomic_dir
"""


def losses(out):
    return [json.loads(line)["loss"] for line in (out / "loss.jsonl").read_text().splitlines()]


def test_two_steps_write_a_loadable_llada_checkpoint(tmp_path):
    out = run(DATA, str(tmp_path / "r"), arch=ARCH,
              train=dict(max_steps=2, batch_size=8, save_every=1, log_every=1, warmup_steps=1))
    assert len(losses(out)) == 2 and all(l == l and l > 0 for l in losses(out))
    model = dllm.load(out / "final" / "model")
    assert model.family == "llada"
    cfg = json.loads((out / "final" / "model" / "config.json").read_text())
    assert cfg["model_type"] == "llada" and "d_model" in cfg
    res = dllm.generate(model, ['reverse: ["Ann Lee", "Bob Shaw"]'], dllm.samplers.LLaDASampler(), gen_length=32,
                        block_length=32)
    assert res.stats[0].nfe >= 1


def test_resume_after_kill_reproduces_the_loss_curve(tmp_path):
    kw = dict(arch=ARCH, train=dict(max_steps=6, batch_size=8, save_every=3, log_every=1, warmup_steps=2))
    straight = run(DATA, str(tmp_path / "a"), **kw)
    code = KILL_AFTER_CHECKPOINT_3 + f"run({DATA!r}, {str(tmp_path / 'b')!r}, **{kw!r})"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-500:]  # killed by SIGKILL right after the step-3 checkpoint
    assert len(losses(tmp_path / "b")) == 3 and not (tmp_path / "b" / "final").exists()
    resumed = run(DATA, str(tmp_path / "b"), **kw)
    assert losses(resumed) == pytest.approx(losses(straight), rel=1e-5, abs=1e-6)
    a = dllm.load(straight / "final" / "model").core.state_dict()
    b = dllm.load(resumed / "final" / "model").core.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_lora_and_gradient_checkpointing(tmp_path):
    base = run(DATA, str(tmp_path / "base"), arch=ARCH, train=dict(max_steps=1, batch_size=8, warmup_steps=1))
    out = run(DATA, str(tmp_path / "lora"), init=str(base / "final" / "model"),
              train=dict(max_steps=2, batch_size=8, lora_r=4, lora_alpha=8, lora_targets=["q_proj", "v_proj"],
                         gradient_checkpointing=True, warmup_steps=1))
    before = dllm.load(base / "final" / "model").core.state_dict()
    after = dllm.load(out / "final" / "model").core.state_dict()  # merged, plain format
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(("q_proj" in k or "v_proj" in k) for k in changed)


def test_lora_target_that_matches_nothing(tmp_path):
    base = run(DATA, str(tmp_path / "base"), arch=ARCH, train=dict(max_steps=1, batch_size=8, warmup_steps=1))
    with pytest.raises(DllmError, match=r"lora target 'attn_out' matches no module; the model's linear layers are \["):
        run(DATA, str(tmp_path / "l"), init=str(base / "final" / "model"),
            train=dict(max_steps=1, lora_r=4, lora_targets=["attn_out"]))


def test_loss_only_on_masked_answer_positions():
    """Prompt positions never contribute; a perfect model scores zero loss."""
    from dllm.testing import tiny_model
    model = tiny_model("llada")
    examples = [([5, 6, 7], [8, 9, 0, 0]), ([6], [9, 8, 9, 0])]
    ids, pos, valid, answer = collate(examples, 0, "cpu")
    assert answer.sum().item() == 8 and not (answer & ~valid).any()

    class Perfect(torch.nn.Module):
        def forward(self, noisy, positions, valid):
            return torch.nn.functional.one_hot(ids, 40).float() * 50

    loss = mdlm_loss(Perfect(), ids, pos, valid, answer, torch.Generator().manual_seed(0), model.mask_token_id)
    assert loss.item() < 1e-6
    loss = mdlm_loss(model, ids, pos, valid, answer, torch.Generator().manual_seed(0), model.mask_token_id)
    assert torch.isfinite(loss) and loss.item() > 0


def test_batches_are_a_function_of_the_step():
    a = common.batch_indices(100, 8, 17, seed=3)
    assert a == common.batch_indices(100, 8, 17, seed=3) and a != common.batch_indices(100, 8, 18, seed=3)


def test_bad_training_arguments(tmp_path):
    with pytest.raises(DllmError, match="max_steps must be a positive integer"):
        run(DATA, str(tmp_path / "x"), arch=ARCH, train=dict(max_steps=0))
    with pytest.raises(DllmError, match="needs 'prompt' and 'response' or 'messages'"):
        f = tmp_path / "bad.jsonl"
        f.write_text('{"question": "a"}\n')
        run(str(f), str(tmp_path / "y"), arch=ARCH, train=dict(max_steps=1))


def test_chat_messages_go_through_the_chat_template():
    from dllm.testing import tiny_tokenizer
    tok = tiny_tokenizer()
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}assistant{% endif %}")
    row = {"messages": [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat on"}]}
    prompt, response = common.encode_record(row, tok)
    assert (tok.decode(prompt).split() == ["user", "the", "cat", "assistant"]
            or "assistant" in tok.convert_ids_to_tokens(prompt)[-1])
    assert tok.decode(response).split() == ["sat", "on"]
    plain = common.encode_record({"prompt": "the cat", "response": "sat on"}, tok)
    assert plain[0][-1] == prompt[-1]
    assert common.encode_record(row, tok, after_prompt=True) == (prompt, response)  # a chat template: unchanged


def test_answer_tokens_after_prompt_read_as_the_prompt_quotes_them():
    """answer_tokens=after_prompt: behind a prompt ending a line, the answer's first name is the token
    a prompt quoting the list shows (no start-of-text space mark); alone, it opens with the marked one."""
    from dllm.eval.tasks import get_task

    tok = dllm.load("dllm-tiny").tokenizer
    item = get_task("parallelbench/waiting_line/copy").items("train", 1)[0]
    row = {"prompt": item.prompt, "response": item.reference}
    prompt, alone = common.encode_record(row, tok)
    prompt2, after = common.encode_record(row, tok, after_prompt=True)
    assert prompt2 == prompt and item.prompt.endswith("\n")
    assert tok.decode(alone) == tok.decode(after) == item.reference and alone != after
    first = item.reference.split('"')[1].split()[0]  # "Tina"
    assert tok.convert_ids_to_tokens(after)[:2] == ['["', first] and first in tok.convert_ids_to_tokens(prompt)
    own = {"prompt": "sort: b a", "response": "a b"}  # a prompt that does not end a line: as before
    assert common.encode_record(own, tok, after_prompt=True) == common.encode_record(own, tok)


def test_two_processes_data_parallel(tmp_path):
    """`torchrun --nproc_per_node 2` runs the recipe unchanged as two data-parallel CPU processes
    (gloo): each takes half of every global batch, the main process alone logs and saves."""
    import shutil

    out = tmp_path / "ddp"
    arch = "{hidden_size: 32, num_layers: 2, num_heads: 4, num_kv_heads: 2, intermediate_size: 64, max_length: 128}"
    r = subprocess.run([shutil.which("torchrun") or "torchrun", "--nproc_per_node", "2", "-m", "dllm.cli", "train",
                        "recipe=mdlm_sft", f"recipe.data={DATA}", f"recipe.output_dir={out}", f"recipe.arch={arch}",
                        "recipe.train.max_steps=2", "recipe.train.batch_size=8", "recipe.train.warmup_steps=1",
                        "recipe.train.log_every=1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("done:") == 2  # both processes ran to the end
    assert len(losses(out)) == 2  # logged once per step, by the main process
    assert dllm.load(out / "final" / "model").family == "llada"


def test_loss_log_drops_a_torn_last_line(tmp_path):
    from dllm.training.common import LossLog

    path = tmp_path / "loss.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    log = LossLog(path, resume_step=2)
    assert [r["step"] for r in log.rows] == [1, 2]
    assert path.read_text().count("\n") == 2


def test_failed_checkpoint_write_leaves_no_temp_folder(tmp_path):
    from dllm.training.common import atomic_dir

    def write(tmp):
        (tmp / "part").write_text("half")
        raise OSError("No space left on device")

    with pytest.raises(OSError):
        atomic_dir(tmp_path / "checkpoint", write)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("knob", ["save_every", "log_every"])
def test_cadence_must_be_positive(tmp_path, knob):
    from dllm.errors import DllmError
    from dllm.training.fit import fit

    with pytest.raises(DllmError, match=f"{knob} must be a positive integer"):
        fit(None, TrainConfig(**{knob: 0}), str(tmp_path))


def test_printable_alphabet_writes_any_text_the_data_never_showed(tmp_path):
    from dllm.training.tokenizer import build_bpe_tokenizer

    texts = ['sort: ["Ann Lee", "Bob Shaw"]'] * 4
    unseen = 'Zoe Quinn\n[7, 8, 9]. {x} ~OUX\n'
    wide = build_bpe_tokenizer(texts, vocab_size=200, alphabet="printable")
    ids = wide(unseen, add_special_tokens=False)["input_ids"]
    assert wide.unk_token_id not in ids and wide.decode(ids) == unseen
    # punctuation and newlines are tokens of their own: a name is one token in a prompt's list and in
    # the answer, so copying a list is copying tokens
    prompt = wide('arrived:\n\n["Bob Shaw", "Ann Lee"]\n\nPlease', add_special_tokens=False)["input_ids"]
    answer = wide('["Bob Shaw", "Ann Lee"]', add_special_tokens=False)["input_ids"]
    assert set(answer) <= set(prompt) and wide.convert_ids_to_tokens(answer)[:3] == ['["', 'Bob', '▁Shaw']
    narrow = build_bpe_tokenizer(texts, vocab_size=200)  # the data's characters only: z, Q, 7, newline are unknown
    assert narrow.unk_token_id in narrow(unseen, add_special_tokens=False)["input_ids"]
    with pytest.raises(DllmError, match="alphabet must be one of"):
        run(DATA, str(tmp_path / "x"), arch=ARCH, alphabet="ascii", train=dict(max_steps=1))


def test_task_groups_in_data_specs():
    rows = common.task_rows("tasks:parallelbench+waiting_line/copy=3:2")
    names = [r["task"] for r in rows]
    assert names.count("parallelbench/puzzle/sudoku_n4_12") == 2 and names.count("waiting_line/copy") == 3
    assert len({n for n in names if n.startswith("parallelbench/")}) == 12


def test_printable_alphabet_grows_an_existing_model_without_changing_it(tmp_path):
    """init + alphabet=printable + merges: the embedded model's tokenizer gains the characters it lacks
    (newline, '.', 'z', '9', ...) and merges for the text it could not write, as new ids after its
    own; its own tasks (held-out items) tokenize, decode and score exactly as before, and it saves and
    loads in the LLaDA format with the larger vocabulary."""
    from dllm.eval.tasks import get_task
    from dllm.training.mdlm_sft import grow_tokenizer

    base = dllm.load("dllm-tiny-lists")
    rows = list(common.load_records("tasks:parallelbench/waiting_line/copy=40+waiting_line/sort=200:40"))
    grown = grow_tokenizer(dllm.load("dllm-tiny-lists"), "printable", 60, rows)
    n = len(base.tokenizer)
    assert len(grown.tokenizer) > n + 30 and grown.core.lm_head.weight.shape[0] == len(grown.tokenizer)
    pb = rows[0]["prompt"]  # merges learned from the texts the old tokenizer could not write: shorter prompts
    assert len(grown.tokenizer(pb)["input_ids"]) < 0.7 * len(base.tokenizer(pb)["input_ids"])
    text = 'User:\nSort "Zoe Quinn", "Jo Xu".\n[7, 8, 9] ~ {ok}?'
    assert grown.tokenizer.decode(grown.tokenizer(text)["input_ids"]) == text
    assert grown.tokenizer.unk_token_id not in grown.tokenizer(text)["input_ids"]
    # a list reads the same in the prompt and in the answer (merges never join a name to the quotes,
    # brackets or newlines around it): the answer's tokens after its first stand in the prompt in a row
    for row in rows[:40]:
        p, a = common.encode_record(row, grown.tokenizer)
        assert any(p[i:i + len(a) - 1] == a[1:] for i in range(len(p))), grown.tokenizer.convert_ids_to_tokens(a)
    for name in ("waiting_line/sort", "waiting_line/copy", "sudoku/4x4"):
        for item in get_task(name).items("test", 30):
            assert grown.tokenizer(item.prompt)["input_ids"] == base.tokenizer(item.prompt)["input_ids"]
    item = get_task("waiting_line/sort").items("test", 1)[0]
    ids = base.tokenizer(item.prompt)["input_ids"]
    x = torch.tensor([ids + [base.mask_token_id] * 4])
    pos = torch.arange(x.shape[1])[None]
    valid = torch.ones_like(x, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(grown(x, pos, valid)[..., :n], base(x, pos, valid))
    dllm.save_pretrained(grown, tmp_path / "grown")
    again = dllm.load(str(tmp_path / "grown"))
    assert len(again.tokenizer) == len(grown.tokenizer) and again.core.cfg.vocab_size == len(grown.tokenizer)


def test_an_answer_longer_than_the_drawn_canvas_takes_the_next_listed_length():
    from dllm.training.mdlm_sft import canvas_length, run

    lengths = [32, 48, 64, 96, 512]
    assert canvas_length(20, 32, lengths) == 32  # fits the draw: the draw
    assert canvas_length(20, 512, lengths) == 512
    assert canvas_length(50, 32, lengths) == 64  # longer: the smallest listed length that holds it
    assert canvas_length(96, 48, lengths) == 96
    # a recipe whose lengths all hold every answer pads exactly to the draw, as before
    assert all(canvas_length(n, d, [48, 64]) == d for n in (1, 30, 48) for d in (48, 64))
    with pytest.raises(DllmError, match="answer_lengths must be positive with one >= answer_length"):
        run("tasks:waiting_line/copy:4", "/tmp/never", answer_length=96, answer_lengths=[32, 64])


def test_copy_strings_replace_a_fraction_of_each_batch_the_same_way_on_resume(tmp_path):
    from dllm.training.mdlm_sft import MdlmSft, copy_string, gen_for

    model = dllm.load("dllm-tiny-lists")
    recipe = MdlmSft(DATA, common.task_rows(DATA), None, None, None, 0, 32, [32], 128, 0, copy_strings=0.25)
    recipe.setup(model)
    tok = model.tokenizer
    prompt, answer = copy_string(recipe.copy_prompt, recipe.copy_ids, recipe.eos, gen_for(5, 7, 0))
    assert tok.decode(prompt[:len(recipe.copy_prompt)]).strip() == "copy:"
    assert prompt[len(recipe.copy_prompt):] == answer[:-1] and answer[-1] == tok.eos_token_id
    assert 4 <= len(answer) - 1 <= 24 and not set(answer[:-1]) & set(tok.all_special_ids)
    assert copy_string(recipe.copy_prompt, recipe.copy_ids, recipe.eos, gen_for(5, 7, 0)) == (prompt, answer)
    assert copy_string(recipe.copy_prompt, recipe.copy_ids, recipe.eos, gen_for(6, 7, 0)) != (prompt, answer)
    # a step's loss is a function of the step: the same indices and noise give the same loss
    idx = common.batch_indices(len(recipe.examples), 8, 3, seed=0)
    a, _ = recipe.loss(model, idx, common.step_generator(0, 3), "cpu", 3)
    b, _ = recipe.loss(model, idx, common.step_generator(0, 3), "cpu", 3)
    assert torch.equal(a, b) and a > 0
    recipe.copy_strings = 0.0  # the same step without copy strings is another batch
    assert not torch.equal(recipe.loss(model, idx, common.step_generator(0, 3), "cpu", 3)[0], a)
    with pytest.raises(DllmError, match="copy_strings must be a fraction of each batch"):
        run(DATA, str(tmp_path / "x"), arch=ARCH, copy_strings=1.5)


def test_copy_strings_take_the_shortest_canvas_whatever_the_step_drew(monkeypatch):
    from dllm.training import mdlm_sft

    model = dllm.load("dllm-tiny-lists")
    recipe = mdlm_sft.MdlmSft(DATA, common.task_rows(DATA), None, None, None, 0, 32, [32, 512], 128, 0,
                              copy_strings=0.5)
    recipe.setup(model)
    seen = []
    monkeypatch.setattr(mdlm_sft.common, "collate", lambda batch, *a, **k: seen.append(batch) or collate(batch, *a))
    for step in range(8):  # both lengths get drawn
        recipe.loss(model, common.batch_indices(len(recipe.examples), 4, step, seed=0), common.step_generator(0, step),
                    "cpu", step)
    copies = [len(a) for b in seen for q, a in b if q[:len(recipe.copy_prompt)] == recipe.copy_prompt]
    others = [len(a) for b in seen for q, a in b if q[:len(recipe.copy_prompt)] != recipe.copy_prompt]
    assert len(copies) == len(others) == 16 and set(copies) == {32} and set(others) == {32, 512}


def test_resume_with_other_settings_is_refused_and_cadence_may_change(tmp_path):
    kw = dict(arch=ARCH, answer_length=32, train=dict(max_steps=2, batch_size=8, save_every=1, warmup_steps=1))
    out = tmp_path / "r"
    run(DATA, str(out), **kw)
    with pytest.raises(DllmError, match=r"other settings \(train\.lr: 0\.001 there, 0\.0005 here"):
        run(DATA, str(out), **{**kw, "train": {**kw["train"], "lr": 5e-4}})
    with pytest.raises(DllmError, match=r"answer_length: 32 there, 48 here"):
        run(DATA, str(out), **{**kw, "answer_length": 48})
    with pytest.raises(DllmError, match=r"data: .* there, .* here"):
        run("tasks:waiting_line/copy:64", str(out), **kw)
    recorded = json.loads((out / "checkpoint" / "recipe.json").read_text())
    assert recorded["train"]["lr"] == 1e-3 and "save_every" not in recorded["train"]
    run(DATA, str(out), **{**kw, "train": {**kw["train"], "save_every": 5, "log_every": 3}})  # cadence only: resumes
    # a checkpoint from before copy_strings was recorded ran without copy strings: adding them is another run
    del recorded["copy_strings"]
    (out / "checkpoint" / "recipe.json").write_text(json.dumps(recorded))
    with pytest.raises(DllmError, match=r"copy_strings: 0\.0 there, 0\.5 here"):
        run(DATA, str(out), **{**kw, "copy_strings": 0.5})
    # a copy run from before copies took the shortest canvas padded them as the others: refused as well
    (out / "checkpoint" / "recipe.json").write_text(json.dumps({**recorded, "copy_strings": 0.5}))
    with pytest.raises(DllmError, match=r'copy_canvas: "drawn" there, "shortest" here'):
        run(DATA, str(out), **{**kw, "copy_strings": 0.5})


# Started in a subprocess: SIGTERM once two loss rows are logged (the loop is running by then).
SIGTERM_RUN = """
import sys
from dllm.training.mdlm_sft import run
run({data!r}, {out!r}, arch={arch!r}, train=dict(max_steps=100000, batch_size=8, save_every=100000, log_every=1))
"""


def test_sigterm_finishes_the_step_and_writes_a_checkpoint(tmp_path):
    import signal
    import time

    out = tmp_path / "s"
    p = subprocess.Popen([sys.executable, "-c", SIGTERM_RUN.format(data=DATA, out=str(out), arch=ARCH)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        if (out / "loss.jsonl").exists() and len((out / "loss.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    text, _ = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, text[-500:]
    assert "checkpoint saved" in text and "the same command resumes it" in text
    step = json.loads((out / "checkpoint" / "recipe.json").read_text())["step"]
    assert step == len(losses(out)) >= 2  # every finished step is kept, none half-written
    assert torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=True)["step"] == step
    assert not (out / "final").exists()
    dllm.load(out / "checkpoint" / "model")


def test_block_expansion_starts_as_the_old_model_and_trains_only_what_is_new(tmp_path):
    """expand_layers (training/expand.py, LLaMA Pro): new zero-output blocks leave the logits exactly as
    they were; a run then changes only the new blocks and the new tokens' rows (AdamW's weight decay
    included), on a fresh start and on a resume alike, and saves a plain LLaDA-format model."""
    from dllm.training.expand import expand, new_layer_positions
    from dllm.training.mdlm_sft import grow_tokenizer, run

    assert new_layer_positions(6, 3) == [2, 5, 8] and new_layer_positions(6, 2) == [3, 7]
    base = dllm.load("dllm-tiny-lists")
    n = len(base.tokenizer)
    rows = list(common.load_records("tasks:waiting_line/sort:8"))
    grown = expand(grow_tokenizer(dllm.load("dllm-tiny-lists"), "printable", 0, rows, "random", seed=0), 3, seed=0)
    assert grown.core.cfg.num_layers == 9 and [b.self_attn.layer for b in grown.core.layers] == list(range(9))
    ids = base.tokenizer(rows[0]["prompt"])["input_ids"]
    x = torch.tensor([ids + [base.mask_token_id] * 16])
    pos, valid = torch.arange(x.shape[1])[None], torch.ones_like(x, dtype=torch.bool)
    with torch.no_grad():
        old, new = base(x, pos, valid), grown(x, pos, valid)
    assert torch.equal(new[..., :n], old)
    assert torch.equal(new.argmax(-1), old.argmax(-1))  # new tokens' logits start near zero: greedy text unchanged

    data, out = "tasks:waiting_line/sort:8", tmp_path / "x"
    kw = dict(init="dllm-tiny-lists", alphabet="printable", new_rows="random", expand_layers=3,
              train=dict(max_steps=4, batch_size=4, save_every=1, log_every=1, warmup_steps=1, lr=1e-2,
                         weight_decay=0.5))
    code = KILL_AFTER_CHECKPOINT_3 + f"run({data!r}, {str(out)!r}, **{kw!r})"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-500:]  # killed right after the step-3 checkpoint
    run(data, str(out), **kw)  # the resume freezes the same parameters again
    straight = run(data, str(tmp_path / "s"), **kw)
    assert losses(out) == pytest.approx(losses(straight), rel=1e-5, abs=1e-6)
    trained = dllm.load(str(out / "final" / "model"))
    t, b = trained.core, base.core
    assert t.cfg.num_layers == 9
    for i, old_i in zip((0, 1, 3, 4, 6, 7), range(6)):  # old blocks: bit for bit
        for (k, p), q in zip(t.layers[i].state_dict().items(), b.layers[old_i].state_dict().values()):
            assert torch.equal(p, q), (i, k)
    assert torch.equal(t.norm.weight, b.norm.weight)
    for name in ("embed_tokens", "lm_head"):
        assert torch.equal(getattr(t, name).weight[:n], getattr(b, name).weight)
        assert not torch.equal(getattr(t, name).weight[n:], getattr(grown.core, name).weight[n:])
    assert t.layers[2].self_attn.o_proj.weight.abs().sum() > 0  # the new blocks learned
    # a next stage from the shipped model (expanded_from): no blocks added, the same ones frozen
    # (old_rows=unseen: the rows of old tokens the sort rows never use train too, the used ones stay)
    nxt = run(data, str(tmp_path / "n"), init=str(out / "final" / "model"), expanded_from="dllm-tiny-lists",
              expand_layers=3, distill=1.0, old_rows="unseen", train=dict(kw["train"], max_steps=2))
    n2 = dllm.load(str(nxt / "final" / "model")).core
    assert n2.cfg.num_layers == 9 and len(n2.embed_tokens.weight) == len(t.embed_tokens.weight)
    for i in (0, 1, 3, 4, 6, 7):
        assert all(torch.equal(p, q) for p, q in zip(n2.layers[i].parameters(), t.layers[i].parameters()))
    used = {i for r in common.load_records(data) for part in common.encode_record(r, base.tokenizer) for i in part}
    used |= {base.tokenizer.eos_token_id, base.mask_token_id}
    for name in ("embed_tokens", "lm_head"):
        w, w0 = getattr(n2, name).weight[:n], getattr(b, name).weight
        same = (w == w0).all(-1)  # [V_old]
        assert all(same[i] for i in used) and not same.all()
    # the unused 'Tina' reads as the used '▁"Tina' (its input row), a token with no twin as it was
    from dllm.training.expand import copy_twin_rows, marked_twins

    vocab = base.tokenizer.get_vocab()
    tina, marked = vocab["Tina"], vocab["\u2581\"Tina"]
    twins = marked_twins(base.tokenizer, [tina, vocab["["]], {marked})
    assert twins == {tina: marked}
    fresh = dllm.load("dllm-tiny-lists").core
    copy_twin_rows(fresh, twins)
    w, w0 = fresh.embed_tokens.weight, b.embed_tokens.weight
    assert torch.equal(w[tina], w0[marked]) and torch.equal(w[vocab["["]], w0[vocab["["]])
    assert torch.equal(fresh.lm_head.weight, b.lm_head.weight)  # the output rows stay
    with pytest.raises(DllmError, match="old_rows must be 'frozen' or 'unseen'"):
        run(data, str(tmp_path / "h"), init="dllm-tiny-lists", old_rows="unseen")
    with pytest.raises(DllmError, match="answer_tokens must be 'alone' or 'after_prompt'"):
        run(data, str(tmp_path / "h"), init="dllm-tiny-lists", answer_tokens="joined")
    assert not torch.equal(n2.layers[5].mlp.down_proj.weight, t.layers[5].mlp.down_proj.weight)
    with pytest.raises(DllmError, match="expanded_from names the model init was expanded from"):
        run(data, str(tmp_path / "v"), init="dllm-tiny-lists", expanded_from="dllm-tiny-lists")
    with pytest.raises(DllmError, match="expand_layers must be a non-negative integer, given with init"):
        run("tasks:waiting_line/sort:8", str(tmp_path / "y"), arch=ARCH, expand_layers=2)
    with pytest.raises(DllmError, match=r"expand_layers must be an integer in \[0, 6\]"):
        run("tasks:waiting_line/sort:8", str(tmp_path / "z"), init="dllm-tiny-lists", expand_layers=7)
    with pytest.raises(DllmError, match="new_rows must be 'pieces' or 'random'"):
        run("tasks:waiting_line/sort:8", str(tmp_path / "w"), init="dllm-tiny-lists", new_rows="zeros")


def test_distillation_holds_the_model_to_its_init_on_the_rows_init_can_read(tmp_path):
    """distill (training/mdlm_sft.py distill_kl): KL(teacher || model) over the chosen positions, the
    teacher's vocabulary being the model's first ids (gained ids have teacher probability 0); zero for
    the teacher itself; a run logs it and refuses a resume with another weight."""
    from dllm.training.mdlm_sft import distill_kl, grow_tokenizer, run

    base = dllm.load("dllm-tiny-lists")
    rows = list(common.load_records("tasks:waiting_line/sort:8"))
    grown = grow_tokenizer(dllm.load("dllm-tiny-lists"), "printable", 0, rows, "random", seed=0)
    mask = [base.mask_token_id] * 8
    ids = [base.tokenizer(r["prompt"], add_special_tokens=False)["input_ids"][:6] + mask for r in rows[:3]]
    x = torch.tensor(ids)
    pos, valid = torch.arange(x.shape[1]).expand_as(x), torch.ones_like(x, dtype=torch.bool)
    where = x == base.mask_token_id
    where[1] = False  # a row not taught: left out
    with torch.no_grad():
        assert distill_kl(base, base(x, pos, valid), x, pos, valid, where) == pytest.approx(0.0, abs=1e-6)
        logits = grown(x, pos, valid) + torch.randn(3, x.shape[1], len(grown.tokenizer)) * 0.5
        kl = distill_kl(base, logits, x, pos, valid, where)
        target = torch.zeros_like(logits)
        target[..., : len(base.tokenizer)] = torch.softmax(base(x, pos, valid), -1)
        ref = F.kl_div(torch.log_softmax(logits, -1), target, reduction="none").sum(-1)  # [B, L]
    assert kl == pytest.approx(float(ref[where].mean()), rel=1e-5)
    assert kl > 0

    data, out = "tasks:waiting_line/sort:8", tmp_path / "d"
    kw = dict(init="dllm-tiny-lists", alphabet="printable", new_rows="random", expand_layers=2, distill=1.0,
              train=dict(max_steps=2, batch_size=4, save_every=1, log_every=1, warmup_steps=1))
    run(data, str(out), **{**kw, "train": {**kw["train"], "max_steps": 1}})
    logged = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert logged and all(row["kl"] >= 0 for row in logged)
    with pytest.raises(DllmError, match="distill"):  # a resume with another weight is refused
        run(data, str(out), **{**kw, "distill": 2.0})
    with pytest.raises(DllmError, match="distill must be a non-negative weight, given with init"):
        run(data, str(tmp_path / "e"), arch=ARCH, distill=1.0)


def test_the_shipped_default_keeps_its_parent_frozen():
    """dllm-tiny's card claims: block expansion of dllm-tiny-lists (new blocks at 2, 5, 8), whose six blocks
    and final norm are bit for bit the parent's, and 152 of the parent's 400 token rows (the rows its own
    tasks use; old_rows: unseen trained the other 248)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from dllm.loading import source

    new = load_file(str(Path(source("dllm-tiny")) / "model.safetensors"))
    old = load_file(str(Path(source("dllm-tiny-lists")) / "model.safetensors"))
    from dllm.training.expand import new_layer_positions

    added = new_layer_positions(6, 3)  # [2, 5, 8]
    moved = [i for i in range(9) if i not in added]  # old block i -> new block moved[i]
    for key, w in old.items():
        parts = key.split(".")
        if "blocks" in parts:
            k = parts.index("blocks") + 1
            parts[k] = str(moved[int(parts[k])])
        v = new[".".join(parts)]
        if key in ("model.transformer.wte.weight", "model.transformer.ff_out.weight"):
            assert int((v[: w.shape[0]] == w).all(dim=1).sum()) == 152, key
        else:
            assert torch.equal(v, w), key
