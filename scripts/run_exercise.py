"""`make run`: the exercise headless, ending with a short summary under results/.

    python scripts/run_exercise.py                   # every part, in order, timed
    python scripts/run_exercise.py --part "Part 3"   # Part 0, then Part 3 alone, timed
    python scripts/run_exercise.py --section 1.6     # Part 0, then section 1.6 alone, timed

Runs the code cells of solution.py (the solution notebook's cells) with a non-interactive
matplotlib backend (figures are saved, not shown) in the profile that suits the machine; the
Summary part prints results/summary.md, and the script how long each part took.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import build_notebooks  # scripts/, the folder of this script, is on sys.path

ROOT = Path(__file__).resolve().parent.parent


def run_part(name: str, cells: list, namespace: dict) -> float:
    """Execute one part's code cells in `namespace`; returns the seconds it took."""
    start = time.perf_counter()
    for cell in cells:
        if cell.cell_type == "code":
            exec(compile(cell.source, f"solution.py ({name})", "exec"), namespace)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", default=[], metavar="NAME",
                        help='run Part 0 and then only this part, e.g. "Part 3" or "Summary" '
                             "(repeat to run several in order)")
    parser.add_argument("--section", action="append", default=[], metavar="N.M",
                        help="run Part 0 and then only this numbered section, e.g. 1.6 "
                             "(repeat to run several in order; after any --part)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("PIX2PIXHD_RESULTS", "results")
    Path(os.environ["PIX2PIXHD_RESULTS"]).mkdir(parents=True, exist_ok=True)
    cells = build_notebooks.build_notebook(ROOT / "solution.py", "task").cells
    parts = build_notebooks.split_parts(cells)
    sections = build_notebooks.split_sections(cells)
    unknown = [name for name in args.part if name not in parts or name == "Part 0"]
    if unknown:
        parser.error(f"no part {', '.join(map(repr, unknown))}; choose from "
                     f"{', '.join(repr(name) for name in parts if name != 'Part 0')}")
    unknown = [name for name in args.section if name not in sections]
    if unknown:
        parser.error(f"no section {', '.join(map(repr, unknown))}; choose from "
                     f"{', '.join(sections)}")
    pieces = parts | {f"section {name}": section for name, section in sections.items()}
    chosen = [*args.part, *(f"section {name}" for name in args.section)]
    chosen = ["Part 0", *chosen] if chosen else list(parts)
    namespace = {"__name__": "__main__"}
    seconds = {name: run_part(name, pieces[name], namespace) for name in chosen}
    for name, took in seconds.items():
        print(f"{name}: {took:.0f} s")
    print(f"make run: {sum(seconds.values()) / 60:.1f} min in all; figures and tables are in "
          f"{os.environ['PIX2PIXHD_RESULTS']}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
