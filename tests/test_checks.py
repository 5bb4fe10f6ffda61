"""Tests for pix2pixhd.checks: every problem of a dataset folder, once, naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pix2pixhd import layout
from pix2pixhd.checks import check_dataset, check_fov, check_training_data
from pix2pixhd.layout import DataError, image_path

from .tiny_data import MALFORMED, SIZE, small_config


def test_check_dataset_accepts_a_good_dataset(dataset_root):
    assert check_dataset(dataset_root, crop_size=32) == []


def _write_garbage(root: Path) -> Path:
    path = image_path(root, "train", "nuclei", "fov_0001")
    path.write_bytes(b"this is not a tiff")
    return path


def _write_3d(root: Path) -> Path:
    path = image_path(root, "val", "phase", "fov_0000")
    import tifffile

    tifffile.imwrite(path, np.zeros((3, SIZE, SIZE), np.float32), photometric="minisblack")
    return path


def _write_nan(root: Path) -> Path:
    path = image_path(root, "train", "phase", "fov_0003")
    image = np.zeros((SIZE, SIZE), np.float32)
    image[4, 4] = np.nan
    layout.write_image(path, image)
    return path


def _remove_channel(root: Path) -> Path:
    path = image_path(root, "train", "membrane", "fov_0002")
    path.unlink()
    return path


def _write_other_shape(root: Path) -> Path:
    path = image_path(root, "test", "nuclei", "fov_0001")
    layout.write_image(path, np.zeros((SIZE, SIZE - 4)))
    return path


def _write_float_mask(root: Path) -> Path:
    path = image_path(root, "test", layout.MASKS, "fov_0000")
    layout.write_image(path, np.zeros((SIZE, SIZE)))
    return path


def _write_small_mask(root: Path) -> Path:
    path = image_path(root, "test", layout.MASKS, "fov_0001")
    layout.write_mask(path, np.zeros((SIZE // 2, SIZE)))
    return path


def _empty_split(root: Path) -> Path:
    for path in (root / "val").rglob("*.tif"):
        path.unlink()
    return root / "val"


def _remove_dataset_json(root: Path) -> Path:
    path = root / "dataset.json"
    path.unlink()
    return path


@pytest.mark.parametrize(
    "damage",
    [
        _write_garbage,
        _write_3d,
        _write_nan,
        _remove_channel,
        _write_other_shape,
        _write_float_mask,
        _write_small_mask,
        _empty_split,
        _remove_dataset_json,
    ],
)
def test_check_dataset_reports_each_problem_once_by_name(dataset_root, damage):
    path = damage(dataset_root)
    problems = check_dataset(dataset_root)
    assert len(problems) == 1, problems
    assert str(path) in problems[0]


def test_check_dataset_reports_images_smaller_than_the_crop(dataset_root):
    problems = check_dataset(dataset_root, crop_size=SIZE + 1)
    assert len(problems) == 8  # every field of view of every split
    assert all("data.crop_size" in problem for problem in problems)
    assert str(image_path(dataset_root, "train", "phase", "fov_0000")) in problems[0]


def test_check_dataset_on_a_missing_folder_says_how_to_get_data(tmp_path):
    problems = check_dataset(tmp_path / "nowhere")
    assert len(problems) == 1
    assert "nowhere" in problems[0] and "pix2pixhd data synthetic" in problems[0]


def _write_pixels(kind: str):
    def damage(root: Path) -> Path:
        import tifffile

        path = image_path(root, "train", "phase", "fov_0001")
        image = np.ones((SIZE, SIZE), np.float32)
        if kind == "inf":
            image[3, 3] = np.inf
            tifffile.imwrite(path, image)
        elif kind == "complex":
            tifffile.imwrite(path, image.astype(np.complex64))
        elif kind == "bool":
            tifffile.imwrite(path, image > 0)
        elif kind == "truncated":
            tifffile.imwrite(path, image)
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path

    return damage


@pytest.mark.parametrize("kind, words", [
    ("inf", "NaN or infinite pixels"), ("complex", "pixel type complex64"),
    ("bool", "pixel type bool"), ("truncated", "not a readable TIFF"),
])
def test_training_start_and_data_check_find_the_same_bad_pixels(dataset_root, kind, words):
    path = _write_pixels(kind)(dataset_root)
    problems = check_dataset(dataset_root)
    assert len(problems) == 1 and str(path) in problems[0] and words in problems[0]
    with pytest.raises(DataError) as error:
        check_training_data(small_config(dataset_root).data)
    assert str(error.value) == problems[0]


# --- the input channel comes from the configuration ---


def _keep_only(root: Path, channels: tuple[str, ...]) -> None:
    """Delete every image folder but `channels` (and the masks) from every split."""
    for split in layout.SPLITS:
        for channel in layout.CHANNELS:
            if channel not in channels:
                for path in (root / split / channel).glob("*.tif"):
                    path.unlink()
                (root / split / channel).rmdir()


def test_a_dataset_without_phase_serves_another_input_channel(dataset_root):
    _keep_only(dataset_root, ("membrane", "nuclei"))
    config = small_config(dataset_root, input_channel="membrane", target_channels=["nuclei"])
    check_training_data(config.data)  # no phase folder, and none needed
    assert check_dataset(dataset_root, input_channel="membrane") == []
    image_path(dataset_root, "val", "membrane", "fov_0001").unlink()
    with pytest.raises(DataError, match=r"val/membrane/fov_0001\.tif is missing"):
        check_training_data(config.data)


def test_the_configured_input_channel_is_required(dataset_root):
    _keep_only(dataset_root, ("phase", "nuclei"))
    problems = check_dataset(dataset_root, input_channel="membrane")
    assert len(problems) == 8  # every field of view of every split lacks its input image
    assert all("membrane image" in problem for problem in problems)


def test_one_check_of_a_field_of_view_from_headers_or_from_pixels(dataset_root):
    path = image_path(dataset_root, "train", "phase", "fov_0001")
    image = np.ones((SIZE, SIZE), np.float32)
    image[2, 2] = np.nan
    layout.write_image(path, image)
    channels = ["phase", "nuclei"]
    assert check_fov(dataset_root, "train", "fov_0001", channels, read_pixels=False) == []
    assert "NaN" in check_fov(dataset_root, "train", "fov_0001", channels)[0]
    too_small = check_fov(dataset_root, "train", "fov_0000", channels, crop_size=SIZE + 1,
                          read_pixels=False)
    assert len(too_small) == 1 and "data.crop_size" in too_small[0]


# --- a malformed dataset.json ---


@pytest.mark.parametrize("case", MALFORMED)
def test_data_check_reports_a_malformed_dataset_json_in_one_line(dataset_root, case):
    damage, words = MALFORMED[case]
    damage(dataset_root)
    problems = check_dataset(dataset_root)
    assert len(problems) == 1, problems
    assert "\n" not in problems[0] and str(dataset_root / "dataset.json") in problems[0]
    assert words in problems[0]


def test_data_check_names_statistics_missing_for_a_channel_with_train_images(dataset_root):
    info = json.loads((dataset_root / "dataset.json").read_text())
    del info["normalisation"]["membrane"]
    (dataset_root / "dataset.json").write_text(json.dumps(info))
    problems = check_dataset(dataset_root)
    assert len(problems) == 1 and "'membrane'" in problems[0]
