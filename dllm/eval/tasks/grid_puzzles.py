"""4x4 Latin square and Sudoku completion, after ParallelBench's puzzle tasks (arXiv 2510.04767).

Compact one-line format, rows separated by spaces and blanks written `_`:

    latin: 12_4 _41_ 4_21 2_4_        -> 1234 3412 4321 2143
    sudoku: 1_3_ _4_2 2_4_ _3_1       -> 1234 3412 2143 4321

A 4x4 grid is small enough to enumerate every solution grid (576 Latin squares, 288 Sudokus), so
uniqueness of a puzzle and validity of an answer are set look-ups rather than a solver. Puzzles
are generated with 4-8 blanks and kept only when the clues admit exactly one completion, so the
reference is the only answer; the scorer still accepts any valid grid that agrees with the clues,
as ParallelBench's validity-based scores do.
"""

from __future__ import annotations

import itertools
import random
import re

from .base import GeneratedTask, Item

SIZE = 4
SYMBOLS = "1234"
BLANK = "_"
MIN_BLANKS, MAX_BLANKS = 4, 8

_ROW_RE = re.compile(r"(?<![0-9])[0-9]{4}(?![0-9])")


def _latin_squares() -> list[str]:
    """All 4x4 Latin squares over 1-4 as 16-character strings, row-major."""
    perms = ["".join(p) for p in itertools.permutations(SYMBOLS)]
    grids: list[str] = []

    def extend(rows: list[str]) -> None:
        if len(rows) == SIZE:
            grids.append("".join(rows))
            return
        for perm in perms:
            if all(perm[c] != row[c] for row in rows for c in range(SIZE)):
                extend(rows + [perm])

    extend([])
    return grids


def _is_sudoku(grid: str) -> bool:
    for br in (0, 2):
        for bc in (0, 2):
            box = {grid[(br + r) * SIZE + bc + c] for r in range(2) for c in range(2)}
            if len(box) != SIZE:
                return False
    return True


LATIN_SQUARES = tuple(_latin_squares())
SUDOKUS = tuple(g for g in LATIN_SQUARES if _is_sudoku(g))


def _code(grid: str, cells) -> int:
    """One-hot bit code of the given cells (4 bits per cell), for fast clue-consistency checks."""
    return sum(1 << (4 * c + int(grid[c]) - 1) for c in cells)


def format_grid(grid: str) -> str:
    return " ".join(grid[r * SIZE : (r + 1) * SIZE] for r in range(SIZE))


def parse_grid(text: str) -> str | None:
    """The 16 digits of an answer grid, from four 4-digit rows or else exactly 16 loose digits."""
    rows = _ROW_RE.findall(text)
    if len(rows) == SIZE:
        return "".join(rows)
    digits = re.findall(r"[0-9]", text)
    if len(digits) == SIZE * SIZE:
        return "".join(digits)
    return None


class GridPuzzle(GeneratedTask):
    """Fill the blanks of a 4x4 grid so that it becomes one of `solutions`."""

    def __init__(self, name: str, keyword: str, solutions: tuple[str, ...]) -> None:
        super().__init__()
        self.name = name
        self.keyword = keyword
        self.solutions = solutions
        self._valid = frozenset(solutions)
        all_cells = range(SIZE * SIZE)
        self._codes = [_code(g, all_cells) for g in solutions]

    def count_solutions(self, puzzle: str) -> int:
        given = [c for c, ch in enumerate(puzzle) if ch != BLANK]
        mask = sum(0xF << (4 * c) for c in given)
        want = _code(puzzle, given)
        return sum(1 for code in self._codes if code & mask == want)

    def make_item(self, split: str, index: int, rng: random.Random) -> Item:
        # Resample until the clues pin down one grid; with at most 8 blanks this takes few tries.
        while True:
            solution = rng.choice(self.solutions)
            blanks = set(rng.sample(range(SIZE * SIZE), rng.randint(MIN_BLANKS, MAX_BLANKS)))
            puzzle = "".join(BLANK if c in blanks else ch for c, ch in enumerate(solution))
            if self.count_solutions(puzzle) == 1:
                break
        prompt = f"{self.keyword}: {format_grid(puzzle)}"
        meta = {"puzzle": puzzle, "solution": solution, "blanks": len(blanks)}
        return Item(self.name, prompt, format_grid(solution), meta)

    def score(self, item: Item, output: str) -> float:
        grid = parse_grid(output)
        if grid is None or grid not in self._valid:
            return 0.0
        puzzle = item.meta["puzzle"]
        consistent = all(p == BLANK or p == g for p, g in zip(puzzle, grid))
        return 1.0 if consistent else 0.0


def latin_square() -> GridPuzzle:
    return GridPuzzle("latin_square/4x4", "latin", LATIN_SQUARES)


def sudoku() -> GridPuzzle:
    return GridPuzzle("sudoku/4x4", "sudoku", SUDOKUS)
