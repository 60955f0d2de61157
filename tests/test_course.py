"""What makes the notebooks a course a teacher can run, checked on the files alone (no
execution): every exercise has a solution, every notebook checks the claims its text
makes, and both kinds of cell are tagged and hidden so that rendered copies stay readable.

The conventions (CONTRIBUTING in short):

* ``## Exercises`` lists numbered exercises (``1. ...``); after a ``### Solutions``
  heading, each exercise N has a markdown line starting "Exercise N" followed by a code
  cell tagged ``solution`` that solves it.
* A claim-check cell is a code cell tagged ``claim-check`` whose source is hidden
  (``metadata.jupyter.source_hidden``) and which calls ``check.offline/online/always``
  on a ``claims.Checker`` the notebook creates.
"""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ids = [p.name for p in NOTEBOOKS]


def _cells(path: Path) -> list:
    return nbformat.read(path, as_version=4).cells


def _tags(cell) -> list[str]:
    return list(cell.metadata.get("tags", []))


def _hidden(cell) -> bool:
    return bool(cell.metadata.get("jupyter", {}).get("source_hidden", False))


def _exercises(cells) -> list[int]:
    """The numbers of the exercises listed under '## Exercises' (up to the next heading)."""
    for cell in cells:
        if cell.cell_type != "markdown":
            continue
        match = re.search(r"^## Exercises[^\n]*\n(.*?)(?=^#{1,3} |\Z)", cell.source, flags=re.M | re.S)
        if match:
            return [int(n) for n in re.findall(r"^(\d+)\. ", match.group(1), flags=re.M)]
    return []


def _solutions_start(cells) -> int | None:
    for i, cell in enumerate(cells):
        if cell.cell_type == "markdown" and re.search(r"^### Solutions\b", cell.source, flags=re.M):
            return i
    return None


def _solution_markers(cells, start: int) -> dict[int, int]:
    """Exercise number -> index of the markdown cell (at or after ``start``) whose line
    "Exercise N..." introduces its solution."""
    markers = {}
    for i in range(start, len(cells)):
        if cells[i].cell_type == "markdown":
            for n in re.findall(r"^Exercise (\d+)\b", cells[i].source, flags=re.M):
                markers.setdefault(int(n), i)
    return markers


def _next_code(cells, i: int):
    return next((c for c in cells[i + 1:] if c.cell_type == "code"), None)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_every_exercise_has_a_solution(path):
    cells = _cells(path)
    exercises = _exercises(cells)
    assert exercises, "'## Exercises' lists no numbered exercises ('1. ...')"
    assert exercises == list(range(1, len(exercises) + 1)), f"exercises numbered {exercises}"
    start = _solutions_start(cells)
    assert start is not None, "no '### Solutions' heading after the exercises"
    markers = _solution_markers(cells, start)
    missing = sorted(set(exercises) - set(markers))
    assert not missing, f"no 'Exercise N' solution for exercise(s) {missing} after '### Solutions'"
    extra = sorted(set(markers) - set(exercises))
    assert not extra, f"solutions for exercises that are not listed: {extra}"
    for n, i in sorted(markers.items()):
        code = _next_code(cells, i)
        assert code is not None and "solution" in _tags(code), (
            f"the code cell after 'Exercise {n}' must be its solution, tagged 'solution'")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_solution_cells_are_tagged_hidden_and_come_after_the_heading(path):
    cells = _cells(path)
    start = _solutions_start(cells)
    solutions = [i for i, c in enumerate(cells) if c.cell_type == "code" and "solution" in _tags(c)]
    assert solutions, "no code cell tagged 'solution'"
    for i in solutions:
        assert start is not None and i > start, f"solution cell {i} comes before '### Solutions'"
        assert _hidden(cells[i]), f"solution cell {i} is not hidden (metadata.jupyter.source_hidden)"
        assert cells[i].source.strip() and "TODO" not in cells[i].source, f"solution cell {i} is a stub"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_claims_are_checked_in_hidden_cells(path):
    cells = _cells(path)
    checks = [(i, c) for i, c in enumerate(cells) if "claim-check" in _tags(c)]
    assert checks, "no claim-check cell: every number or comparison the text states needs one"
    for i, cell in checks:
        assert cell.cell_type == "code", f"claim-check cell {i} is not a code cell"
        assert re.search(r"\bcheck\.(offline|online|always)\(", cell.source), (
            f"claim-check cell {i} calls no check.offline/online/always")
        assert _hidden(cell), f"claim-check cell {i} is not hidden (metadata.jupyter.source_hidden)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_a_notebook_that_checks_claims_creates_its_checker(path):
    source = "\n".join(c.source for c in _cells(path) if c.cell_type == "code")
    if re.search(r"\bcheck\.(offline|online|always)\(", source) or "claims" in source:
        assert "claims.Checker(" in source, "check.* is used but no claims.Checker(model) is created"
        assert re.search(r"^from clapnb import .*\bclaims\b", source, flags=re.M), (
            "claims is used but not imported from clapnb")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_claim_checks_come_after_the_checker(path):
    cells = _cells(path)
    created = next((i for i, c in enumerate(cells) if c.cell_type == "code" and "claims.Checker(" in c.source), None)
    first = next((i for i, c in enumerate(cells) if "claim-check" in _tags(c)), None)
    if created is not None and first is not None:
        assert created < first, f"claim-check cell {first} runs before the Checker is created (cell {created})"
