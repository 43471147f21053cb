"""ParallelBench tasks on our own generated items: the benchmark's prompts and item layout, its
lenient and strict scores on adversarial formatting, reading items from a folder, bad input."""

import json
import subprocess
import sys

import pytest

from dllm.errors import DllmError
from dllm.eval.tasks import (
    PARALLELBENCH_N15_TASKS,
    PARALLELBENCH_TASKS,
    get_task,
    parallelbench as pb,
    task_list,
    use_parallelbench_items,
)
from dllm.eval.tasks.pb_scoring import parse_list, parse_sudoku, score
from dllm.eval.tasks.waiting_line import parse_last_list

ALL = PARALLELBENCH_TASKS + PARALLELBENCH_N15_TASKS


@pytest.fixture(autouse=True)
def _generated_items():
    use_parallelbench_items()
    yield
    use_parallelbench_items()


def test_registry_and_groups():
    assert len(PARALLELBENCH_TASKS) == 12 and len(PARALLELBENCH_N15_TASKS) == 10
    assert task_list("parallelbench") == PARALLELBENCH_TASKS
    assert task_list("parallelbench_n15") == PARALLELBENCH_N15_TASKS
    assert {"parallelbench/puzzle/latin_square_n4", "parallelbench/puzzle/sudoku_n4_12"} <= set(PARALLELBENCH_TASKS)
    assert all(get_task(t).provenance == "official format" for t in ALL)
    assert get_task("waiting_line/copy").provenance == "ours"


@pytest.mark.parametrize("name", ALL)
def test_references_score_one_lenient_and_strict(name):
    task = get_task(name)
    for item in task.items("test", 8):
        assert task.scores(item, item.reference) == {"score": 1.0, "score_strict": 1.0}, item.reference
        assert task.score(item, "I do not know") == 0.0
        json.dumps(item.meta)


@pytest.mark.parametrize("name", ["parallelbench/waiting_line/shuffle", "parallelbench/puzzle/sudoku_n4_12"])
def test_test_set_fixed_and_disjoint_from_train(name):
    task = get_task(name)
    test = task.items("test", 100)
    assert task.items("test", 100) == test and task.items("test", 5) == test[:5]
    query = lambda it: it.meta["messages"][-1]["content"]  # noqa: E731
    assert len({query(it) for it in test}) == 100
    train = task.items("train", 300)
    assert not {query(it) for it in train} & {query(it) for it in test}
    with pytest.raises(DllmError, match="n must be <= 100"):
        task.items("test", 101)


def test_waiting_line_items_follow_the_benchmark():
    items = get_task("parallelbench/waiting_line/insert_index").items("test", 8)
    assert [it.meta["metadata"]["length"] for it in items] == [3, 4, 5, 6, 3, 4, 5, 6]
    for it in items:
        msgs = it.meta["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant", "user"]  # one worked example, then the item
        user = msgs[-1]["content"]
        assert user.startswith("You are managing a waiting line at a customer service desk.\n\nA new person \"")
        assert user.endswith("Please put the new person at the specified position and provide only the final list.")
        source = json.loads(user.split("\n\n")[2])
        word, index = it.meta["metadata"]["word"], it.meta["metadata"]["index"]
        assert f'"{word}" is inserted into the line at position {index}:' in user
        assert json.loads(it.reference) == source[:index] + [word] + source[index:]  # 0-based
        assert msgs[1]["content"].startswith('["') and it.reference == pb.list_text(json.loads(it.reference))
        assert it.prompt == pb.plain_text(msgs) and it.prompt.endswith("\n\nAssistant:\n")
    sort = get_task("parallelbench/waiting_line/sort").items("test", 3)
    for it in sort:
        assert json.loads(it.reference) == sorted(json.loads(it.meta["messages"][-1]["content"].split("\n\n")[2]))
    n15 = get_task("parallelbench/waiting_line_n15/copy").items("test", 3)
    assert all(len(json.loads(it.reference)) == 15 == len(set(json.loads(it.reference))) for it in n15)


def test_puzzle_items_follow_the_benchmark():
    sudoku = get_task("parallelbench/puzzle/sudoku_n4_12").items("test", 5)
    for it in sudoku:
        user = it.meta["messages"][-1]["content"]
        assert user.startswith("Fill the positions where the values are 0 in a 4x4 grid") and user.endswith("Output:\n")
        grid = user.split("Input:\n")[1].split("\nOutput:")[0].split("\n")
        assert len(grid) == 4 and all(len(r) == 4 for r in grid) and sum(r.count("0") for r in grid) == 4
        assert it.reference.count("\n") == 3 and parse_sudoku(it.reference, strict=True)
    latin = get_task("parallelbench/puzzle/latin_square_n4").items("test", 5)
    for it in latin:
        symbols = it.meta["answer"]["symbols"]
        assert it.meta["messages"][-1]["content"] == (f"Generate a Latin square of size 4 with the symbols "
                                                      f"[{', '.join(symbols)}]. Only output the final result as CSV.")
        assert [len(r.split(",")) for r in it.reference.split("\n")] == [4, 4, 4, 4]


