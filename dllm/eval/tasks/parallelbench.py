"""ParallelBench as the benchmark runs it (Kang et al., arXiv 2510.04767; furiosa-ai/ParallelBench):
its chat prompts, its item layout and its lenient and strict scores (pb_scoring.py).

Tasks, named ``parallelbench/<group>/<task>`` after the benchmark's files:

* ``waiting_line/<op>`` for the ten list edits (copy, reverse, sort, shuffle, insert/remove/replace
  at an index or at random) on lists of 3-6 full names; ``waiting_line_n15/<op>``: 15 names;
* ``puzzle/latin_square_n4``: any 4x4 Latin square over 4 given symbols, as comma-separated lines;
* ``puzzle/sudoku_n4_12``: a 4x4 sudoku with its blanks written 0, one row per line.

words_to_sentence is left out: its score needs a grammar check by LanguageTool (a Java server).

A prompt is the benchmark's chat: one worked example (a user turn and the assistant's answer), then
the instruction as the user turn, rendered by the model's chat template (``chat_ids``), or, for a
tokenizer without one, as the plain text of ``plain_text`` (the item's ``prompt``).

Items. By default our own: generated in the published JSONL layout (one record per line:
``input`` with the template's fields and ``icl_examples``, ``answer`` (the list text, or for the
random edits a dict with the input list, the word and an example), ``output_format``,
``metadata``), with our own names (names.py) and generators, 100 test items per task with the list
lengths cycling 3, 4, 5, 6 (any prefix is balanced; the benchmark's files go by length).
Indices are 0-based and ``sort`` means the order of the full names (first name first), both as in
the published items. The benchmark's own items are not ours to ship: ``configure(data_dir=...)``
reads them from the user's copy (a folder holding ``<group>/<task>.jsonl`` and, beside them,
``task_config.yaml`` whose prompt and metric then apply), or ``configure(hub_dataset=...)`` from a
Hugging Face dataset in the benchmark's hub layout (one config per task).

Provenance, named in ``dllm eval``'s summary: "official format" (our items, the benchmark's
prompts and scores) or "official items" (the user's copy of the benchmark's items).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from dllm.errors import DllmError, check

from . import pb_scoring
from .base import Item, Task, check_split, stable_seed
from .grid_puzzles import LATIN_SQUARES, SUDOKUS
from .names import FULL_NAMES

_DESK = "You are managing a waiting line at a customer service desk.\n\n"
_ONLY = "and provide only the final list."
# The benchmark's wording (task_configs/test/waiting_line.yaml; Table 3 of the paper).
WAITING_LINE_PROMPTS = {
    "copy": _DESK + "You need to record the following people in the order they arrived:\n\n{context}\n\n"
                    f"Please copy the list exactly {_ONLY}",
    "reverse": _DESK + "The previous staff member put the waiting line in the wrong order.\n\nPlease reverse the "
                       "order of the following people in the waiting line to correct it:\n\n{context}\n\n"
                       f"Please reverse the order of the list {_ONLY}",
    "sort": _DESK + "The following people should be organized alphabetically by last name for efficient "
                    f"processing:\n\n{{context}}\n\nPlease sort the list in alphabetical order {_ONLY}",
    "shuffle": _DESK + "The waiting line should be randomly shuffled to ensure fair service distribution:\n\n"
                       f"{{context}}\n\nPlease randomly shuffle the list {_ONLY}\n\n"
                       "Ensure the sequence is different from the original.",
    "insert_index": _DESK + 'A new person "{word}" is inserted into the line at position {index}:\n\n{context}\n\n'
                            f"Please put the new person at the specified position {_ONLY}",
    "insert_random": _DESK + 'A new person "{word}" is inserted into the line at a random position:\n\n'
                             f"{{context}}\n\nPlease put the new person in the random position {_ONLY}",
    "remove_index": _DESK + "The person at position {index} has left the waiting line:\n\n{context}\n\n"
                            f"Please remove the person at the specified position {_ONLY}",
    "remove_random": _DESK + "One person has left the waiting line:\n\n{context}\n\n"
                             f"Please remove a random person {_ONLY}",
    "replace_index": _DESK + 'The person at position {index} must be replaced with "{word}":\n\n{context}\n\n'
                             f'Please replace the person at the specified position with "{{word}}" {_ONLY}',
    "replace_random": _DESK + 'One person in the waiting line must be replaced with "{word}":\n\n{context}\n\n'
                              f'Please replace one random person with "{{word}}" {_ONLY}',
}
# The published puzzle items' wording (data/output/test/puzzles/task_config.yaml).
LATIN_SQUARE_PROMPT = ("Generate a Latin square of size {size} with the symbols {symbols}. "
                       "Only output the final result as CSV.")
SUDOKU_PROMPT = ("Fill the positions where the values are 0 in a 4x4 grid with digits 1-4 so that each column, each "
                 "row, and each of the four 2x2 subgrids that compose the grid contains all of the digits from 1 to "
                 "4.\n\nInput:\n{sudoku}\nOutput:\n")

OPS = tuple(WAITING_LINE_PROMPTS)
_METRIC = {"shuffle": "list_shuffle_score", "insert_random": "list_random_insert_score",
           "remove_random": "list_random_remove_score", "replace_random": "list_random_replace_score"}
MASK_TEXT = "[MASK]"  # the benchmark's output_format placeholder
SYMBOLS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")  # latin-square symbols are drawn from these
SUDOKU_HOLES = 4  # sudoku_n4_12: 12 of the 16 cells given
TEST_SIZE = 100
PROVENANCE = {"generated": "official format", "official": "official items"}


@dataclass(frozen=True)
class Spec:
    group: str  # the benchmark's folder: waiting_line, waiting_line_n15, puzzle
    task: str  # its file stem: copy, ..., latin_square_n4, sudoku_n4_12
    kind: str  # an op of OPS, "latin_square" or "sudoku"
    prompt: str
    metric: str
    lengths: tuple[int, ...]
    files: tuple[str, ...]  # where the benchmark's versions keep this task, under data_dir
    hub_configs: tuple[str, ...]  # its config names in the hub layout

    @property
    def name(self) -> str:
        return f"parallelbench/{self.group}/{self.task}"


def _waiting_line(group: str, op: str, lengths: tuple[int, ...]) -> Spec:
    return Spec(group, op, op, WAITING_LINE_PROMPTS[op], _METRIC.get(op, "list_match_score"), lengths,
                (f"{group}/{op}.jsonl",), (f"{group}-{op}",))


SPECS = ([_waiting_line("waiting_line", op, (3, 4, 5, 6)) for op in OPS]
         + [_waiting_line("waiting_line_n15", op, (15,)) for op in OPS]
         + [Spec("puzzle", "latin_square_n4", "latin_square", LATIN_SQUARE_PROMPT, "latin_square_score", (4,),
                 ("puzzle/latin_square_n4.jsonl", "puzzles/latin_square_n4.jsonl"), ("puzzles-latin_square_n4",)),
            Spec("puzzle", "sudoku_n4_12", "sudoku", SUDOKU_PROMPT, "sudoku_score", (4,),
                 ("puzzle/sudoku_n4_12.jsonl", "puzzles/sudoku_n4_12.jsonl", "puzzles/sudoku_n4.jsonl"),
                 ("puzzles-sudoku_n4_12", "puzzles-sudoku_n4"))])


def list_text(names) -> str:
    """``["A B", "C D"]``: the benchmark's list format (double quotes, ", " between items)."""
    return "[" + ", ".join(f'"{n}"' for n in names) + "]"


