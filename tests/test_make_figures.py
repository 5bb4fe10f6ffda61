"""scripts/make_figures.py: the concept figures are written whole, and never through a link."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_figure_that_is_a_link_is_replaced_and_its_target_left_alone(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("keep.svg", "keep.png"):
        (outside / name).write_text("not yours")
    out, png = tmp_path / "svg", tmp_path / "png"
    out.mkdir()
    png.mkdir()
    (out / "conditional_gan.svg").symlink_to(outside / "keep.svg")
    (png / "conditional_gan.png").symlink_to(outside / "keep.png")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_figures.py"), "--out", str(out),
                    "--png", str(png)], check=True, cwd=ROOT, capture_output=True,
                   env={"PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", "PATH": ""})
    assert (outside / "keep.svg").read_text() == "not yours"
    assert (outside / "keep.png").read_text() == "not yours"
    assert not (out / "conditional_gan.svg").is_symlink()
    assert (out / "conditional_gan.svg").read_text().startswith("<?xml")
    assert (png / "conditional_gan.png").read_bytes().startswith(b"\x89PNG")