LIST = ["Ann Lee", "Bob Stone", "Cara Hill"]


@pytest.mark.parametrize("output, lenient, strict, ours", [
    ('["Ann Lee", "Bob Stone", "Cara Hill"]', 1, 1, 1),
    ('The final list: ["Ann Lee", "Bob Stone", "Cara Hill"]', 1, 1, 1),
    ("['Ann Lee', 'Bob Stone', 'Cara Hill']", 0, 0, 1),  # single quotes stay in the items
    ('[\n  "Ann Lee",\n  "Bob Stone",\n  "Cara Hill"\n]', 0, 0, 1),  # the newline stays in the item
    ('["Ann Lee", "Bob Stone", "Cara Hill",]', 1, 0, 0),  # an empty item is dropped
    ('["Ann Lee", "Bob Stone", "Cara Hill"', 1, 0, 0),  # no "]": read to the end
    ('"Ann Lee", "Bob Stone", "Cara Hill"]', 1, 0, 0),  # no "[": read from the start
    ('["Ann Lee","Bob Stone","Cara Hill"]', 1, 0, 1),  # strict needs ", "
    ("[Ann Lee, Bob Stone, Cara Hill]", 1, 0, 1),  # strict needs double quotes
    ('["Ann Lee", "Bob Stone"] then ["Ann Lee", "Bob Stone", "Cara Hill"]', 1, 1, 1),  # the last list
    ('["Ann Lee", "Bob Stone", "Cara Hill"] done.', 1, 1, 1),
])
def test_lenient_and_strict_reading(output, lenient, strict, ours):
    got = score("list_match_score", output, pb.list_text(LIST))
    assert got == {"score": float(lenient), "score_strict": float(strict)}
    assert (parse_last_list(output) == LIST) == bool(ours)  # dllm's own waiting_line reading differs


def test_parse_list_rules():
    assert parse_list('["a", "b",,  , "c"]') == ["a", "b", "c"]
    assert parse_list("no list at all") == ["no list at all"] and parse_list("no list", strict=True) is None
    assert parse_list("[]") == [] and parse_list("[]", strict=True) is None
    assert parse_list('["a "b""]', strict=True) is None


def test_many_answer_tasks_accept_any_valid_edit():
    src = {"input": LIST}
    assert score("list_shuffle_score", pb.list_text(LIST[::-1]), src)["score_strict"] == 1.0
    assert score("list_shuffle_score", pb.list_text(LIST), src)["score"] == 0.0  # must differ from the input
    ins = {"input": LIST, "word": "Dan Fox"}
    for pos in range(4):
        assert score("list_random_insert_score", pb.list_text(LIST[:pos] + ["Dan Fox"] + LIST[pos:]), ins)["score"] == 1
    assert score("list_random_insert_score", pb.list_text(LIST + ["Eve Ray"]), ins)["score"] == 0
    for pos in range(3):
        assert score("list_random_remove_score", pb.list_text(LIST[:pos] + LIST[pos + 1:]), src)["score"] == 1
        out = list(LIST)
        out[pos] = "Dan Fox"
        assert score("list_random_replace_score", pb.list_text(out), ins)["score_strict"] == 1
    assert score("list_random_remove_score", pb.list_text(LIST[1:][::-1]), src)["score"] == 0
    assert score("list_random_replace_score", pb.list_text(["Dan Fox", "Dan Fox", "Cara Hill"]), ins)["score"] == 0


def test_grid_reading():
    ref = "1342\n2431\n4123\n3214"
    assert score("sudoku_score", ref, ref) == {"score": 1.0, "score_strict": 1.0}
    assert score("sudoku_score", "1342 2431 4123 3214", ref) == {"score": 0.0, "score_strict": 0.0}  # one line
    assert score("sudoku_score", "1 3 4 2\n2,4,3,1\n4123\n\n3214\n", ref) == {"score": 1.0, "score_strict": 0.0}
    assert score("sudoku_score", "Output:\n1342\n2431\n4123\n3214", ref)["score"] == 1.0  # other lines ignored
    assert score("sudoku_score", "1342\n2431\n4123\n3241", ref)["score"] == 0.0  # must be the solution
    sym = {"symbols": ["H", "4", "C", "A"]}
    square = "H,4,C,A\n4,C,A,H\nC,A,H,4\nA,H,4,C"
    assert score("latin_square_score", square, sym) == {"score": 1.0, "score_strict": 1.0}  # any valid square
    assert score("latin_square_score", "Sure:\n" + square.replace(",", ", "), sym)["score"] == 1.0
    assert score("latin_square_score", square.replace("\n", " "), sym)["score"] == 0.0  # one line
    assert score("latin_square_score", square.replace("A,H,4,C", "A,4,H,C"), sym)["score"] == 0.0  # columns repeat
    assert score("latin_square_score", square, {**sym, "first_row": ["4", "C", "A", "H"]})["score"] == 0.0