def answer_text(answer) -> str:
    """The reference text of an answer field: the list text, or the example of a many-answer task."""
    return answer if isinstance(answer, str) else answer["example"]


def waiting_line_record(op: str, length: int, rng: random.Random) -> dict:
    """One waiting-line record in the published layout, drawn from our own names."""
    drawn = rng.sample(FULL_NAMES, length + 1)
    names, word = drawn[:length], drawn[length]
    inp: dict = {"context": list_text(names)}
    meta: dict = {"length": length}
    target = list(names)
    if op == "sort":
        target = sorted(names)
    elif op == "reverse":
        target = names[::-1]
    elif op == "shuffle":
        while target == names:
            rng.shuffle(target)
    elif op.startswith(("insert", "remove", "replace")):
        index = rng.randint(0, length if op.startswith("insert") else length - 1)
        if op.startswith("insert"):
            target.insert(index, word)
        elif op.startswith("remove"):
            del target[index]
        else:
            target[index] = word
        if not op.startswith("remove"):
            inp["word"] = meta["word"] = word
        if op.endswith("_index"):
            inp["index"] = index
        meta["index"] = index if op.endswith("_index") else None
    answer = list_text(target)
    if op == "shuffle" or op.endswith("_random"):
        answer = {"input": names, **({"word": word} if "word" in inp else {}), "example": answer}
    record = {"input": inp, "answer": answer, "metadata": meta}
    if op in ("copy", "shuffle") or op.startswith(("insert", "replace")):
        record["output_format"] = list_text([MASK_TEXT] * len(target))
    return record


