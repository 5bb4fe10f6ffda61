"""The course on real data, end to end, as a new user meets it.

A small synthetic dataset is written into iohub plates laid out like the real VSCyto2D stores
and served on 127.0.0.1 with a random-weight VSCyto2D-layout checkpoint; `setup.sh --real`
(without building an environment) downloads both, a tiny GAN trains on what it downloaded (the
student's Part 1 run), and the notebook's Parts 0, 3 and 4 run on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("iohub")
pytest.importorskip("viscy")
pytest.importorskip("aiohttp")

import build_notebooks  # noqa: E402 (scripts/, on pytest's pythonpath)
import run_exercise  # noqa: E402

from pix2pixhd import layout  # noqa: E402
from pix2pixhd.config import apply_overrides, load_config  # noqa: E402
from pix2pixhd.synthetic import make_dataset  # noqa: E402
from pix2pixhd.train import Trainer  # noqa: E402
from tests.conftest import TINY  # noqa: E402
from tests.plates import TEST_LABELS, TRAIN_LABELS, Server, write_iohub_plate  # noqa: E402
from tests.viscy_checkpoints import vsunet_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "epoch=399-step=23200.ckpt"
LABEL_OF = {"Phase3D": "phase", "Nucl": "nuclei", "Mem": "membrane",
            "nuclei_segmentation": layout.MASKS}


def plates_from(dataset: Path, served: Path) -> None:
    """The dataset's train+val FOVs as a training plate, its test FOVs as a test plate."""
    def planes(split_of: dict[str, tuple[str, str]]):
        def read(rng, position):
            split, fov = split_of[position]
            return {label: layout.read_image(layout.image_path(dataset, split, folder, fov))
                    for label, folder in LABEL_OF.items()
                    if (dataset / split / folder).is_dir()}
        return read

    train = [(s, f) for s in ("train", "val") for f in layout.list_fovs(dataset, s)]
    test = [("test", f) for f in layout.list_fovs(dataset, "test")]
    for name, fovs, labels in (("train.zarr", train, TRAIN_LABELS),
                               ("test.zarr", test, TEST_LABELS)):
        split_of = {f"0/0/{i}": fov for i, fov in enumerate(fovs)}
        write_iohub_plate(served / name, {"0/0": len(fovs)}, labels, zarr_format=3,
                          size=64, depth=3, planes=planes(split_of))


@pytest.mark.slow
def test_setup_real_then_parts_0_3_and_4_on_what_it_downloaded(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    plates_from(make_dataset(tmp_path / "source", n_train=4, n_val=1, n_test=2, size=64,
                             seed=3), served)
    (served / "models").mkdir()
    vsunet_checkpoint(served / "models" / MODEL_NAME)
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "setup.sh", course / "setup.sh")

    server = Server(served)
    try:
        env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
               "PIX2PIXHD_TRAIN_URL": server.url("train.zarr"),
               "PIX2PIXHD_TEST_URL": server.url("test.zarr"),
               "PIX2PIXHD_VSCYTO2D_URL": server.url(f"models/{MODEL_NAME}")}
        done = subprocess.run(["sh", "setup.sh", "--real", "--no-env"], cwd=course, env=env,
                              capture_output=True, text=True, timeout=600)
    finally:
        server.close()
    assert done.returncode == 0, done.stdout + done.stderr
    info = layout.read_dataset_json(course / "data")
    assert info["source"] == "VSCyto2D A549 (CZ Biohub)" and info["counts"]["test"] == 2
    assert (course / "checkpoints" / "VSCyto2D" / MODEL_NAME).is_file()

    # the student's Part 1: a tiny GAN trained on the downloaded images, where Part 1 keeps it
    config = apply_overrides(load_config("quick"), TINY + [
        f"data.root={course / 'data'}", f"train.checkpoints_dir={course / 'runs'}",
        "train.name=my_gan"])
    Trainer(config).fit(epochs=1)

    monkeypatch.chdir(course)
    for name, value in {"PIX2PIXHD_PROFILE": "quick", "PIX2PIXHD_HEADLESS": "1",
                        "MPLBACKEND": "Agg", "PIX2PIXHD_RESULTS": "results"}.items():
        monkeypatch.setenv(name, value)
    for name in ("PIX2PIXHD_DATA", "PIX2PIXHD_RUNS", "PIX2PIXHD_GAN_CHECKPOINT",
                 "PIX2PIXHD_VISCY_CHECKPOINT", "PIX2PIXHD_OWN_PREDICTIONS"):
        monkeypatch.delenv(name, raising=False)
    parts = build_notebooks.split_parts(
        build_notebooks.build_notebook(ROOT / "solution.py", "task").cells)
    namespace = {"__name__": "__main__"}
    for part in ("Part 0", "Part 3", "Part 4"):
        run_exercise.run_part(part, parts[part], namespace)

    assert namespace["SOURCE"] == "VSCyto2D A549 (CZ Biohub)"
    assert namespace["PRETRAINED"]["GAN"] == Path("runs/my_gan/latest.pt")
    comparison = pd.read_csv(course / "results" / "comparison.csv", index_col="model")
    assert {"Pix2PixHD (GAN)", "VSCyto2D (published)"} <= set(comparison.index)
    assert "regression (L1)" not in comparison.index  # no synthetic-trained model on real data
    units = layout.read_dataset_json(course / "data")  # unchanged by the parts
    assert units["source"] == info["source"]
    viscy_units = (course / "results" / "predictions" / "VisCy" / "units.json").read_text()
    assert '"units": "stain"' in viscy_units