def test_reading_items_from_a_folder(tmp_path):
    names = ["parallelbench/waiting_line/replace_random", "parallelbench/puzzle/sudoku_n4_12"]
    ours = {n: get_task(n).items("test", 5) for n in names}
    pb.write_items([get_task(n) for n in names], tmp_path / "test", n=5)
    assert (tmp_path / "test" / "waiting_line" / "replace_random.jsonl").is_file()
    assert (tmp_path / "test" / "puzzle" / "task_config.yaml").is_file()
    for root in (tmp_path / "test", tmp_path):  # the split folder, or the folder above it
        assert use_parallelbench_items(data_dir=root) == str(root.resolve())
        for n in names:
            task = get_task(n)
            assert task.provenance == "official items"
            read = task.items("test", 5)
            assert [(i.prompt, i.reference, i.meta["answer"]) for i in read] == \
                   [(i.prompt, i.reference, i.meta["answer"]) for i in ours[n]]
            assert all(task.score(i, i.reference) == 1.0 for i in read)
    # the prompt beside the items applies
    config = tmp_path / "test" / "puzzle" / "task_config.yaml"
    config.write_text(config.read_text().replace("Fill the positions", "Please fill the positions"))
    use_parallelbench_items(data_dir=tmp_path / "test")
    item = get_task("parallelbench/puzzle/sudoku_n4_12").items("test", 1)[0]
    assert item.meta["messages"][0]["content"].startswith("Please fill") and item.prompt.count("Please fill") == 2


def test_hub_rows_in_the_hub_layout():
    spec = get_task("parallelbench/waiting_line/insert_random").spec
    records = get_task(spec.name).generated_records("test", 3)
    rows = [{"input": json.dumps(r["input"]), "answer": json.dumps(r["answer"]),
             "output_format": r.get("output_format"), "metadata": json.dumps(r["metadata"]),
             "task_name": "waiting_line/insert_random", "prompt": spec.prompt, "metric": spec.metric} for r in records]
    got, prompt, metric = pb.records_from_rows(rows, "hub[waiting_line-insert_random]", spec)
    assert got == [json.loads(json.dumps(r)) for r in records] and (prompt, metric) == (spec.prompt, spec.metric)
    rows[1]["answer"] = '"not a dict"'
    with pytest.raises(DllmError, match=r"^hub\[waiting_line-insert_random\] row 1: 'answer' needs the 'input' list$"):
        pb.records_from_rows(rows, "hub[waiting_line-insert_random]", spec)


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_bad_item_files(tmp_path):
    task = get_task("parallelbench/waiting_line/insert_index")
    pb.write_items([task], tmp_path, n=3)
    path = tmp_path / "waiting_line" / "insert_index.jsonl"
    good = path.read_text().splitlines()
    cases = [
        ('{"input": {"context": "[]"', r"insert_index\.jsonl:2: not a JSON object"),
        ('{"input": {"context": "[]"}}', r"insert_index\.jsonl:2: 'answer' must be the reference list text"),
        ('{"input": {"context": "[\\"A B\\"]"}, "answer": "[\\"A B\\"]"}',
         r"insert_index\.jsonl:2: the prompt cannot be filled from 'input' \(KeyError: 'word'\)"),
        ('["a list"]', r"insert_index\.jsonl:2: each line needs an 'input' object"),
    ]
    for bad, pattern in cases:
        path.write_text("\n".join([good[0], bad, good[2]]) + "\n")
        use_parallelbench_items(data_dir=tmp_path)
        with pytest.raises(DllmError, match=pattern) as e:
            task.items("test", 1)
        assert str(path) in _one_line(e)
    path.write_text("\n".join(good) + "\n")
    use_parallelbench_items(data_dir=tmp_path)
    with pytest.raises(DllmError, match="a test set"):
        task.items("train", 1)
    with pytest.raises(DllmError, match=r"n must be <= 3"):
        task.items("test", 4)
    with pytest.raises(DllmError, match=r"no items for parallelbench/puzzle/latin_square_n4 \(looked for .*"
                                        r"puzzle/latin_square_n4\.jsonl\)") as e:
        get_task("parallelbench/puzzle/latin_square_n4").items("test", 1)
    _one_line(e)