def latin_square_record(rng: random.Random) -> dict:
    symbols = rng.sample(SYMBOLS, 4)
    square = rng.choice(LATIN_SQUARES)  # a 16-digit row-major square over 1-4: relabel the digits
    rows = [[symbols[int(square[4 * r + c]) - 1] for c in range(4)] for r in range(4)]
    return {"input": {"size": 4, "symbols": "[" + ", ".join(symbols) + "]"},
            "answer": {"symbols": symbols, "example": "\n".join(",".join(row) for row in rows)},
            "metadata": {"length": 4}}


def sudoku_record(rng: random.Random) -> dict:
    """A 4x4 sudoku with SUDOKU_HOLES blanks whose clues admit exactly one solution."""
    while True:
        solution = rng.choice(SUDOKUS)
        holes = set(rng.sample(range(16), SUDOKU_HOLES))
        fits = [g for g in SUDOKUS if all(g[c] == solution[c] for c in range(16) if c not in holes)]
        if len(fits) == 1:
            break
    puzzle = "".join("0" if c in holes else ch for c, ch in enumerate(solution))
    lines = lambda grid: "\n".join(grid[4 * r:4 * r + 4] for r in range(4))  # noqa: E731
    return {"input": {"sudoku": lines(puzzle)}, "answer": lines(solution),
            "metadata": {"length": 4, "num_holes": SUDOKU_HOLES}}


def make_record(spec: Spec, length: int, rng: random.Random) -> dict:
    if spec.kind == "latin_square":
        return latin_square_record(rng)
    if spec.kind == "sudoku":
        return sudoku_record(rng)
    return waiting_line_record(spec.kind, length, rng)


def chat_turns(prompt: str, record: dict) -> list[dict]:
    """The benchmark's messages: per in-context example a user turn and the assistant's answer,
    then the item's own user turn (``prompt.format(**input)``, a literal ``\\n`` read as a newline)."""
    user = lambda inp: {"role": "user", "content": prompt.format(**inp).replace("\\n", "\n")}  # noqa: E731
    turns = []
    for example in record["input"].get("icl_examples") or []:
        turns += [user(example["input"]), {"role": "assistant", "content": answer_text(example["answer"])}]
    return turns + [user(record["input"])]


def plain_text(messages: list[dict]) -> str:
    """The chat as plain text, for a tokenizer without a chat template: each turn ``User:`` or
    ``Assistant:`` on its own line above its text, turns a blank line apart, ending in ``Assistant:``
    and a newline (the answer follows)."""
    turns = [f"{m['role'].capitalize()}:\n{m['content']}" for m in messages]
    return "\n\n".join(turns + ["Assistant:\n"])


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of the chat through the tokenizer's template (generation prompt added)."""
    specials = {str(t) for t in getattr(tokenizer, "all_special_tokens", []) if t}
    for m in messages:
        found = sorted(t for t in specials if t in m["content"])
        check(not found, f"a ParallelBench turn holds special-token text {found[:1]}: it cannot go through the "
                         "chat template as plain text")
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def _has_text(answer) -> bool:
    return isinstance(answer, str) or (isinstance(answer, dict) and isinstance(answer.get("example"), str))


