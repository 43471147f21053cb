"""ParallelBench's answer reading and per-task scores (arXiv 2510.04767; the benchmark's
``metrics.py``), as rules: each metric returns ``{"score": lenient, "score_strict": strict}``.

Reading a list (lenient, the benchmark's headline "score"): take the text after the last ``[``
(the whole text when there is none), up to the next ``]`` (to the end when there is none), split on
commas, strip double quotes and spaces from each item (not single quotes, not newlines), and drop
the items that are blank. The strict reading needs both brackets, ``", "`` between items, and each
item wrapped in double quotes with none inside.

So the lenient reading accepts a trailing comma and a missing bracket, and refuses single quotes
and a list spread over lines (the newline stays in the item); dllm's own ``waiting_line`` scorer
differs on exactly those cases, which is why its numbers are not ParallelBench numbers.

Grids: a Latin square is read from comma-separated lines (the first four lines whose cells are the
four symbols), the same for both scores; a sudoku leniently from the lines that hold exactly four
digits once spaces and commas are dropped, strictly from four lines of four digits each, and must
equal the reference solution. A one-line grid fails both.
"""

from __future__ import annotations

import re

STRICT_SEP = ", "
_DIGIT = re.compile(r"\d")


def parse_list(text: str, strict: bool = False) -> list[str] | None:
    """The items of the answer list in ``text`` (rules above); None when the strict reading fails."""
    if "[" in text:
        text = text[text.rindex("[") + 1:]
    elif strict:
        return None
    if "]" in text:
        text = text[:text.index("]")]
    elif strict:
        return None
    if not strict:
        return [part.strip('" ') for part in text.strip("[]").split(",") if part.strip()]
    items = []
    for part in text.split(STRICT_SEP):
        if not (part.startswith('"') and part.endswith('"')) or '"' in part[1:-1]:
            return None
        items.append(part[1:-1])
    return items


def _both(rule, output: str, *args) -> dict[str, float]:
    return {"score": float(rule(parse_list(output), *args)),
            "score_strict": float(rule(parse_list(output, strict=True), *args))}


def _match(pred, want) -> bool:
    return pred is not None and pred == want


def _shuffle(pred, source) -> bool:
    return pred is not None and sorted(pred) == sorted(source) and pred != source


def _remove(pred, source, n=1) -> bool:
    """``n`` names gone: exactly n distinct names missing, the rest in order."""
    if pred is None or source is None or len(pred) != len(source) - n:
        return False
    gone = set(source) - set(pred)
    if len(gone) != n:
        return False
    rest = list(source)
    for name in gone:
        rest.remove(name)
    return pred == rest


def _insert(pred, source, word, n=1) -> bool:
    """The input with ``word`` (a name or a list of names) added somewhere: take each out of the
    answer once and the input must remain. No word given: any ``n`` names added."""
    if word is None:
        return _remove(source, pred, n)
    if pred is None:
        return False
    rest = list(pred)
    for name in [word] if isinstance(word, str) else word:
        if name not in rest:
            return False
        rest.remove(name)
    return rest == source


def _replace(pred, source, word, n=1) -> bool:
    """``word`` in place of one name (put where it first appears in the answer); no word given: any
    ``n`` positions changed."""
    if pred is None or len(pred) != len(source):
        return False
    if word is None:
        return sum(p != s for p, s in zip(pred, source)) == n
    if word not in pred:
        return False
    want = list(source)
    want[pred.index(word)] = word
    return pred == want


def latin_square_ok(output: str, symbols: list[str], first_row: list[str] | None = None) -> bool:
    want = set(symbols)
    size = len(want)
    rows = [line.strip() for line in output.split("\n") if line.strip()]
    rows = [line for line in rows if {cell.strip() for cell in line.split(",")} == want][:size]
    if len(rows) < size:
        return False
    cells = [[cell.strip() for cell in line.split(",")] for line in rows]
    cols = list(zip(*cells))  # as zip reads it: up to the shortest row
    ok = all(set(r) == want for r in cells) and all(set(c) == want for c in cols)
    return ok and (first_row is None or cells[0] == list(first_row))


def parse_sudoku(text: str, strict: bool = False, n: int = 4) -> list[list[int]] | None:
    """A 4x4 grid from its lines (rules above); None when there is none."""
    if strict:
        lines = [line.strip() for line in text.strip().split("\n") if line.strip()]
        if len(lines) != n or any(len(line) != n for line in lines):
            return None
        try:
            return [[int(ch) for ch in line] for line in lines]
        except ValueError:
            return None
    text = text.strip().replace(" ", "").replace(",", "")
    grid = []
    for line in text.split("\n"):
        digits = _DIGIT.findall(line.strip())
        if len(digits) == n:
            grid.append([int(d) for d in digits])
    return grid if len(grid) == n else None


def score(metric: str, output: str, answer) -> dict[str, float]:
    """ParallelBench's score pair for one output; ``answer`` is the item's answer field as published
    (the reference list text, or a dict with the input and the edit's word)."""
    if metric == "list_match_score":
        return _both(_match, output, parse_list(answer))
    if metric == "list_shuffle_score":
        return _both(_shuffle, output, list(answer["input"]))
    n = answer.get("n_words", 1) if isinstance(answer, dict) else 1
    if metric == "list_random_insert_score":
        return _both(_insert, output, list(answer["input"]), answer.get("word"), n)
    if metric == "list_random_remove_score":
        return _both(_remove, output, list(answer["input"]), n)
    if metric == "list_random_replace_score":
        return _both(_replace, output, list(answer["input"]), answer.get("word"), n)
    if metric == "latin_square_score":
        ok = float(latin_square_ok(output, list(answer["symbols"]), answer.get("first_row")))
        return {"score": ok, "score_strict": ok}
    if metric == "sudoku_score":
        want = parse_sudoku(answer, strict=True)
        return {"score": float(want is not None and parse_sudoku(output) == want),
                "score_strict": float(want is not None and parse_sudoku(output, strict=True) == want)}
    raise ValueError(f"unknown ParallelBench metric {metric!r}")


METRICS = ("list_match_score", "list_shuffle_score", "list_random_insert_score", "list_random_remove_score",
           "list_random_replace_score", "latin_square_score", "sudoku_score")