def test_bad_source_settings(tmp_path):
    with pytest.raises(DllmError, match=r"^data_dir .*nope is not a folder") as e:
        use_parallelbench_items(data_dir=tmp_path / "nope")
    _one_line(e)
    with pytest.raises(DllmError, match="not both"):
        use_parallelbench_items(data_dir=tmp_path, hub_dataset="org/name")
    with pytest.raises(DllmError, match=r"^task must be one of \[.*\], got 'parallelbench/nope'$"):
        task_list(["parallelbench/nope"])


def test_eval_cli_bad_data_dir_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dllm.cli", "eval", "tasks=parallelbench", f"data_dir={tmp_path}/nope",
                        f"output={tmp_path}/e.jsonl"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nope is not a folder" in r.stderr, r.stderr


CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")


def test_eval_builds_chat_prompts_and_reports_both_scores():
    """Through the model's chat template when it has one, else the plain rendering; a batch may mix
    chat items with dllm's own; the summary names provenance and puts strict beside lenient."""
    from dllm.eval.runner import evaluate, markdown_table, prompts_of
    from dllm.generate import encode_prompts
    from dllm.samplers import LLaDASampler
    from dllm.testing import tiny_model

    model = tiny_model("dream", seed=3)
    tok = model.tokenizer
    items = (get_task("parallelbench/waiting_line/copy").items("test", 2)
             + get_task("waiting_line/copy").items("test", 1))
    plain = prompts_of(model, items)
    assert plain[0] == tok(items[0].prompt)["input_ids"] and plain[2] == encode_prompts(tok, [items[2].prompt])[0]
    tok.chat_template = CHAT
    chat = prompts_of(model, items)
    text = tok.apply_chat_template(items[0].meta["messages"], add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>user You are managing") and text.endswith("<|im_start|>assistant ")
    assert chat[0] == tok(text, add_special_tokens=False)["input_ids"]
    assert chat[0] != plain[0] and tok.convert_tokens_to_ids("<|im_start|>") in chat[0]
    per_task = evaluate(model, LLaDASampler(), ["parallelbench/waiting_line/copy", "waiting_line/copy"], 2,
                        dict(gen_length=16, block_length=16), batch_size=4, progress=False)
    pbs, ours = per_task["parallelbench/waiting_line/copy"], per_task["waiting_line/copy"]
    assert pbs["provenance"] == "official format" and ours["provenance"] == "ours"
    assert "strict_accuracy" in pbs and "strict_accuracy" not in ours
    table = markdown_table(per_task)
    assert "| task | source | acc % | strict acc % |" in table
    assert "| parallelbench/waiting_line/copy | official format |" in table and "| waiting_line/copy | ours |" in table


def test_bench_reads_the_benchmark_items_from_data_dir(tmp_path):
    """`dllm bench` takes data_dir like `dllm eval`: the items it decodes are the folder's, and a
    missing folder is one line."""
    task = get_task("parallelbench/waiting_line/copy")
    pb.write_items([task], tmp_path / "items", n=2)
    r = subprocess.run([sys.executable, "-m", "dllm.cli", "bench", "tasks=[parallelbench/waiting_line/copy]",
                        f"data_dir={tmp_path}/nope", f"out_dir={tmp_path}/b"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nope is not a folder" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "dllm.cli", "bench", "tasks=[parallelbench/waiting_line/copy]",
                        f"data_dir={tmp_path}/items", "n_items=2", "decode.gen_length=16", "decode.block_length=16",
                        "~samplers.topk_2", "~samplers.topk_4", "~samplers.dream_margin", f"out_dir={tmp_path}/b"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert rows and (tmp_path / "b" / "bench.md").is_file()
    r = subprocess.run([sys.executable, "-m", "dllm.cli", "bench", "tasks=[parallelbench/waiting_line/copy]",
                        f"data_dir={tmp_path}/items", "n_items=3", f"out_dir={tmp_path}/c"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "n must be <= 2" in r.stderr, r.stderr  # the folder's two items are what it reads


def test_the_default_model_writes_the_benchmark_and_its_parent_cannot():
    """dllm-tiny (issue 17) reads and writes every ParallelBench prompt and reference exactly (no unknown
    token, decode(encode(text)) == text); dllm-tiny-lists, the default before it, loses characters."""
    from dllm.loading import load

    new, old = load("dllm-tiny").tokenizer, load("dllm-tiny-lists").tokenizer
    texts = []
    for name in PARALLELBENCH_TASKS:
        for item in get_task(name).items("test", 5):
            texts += [m["content"] for m in item.meta["messages"]] + [item.prompt, item.reference]
    for text in texts:
        ids = new(text, add_special_tokens=False)["input_ids"]
        assert new.unk_token_id not in ids and new.decode(ids) == text, text
    assert any(old.decode(old(t, add_special_tokens=False)["input_ids"]) != t for t in texts)