def check_record(record, metric: str, prompt: str, where: str) -> dict:
    """A published record, checked enough that scoring cannot fail on it; DllmError naming ``where``."""
    def need(ok, what):
        check(ok, f"{where}: {what}")

    need(isinstance(record, dict) and isinstance(record.get("input"), dict), "each line needs an 'input' object")
    answer = record.get("answer")
    if metric == "list_match_score":
        need(isinstance(answer, str), "'answer' must be the reference list text")
    elif metric == "sudoku_score":
        need(isinstance(answer, str) and pb_scoring.parse_sudoku(answer, strict=True) is not None,
             "'answer' must be a 4x4 grid, one row of four digits per line")
    elif metric == "latin_square_score":
        need(isinstance(answer, dict) and isinstance(answer.get("symbols"), list), "'answer' needs a 'symbols' list")
    else:
        need(isinstance(answer, dict) and isinstance(answer.get("input"), list), "'answer' needs the 'input' list")
    need(_has_text(answer), "'answer' needs an 'example' text")
    examples = record["input"].get("icl_examples") or []
    need(isinstance(examples, list) and all(isinstance(e, dict) and isinstance(e.get("input"), dict)
                                            and _has_text(e.get("answer")) for e in examples),
         "'input.icl_examples' must be a list of records with an 'input' and an answer text (or 'example')")
    try:
        chat_turns(prompt, record)
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise DllmError(f"{where}: the prompt cannot be filled from 'input' ({type(e).__name__}: {e})") from None
    return record


def _task_config(folder: Path, stem: str) -> dict:
    """The prompt and metric the benchmark keeps beside its items (``task_config.yaml``), if any."""
    path = folder / "task_config.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        configs = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise DllmError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    found = [v for k, v in configs.items() if isinstance(v, dict) and str(k).rsplit("/", 1)[-1] == stem] \
        if isinstance(configs, dict) else []
    return found[0] if found else {}


def read_items_file(path: Path, prompt: str, metric: str) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DllmError(f"{path}:{lineno}: not a JSON object ({e.msg})") from None
            records.append(check_record(record, metric, prompt, f"{path}:{lineno}"))
    check(records, f"{path}: no items in the file")
    return records


