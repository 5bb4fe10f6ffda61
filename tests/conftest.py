"""Shared fixtures: a tiny synthetic dataset and a tiny configuration that trains in seconds."""

import os

import pytest

from pix2pixhd.config import apply_overrides, load_config

# The suite runs in parallel (pytest-xdist, `-n auto` in pyproject.toml). Each worker gets its
# share of the cores for torch's threads and for the processes it starts (notebook kernels, the
# command line): more OpenMP threads than cores wait on each other, many times slower.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, str(max(1, (os.cpu_count() or 1) // _WORKERS)))

TINY = [
    "data.crop_size=32", "data.val_crop_size=64", "data.batch_size=2", "data.num_workers=0",
    "model.ngf=4", "model.n_downsample_global=2", "model.n_blocks_global=1", "model.ndf=4",
    "model.num_D=2", "model.n_layers_D=2", "train.niter=1", "train.niter_decay=1",
    "train.log_every=1", "train.save_every=1",
]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """6 train, 2 val, 2 test fields of view of 64x64 pixels from the built-in simulator."""
    from pix2pixhd.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data"), n_train=6, n_val=2, n_test=2,
                        size=64, seed=0)


@pytest.fixture(scope="session")
def checkpoint(tiny_dataset, tmp_path_factory):
    """latest.pt of a one-epoch GAN run in the tiny configuration, which tests only read."""
    from pix2pixhd.train import Trainer

    folder = tmp_path_factory.mktemp("checkpoints")
    config = apply_overrides(load_config("quick"), TINY + [
        f"data.root={tiny_dataset}", f"train.checkpoints_dir={folder}"])
    trainer = Trainer(config)
    trainer.fit(epochs=1)
    return trainer.run_dir / "latest.pt"


@pytest.fixture
def tiny_config(tiny_dataset, tmp_path):
    return apply_overrides(load_config("quick"), TINY + [
        f"data.root={tiny_dataset}", f"train.checkpoints_dir={tmp_path / 'checkpoints'}"])


@pytest.fixture
def dataset_root(tmp_path):
    """The tiny hand-made dataset of tests/tiny_data.py, fresh for each test."""
    from .tiny_data import write_dataset

    return write_dataset(tmp_path / "data")
