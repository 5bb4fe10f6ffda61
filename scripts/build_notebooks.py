"""Build exercise.ipynb and solution.ipynb from solution.py, the one source.

    python scripts/build_notebooks.py           # write both notebooks
    python scripts/build_notebooks.py --check   # exit 1 if the committed ones are stale

Cells tagged `solution` hold the answers and are removed from the exercise; cells tagged `task`
hold the placeholders a student fills in and are removed from the solution. Both notebooks are
written without outputs, with stable cell ids, for the kernel 06_image_translation.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat
from nbconvert.preprocessors import TagRemovePreprocessor

from pix2pixhd.files import write_text

ROOT = Path(__file__).resolve().parent.parent
KERNEL = {"name": "06_image_translation", "display_name": "Python (06_image_translation)",
          "language": "python"}
NOTEBOOKS = {"exercise.ipynb": "solution", "solution.ipynb": "task"}
"""Each notebook and the tag of the cells it leaves out."""
PART_HEADING = re.compile(r"^## (Part \d+|Summary)", re.MULTILINE)
"""A markdown cell holding such a heading starts a part."""
SECTION_HEADING = re.compile(r"^### (\d+\.\d+) ", re.MULTILINE)
"""A markdown cell holding such a heading starts a numbered section (1.1, 1.2, ...)."""


def build_notebook(source: Path, remove_tag: str) -> nbformat.NotebookNode:
    notebook = jupytext.read(source)
    remover = TagRemovePreprocessor(remove_cell_tags={remove_tag}, enabled=True)
    notebook, _ = remover.preprocess(notebook, {})
    notebook.metadata = nbformat.from_dict({
        "kernelspec": KERNEL,
        "language_info": {"name": "python"},
    })
    for index, cell in enumerate(notebook.cells):
        cell.id = f"cell-{index:03d}"
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        tags = cell.metadata.get("tags", [])
        cell.metadata = nbformat.from_dict({"tags": tags} if tags else {})
    return notebook


def split_parts(cells: list) -> dict[str, list]:
    """{"Part 0": cells, "Part 1": cells, ..., "Summary": cells}; the title joins Part 0.

    Every part is meant to run after Part 0 alone (tests and `run_exercise.py --part`).
    """
    parts: dict[str, list] = {}
    current = "Part 0"
    for cell in cells:
        heading = PART_HEADING.search(cell.source) if cell.cell_type == "markdown" else None
        if heading:
            current = heading.group(1)
        parts.setdefault(current, []).append(cell)
    return parts


def split_sections(cells: list) -> dict[str, list]:
    """{"1.1": cells, "1.2": cells, ...}: each numbered section, from its heading to the next
    section's or part's heading. Every section is meant to run after Part 0 alone."""
    sections: dict[str, list] = {}
    current = None
    for cell in cells:
        if cell.cell_type == "markdown":
            heading = SECTION_HEADING.search(cell.source)
            if heading:
                current = heading.group(1)
            elif PART_HEADING.search(cell.source):
                current = None
        if current is not None:
            sections.setdefault(current, []).append(cell)
    return sections


def render(notebook: nbformat.NotebookNode) -> str:
    return nbformat.writes(notebook) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the notebooks are stale")
    parser.add_argument("--source", type=Path, default=ROOT / "solution.py")
    parser.add_argument("--out", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    stale = []
    for name, remove_tag in NOTEBOOKS.items():
        text = render(build_notebook(args.source, remove_tag))
        path = args.out / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            write_text(path, text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run `make notebooks` and commit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
