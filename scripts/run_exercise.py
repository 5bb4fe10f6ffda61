"""`make run`: the exercise headless, ending with a short summary under results/.

Runs solution.py as a plain script with a non-interactive matplotlib backend (figures are saved,
not shown) in the profile that suits the machine, then prints results/summary.md.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    os.chdir(ROOT)
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("PIX2PIXHD_RESULTS", "results")
    Path("results").mkdir(exist_ok=True)
    start = time.perf_counter()
    runpy.run_path(str(ROOT / "solution.py"), run_name="__main__")
    minutes = (time.perf_counter() - start) / 60
    summary = Path("results/summary.md")
    if summary.is_file():
        print(summary.read_text())
    print(f"make run: the exercise ran in {minutes:.1f} min; figures and tables are in results/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
