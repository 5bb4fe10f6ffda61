"""A tiny hand-made dataset whose stain is a known function of its phase, and malformed
dataset.json files (the fields a careless edit or a hostile file could break)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pix2pixhd import layout
from pix2pixhd.config import Config
from pix2pixhd.layout import image_path
from pix2pixhd.normalisation import dataset_statistics

SIZE = 32


def nuclei_from_phase(phase: np.ndarray) -> np.ndarray:
    """The tiny datasets' stain is a known pixel-wise function of the phase image."""
    return 3.0 * phase + 5.0


def write_dataset(root: Path, *, n_train: int = 4, n_val: int = 2, n_test: int = 2) -> Path:
    """A tiny valid dataset: phase, nuclei, membrane images and test masks, SIZE x SIZE."""
    rng = np.random.default_rng(1)
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        for i in range(count):
            fov = f"fov_{i:04d}"
            phase = rng.normal(100.0, 10.0, (SIZE, SIZE)).astype(np.float32)
            layout.write_image(image_path(root, split, "phase", fov), phase)
            layout.write_image(image_path(root, split, "nuclei", fov), nuclei_from_phase(phase))
            layout.write_image(image_path(root, split, "membrane", fov), -phase)
            if split == "test":
                mask = (phase > 100).astype(np.uint16)
                layout.write_mask(image_path(root, split, layout.MASKS, fov), mask)
    layout.write_dataset_json(root, {"source": "test", **dataset_statistics(root)})
    return root


def small_config(root: Path, **data) -> Config:
    config = Config()
    config.data.root = str(root)
    config.data.crop_size = 16
    config.data.val_crop_size = 0
    config.data.batch_size = 2
    config.data.num_workers = 0
    config.data.target_channels = ["nuclei", "membrane"]
    for key, value in data.items():
        setattr(config.data, key, value)
    return config


def _set_phase(key: str, value: object):
    def damage(root: Path) -> None:
        info = json.loads(layout.dataset_json_path(root).read_text())
        info["normalisation"]["phase"][key] = value
        layout.dataset_json_path(root).write_text(json.dumps(info))  # Infinity for inf

    return damage


def _nest(root: Path) -> None:
    depth = 200_000
    layout.dataset_json_path(root).write_text('{"normalisation": ' + "[" * depth + "]" * depth
                                              + "}")


MALFORMED = {
    "iqr-string": (_set_phase("iqr", "abc"), "normalisation.phase.iqr is \"abc\""),
    "iqr-null": (_set_phase("iqr", None), "normalisation.phase.iqr is null"),
    "iqr-list": (_set_phase("iqr", [1, 2]), "normalisation.phase.iqr is a list of 2"),
    "median-string": (_set_phase("median", "zero"), "normalisation.phase.median is \"zero\""),
    "nested-200k-deep": (_nest, "nested too deeply"),
    "iqr-infinity": (_set_phase("iqr", float("inf")), "normalisation.phase.iqr is Infinity"),
}
"""name: (damage(root), what the one line says about the field)."""