def _loads(value):
    """Hub columns hold JSON text for objects; plain text stays text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def records_from_rows(rows, where: str, spec: Spec) -> tuple[list[dict], str, str]:
    """Records, prompt and metric from hub rows (columns input, answer, metadata as JSON text,
    output_format, prompt, metric; one config per task)."""
    rows = list(rows)
    check(rows, f"{where}: no rows")
    prompt, metric = rows[0].get("prompt") or spec.prompt, rows[0].get("metric") or spec.metric
    check(metric in pb_scoring.METRICS, f"{where}: metric {metric!r} is not one dllm scores ({pb_scoring.METRICS})")
    records = []
    for i, row in enumerate(rows):
        record = {"input": _loads(row.get("input")), "answer": _loads(row.get("answer")),
                  "output_format": row.get("output_format"), "metadata": _loads(row.get("metadata"))}
        records.append(check_record(record, metric, prompt, f"{where} row {i}"))
    return records, prompt, metric


def hub_records(name: str, spec: Spec) -> tuple[list[dict], str, str]:
    try:
        from datasets import load_dataset
    except ImportError as e:
        raise DllmError("hub_dataset needs the datasets package: pip install datasets") from e
    problem = ""
    for config in spec.hub_configs:
        try:
            rows = load_dataset(name, config, split="test")
        except Exception as e:  # noqa: BLE001  an unknown config, no network, ...: try the next name
            problem = (str(e).strip().splitlines() or [type(e).__name__])[0]
            continue
        return records_from_rows(rows, f"{name}[{config}]", spec)
    raise DllmError(f"hub_dataset {name}: no config {' or '.join(spec.hub_configs)} for {spec.name} ({problem})")


class ParallelBenchTask(Task):
    """One ParallelBench task; ``score`` is the lenient score, ``scores`` both."""

    def __init__(self, spec: Spec) -> None:
        self.spec, self.name = spec, spec.name
        self.data_dir: Path | None = None
        self.hub_dataset: str | None = None
        self._cache: dict = {}

    @property
    def provenance(self) -> str:
        return PROVENANCE["official" if self.data_dir or self.hub_dataset else "generated"]

    def use(self, data_dir: str | Path | None = None, hub_dataset: str | None = None) -> None:
        """Read the benchmark's items from ``data_dir`` or ``hub_dataset``; neither: generate ours."""
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        self.hub_dataset = hub_dataset or None
        self._cache = {}

    def generated_records(self, split: str, n: int) -> list[dict]:
        """Our first ``n`` records of ``split``, in the published layout. The test set is the first
        TEST_SIZE distinct instructions of the test stream; train skips every test instruction."""
        check_split(self.name, split, n)
        if split == "test":
            check(n <= TEST_SIZE, f"n must be <= {TEST_SIZE} for the {self.name} test set, got {n}")
            if "test" not in self._cache:
                self._cache["test"] = self._draw("test", TEST_SIZE, set())
            return self._cache["test"][:n]
        banned = {self._query(r) for r in self.generated_records("test", TEST_SIZE)}
        return self._draw("train", n, banned)

    def _query(self, record: dict) -> str:
        return self.spec.prompt.format(**record["input"])

    def _draw(self, split: str, n: int, banned: set) -> list[dict]:
        spec, rng = self.spec, random.Random(stable_seed(self.name, split))
        out, seen, index = [], set(banned), 0
        while len(out) < n:
            record = make_record(spec, spec.lengths[index % len(spec.lengths)], rng)
            record["input"]["icl_examples"] = [make_record(spec, rng.choice(spec.lengths), rng)]
            index += 1
            if self._query(record) not in seen:
                seen.add(self._query(record))
                out.append(record)
            if index > 100 * n + 10_000:
                raise RuntimeError(f"{self.name}: could not draw {n} distinct {split} items")
        return out

    def official_records(self) -> tuple[list[dict], str, str]:
        if "official" not in self._cache:
            self._cache["official"] = hub_records(self.hub_dataset, self.spec) if self.hub_dataset else self._read_dir()
        return self._cache["official"]

    def _read_dir(self) -> tuple[list[dict], str, str]:
        root = self.data_dir
        check(root.is_dir(), f"data_dir {root} is not a folder (give the folder that holds the benchmark's "
                             f"<group>/<task>.jsonl files)")
        tried = [base / rel for rel in self.spec.files for base in (root, root / "test")]
        path = next((p for p in tried if p.is_file()), None)
        check(path is not None, f"data_dir {root}: no items for {self.name} (looked for {tried[0]})")
        config = _task_config(path.parent, path.stem)
        prompt, metric = config.get("prompt") or self.spec.prompt, config.get("metric") or self.spec.metric
        check(metric in pb_scoring.METRICS,
              f"{path.parent / 'task_config.yaml'}: metric {metric!r} is not one dllm scores ({pb_scoring.METRICS})")
        return read_items_file(path, prompt, metric), prompt, metric

    def items(self, split: str, n: int) -> list[Item]:
        check_split(self.name, split, n)
        if not (self.data_dir or self.hub_dataset):
            return [self.item(r, self.spec.prompt, self.spec.metric) for r in self.generated_records(split, n)]
        check(split == "test", f"{self.name}: the benchmark's items are a test set; train on generated items "
                               "(no data_dir / hub_dataset)")
        records, prompt, metric = self.official_records()
        check(n <= len(records), f"n must be <= {len(records)} for the {self.name} items read, got {n}")
        return [self.item(r, prompt, metric) for r in records[:n]]

    def item(self, record: dict, prompt: str, metric: str) -> Item:
        messages = chat_turns(prompt, record)
        meta = {"messages": messages, "metric": metric, "answer": record["answer"],
                "metadata": record.get("metadata"), "provenance": self.provenance}
        return Item(self.name, plain_text(messages), answer_text(record["answer"]), meta)

    def scores(self, item: Item, output: str) -> dict[str, float]:
        return pb_scoring.score(item.meta["metric"], output, item.meta["answer"])

    def score(self, item: Item, output: str) -> float:
        return self.scores(item, output)["score"]


def write_items(tasks: list[ParallelBenchTask], folder: str | Path, split: str = "test", n: int = TEST_SIZE) -> Path:
    """Our generated items of ``tasks`` in the published layout: ``<folder>/<group>/<task>.jsonl``
    and a ``task_config.yaml`` per group holding each task's prompt and metric."""
    import yaml

    folder = Path(folder)
    configs: dict[str, dict] = {}
    for task in tasks:
        spec = task.spec
        (folder / spec.group).mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(r) + "\n" for r in task.generated_records(split, n)]
        (folder / spec.group / f"{spec.task}.jsonl").write_text("".join(lines), encoding="utf-8")
        configs.setdefault(spec.group, {})[f"{spec.group}/{spec.task}"] = {"prompt": spec.prompt, "metric": spec.metric}
    for group, config in configs.items():
        (folder / group / "task_config.yaml").write_text(yaml.safe_dump(config, sort_keys=True), encoding="utf-8")
    return folder
