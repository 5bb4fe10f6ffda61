"""The exercise's tasks: numbered by their section, and each one skippable."""

import ast
import re
from pathlib import Path

import build_notebooks  # from scripts/ (pytest's pythonpath)
import nbformat

ROOT = Path(__file__).resolve().parent.parent


def exercise_parts():
    notebook = nbformat.read(ROOT / "exercise.ipynb", as_version=4)
    return build_notebooks.split_parts(notebook.cells)


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def assigned(code):
    """Top-level names a cell binds (assignments, defs, imports, for targets)."""
    tree = ast.parse("\n".join(line for line in code.splitlines() if not line.startswith("%")))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
    return names


def used(code):
    tree = ast.parse("\n".join(line for line in code.splitlines() if not line.startswith("%")))
    return {node.id for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def test_a_skipped_task_breaks_no_later_cell_unless_that_cell_names_the_task():
    """A student who skips a task (its stub and its failing check) can run the rest of the
    part: no later cell reads a name that only the stub or its check defines, unless that cell
    says which task to do first."""
    parts = exercise_parts()
    for name, cells in parts.items():
        code = [c for c in cells if c.cell_type == "code"]
        for index, cell in enumerate(code):
            if "task" not in tags(cell):
                continue
            task = re.search(r"Task \d\.\d", cell.source).group(0)
            only_there = assigned(cell.source) | assigned(code[index + 1].source)
            elsewhere = set().union(*(assigned(c.source) for i, c in enumerate(code)
                                      if i not in (index, index + 1)),
                                    *(assigned(c.source) for c in parts["Part 0"]
                                      if c.cell_type == "code"))
            only_there -= elsewhere
            for later in code[index + 2:]:
                needs = used(later.source) & only_there
                assert not needs or task in later.source, (
                    f"{name}: a cell reads {sorted(needs)}, which only {task} or its check "
                    f"defines; compute it there, or say in the cell to do {task} first")


def test_a_task_in_part_1_is_numbered_by_its_section():
    notebook = nbformat.read(ROOT / "exercise.ipynb", as_version=4)
    for section, cells in build_notebooks.split_sections(notebook.cells).items():
        for cell in cells:
            for number in re.findall(r"Task (\d\.\d)", cell.source):
                assert number == section, f"Task {number} sits in section {section}"
