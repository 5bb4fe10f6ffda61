"""Dataset checks: every problem of a dataset folder, one message each, naming the file.

    problems = check_dataset("data", crop_size=256)   # what `python -m pix2pixhd data check` prints
    check_training_data(config.data)                  # raises the first, before training starts

A field of view is checked by one function, `check_fov`: from its TIFF headers alone when a
dataset is built (fast), or from every pixel before training and in `data check` (NaN and
infinite pixels, pixel types). The check never needs torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pix2pixhd.config import DataConfig
from pix2pixhd.layout import (
    CHANNELS,
    HOW_TO_GET_DATA,
    MASKS,
    SPLITS,
    DataError,
    dataset_json_path,
    image_path,
    list_fovs,
    read_dataset_json,
    read_image,
    read_image_shape,
    read_mask,
)

log = logging.getLogger(__name__)


def check_dataset(
    root: str | Path, crop_size: int | None = None, *,
    input_channel: str = DataConfig.input_channel,
) -> list[str]:
    """Every problem of a dataset folder, one message each (naming the file); [] if usable.

    Reads every file once. crop_size: also report images smaller than this crop.
    input_channel: expected in every split; other channels (and masks) are checked wherever
    their folder exists. Never raises for a problem in the files: the caller decides what to
    do with the list.
    """
    root = Path(root)
    if not root.is_dir():
        return [f"data folder {root} does not exist; {HOW_TO_GET_DATA}"]
    problems = []
    try:
        info: dict[str, Any] | None = read_dataset_json(root)
    except DataError as error:
        problems.append(str(error))
        info = None
    for split in SPLITS:
        problems += _check_split(root, split, crop_size, [input_channel])
    if info is not None:
        problems += _check_statistics(root, info)
    return problems


def check_training_data(data: DataConfig) -> None:
    """Raise one DataError if the train or val split has a problem `check_dataset` reports.

    Reads every pixel of the input and target channels (finite values, pixel type, readable
    file), so a broken file stops the run before the first epoch, not in a loader worker.
    """
    root = Path(data.root)
    read_dataset_json(root)  # a missing folder or dataset.json says how to get data
    channels = [data.input_channel, *data.target_channels]
    problems = _check_split(root, "train", data.crop_size or None, channels)
    problems += _check_split(root, "val", data.val_crop_size or None, channels)
    if problems:
        more = f" (and {len(problems) - 1} more: `python -m pix2pixhd data check {root}`)"
        raise DataError(problems[0] + (more if len(problems) > 1 else ""))


def check_fov(
    root: str | Path, split: str, fov: str, channels: Sequence[str], *,
    crop_size: int | None = None, masks: bool = False, read_pixels: bool = True,
) -> list[str]:
    """Every problem of one field of view, in order: missing channels, unreadable files, sizes
    that differ or are smaller than crop_size (0 or None: no crop), then its mask (if masks).

    read_pixels=False reads only the TIFF headers; True reads the images too, which also
    finds NaN and infinite pixels and pixel types that are not real numbers.
    """
    root = Path(root)
    problems = []
    shapes: dict[Path, tuple[int, ...]] = {}
    for channel in channels:
        path = image_path(root, split, channel, fov)
        if not path.is_file():
            problems.append(_missing_message(path, fov, channel))
            continue
        try:
            if read_pixels:
                image = read_image(path)
                shapes[path] = image.shape
                _warn_if_constant(path, image)
            else:
                shapes[path] = read_image_shape(path)
        except DataError as error:
            problems.append(str(error))
    if len(set(shapes.values())) > 1:
        problems.append(shape_mismatch_message(split, fov, shapes))
    elif shapes:
        path, shape = next(iter(shapes.items()))
        if crop_size and min(shape) < crop_size:
            problems.append(_too_small_message(path, shape, crop_size))
    if masks:
        problems += _check_mask(image_path(root, split, MASKS, fov), fov, shapes)
    return problems


def constant_image_message(path: str | Path, image: np.ndarray) -> str | None:
    """One line when every pixel of `image` is the same, else None.

    No microscope image is flat: a constant phase or stain image is a download whose chunks
    were missing (zarr fills them with one value), a blank acquisition, or an empty field of
    view. It is usable as data, so it is a warning, not a problem.
    """
    if image.size == 0 or image.min() != image.max():
        return None
    return (f"{path} is constant (every pixel is {image.flat[0]:g}): a broken download or an "
            "empty field of view; look at it, and remove that field of view if it is not data")


def _warn_if_constant(path: Path, image: np.ndarray) -> None:
    message = constant_image_message(path, image)
    if message:
        log.warning(message)


def shape_mismatch_message(split: str, fov: str, shapes: dict[Path, tuple[int, ...]]) -> str:
    listed = ", ".join(f"{path} {tuple(shape)}" for path, shape in shapes.items())
    return (
        f"the channels of field of view {fov!r} ({split}) differ in size: {listed}; "
        "every channel of a field of view must be the same size (registered pixel to pixel)"
    )


def _check_split(
    root: Path, split: str, crop_size: int | None, required: list[str]
) -> list[str]:
    """The `required` channels are expected; other channels (and masks) wherever their
    folder exists."""
    folder = root / split
    channels = required + [c for c in CHANNELS if c not in required and (folder / c).is_dir()]
    has_masks = (folder / MASKS).is_dir()
    fovs = sorted({fov for c in [*channels, MASKS] for fov in list_fovs(root, split, c)})
    if not fovs:
        expected = folder / required[0] / "<fov>.tif"
        return [f"{folder} has no images (expected {expected}); {HOW_TO_GET_DATA}"]
    problems = []
    for fov in tqdm(fovs, desc=f"checking {split}", unit="fov", leave=False):
        problems += check_fov(root, split, fov, channels, crop_size=crop_size, masks=has_masks)
    return problems


def _check_mask(path: Path, fov: str, shapes: dict[Path, tuple[int, ...]]) -> list[str]:
    if not path.is_file():
        return [_missing_message(path, fov, MASKS)]
    try:
        mask = read_mask(path)
    except DataError as error:
        return [str(error)]
    if shapes and len(set(shapes.values())) == 1:
        image, shape = next(iter(shapes.items()))
        if mask.shape != shape:
            return [
                f"{path} has shape {mask.shape} but {image} has {shape}; the mask must label "
                "the image's pixels one to one"
            ]
    return []


def _check_statistics(root: Path, info: dict[str, Any]) -> list[str]:
    """Every channel with train images needs its normalisation statistics in dataset.json."""
    stats = info.get("normalisation", {})
    return [
        f"{dataset_json_path(root)} has no normalisation statistics for {channel!r}, which has "
        f"train images; rebuild the dataset (its statistics are measured as it is written)"
        for channel in CHANNELS
        if list_fovs(root, "train", channel) and channel not in stats
    ]


def _missing_message(path: Path, fov: str, channel: str) -> str:
    return (
        f"{path} is missing: field of view {fov!r} has no {channel} image; add it or remove "
        "the field of view from every channel folder"
    )


def _too_small_message(path: Path, shape: tuple[int, ...], crop_size: int) -> str:
    return (
        f"{path} is {shape[0]}x{shape[1]} pixels, smaller than the crop of {crop_size}; use "
        f"crops of at most {min(shape)} (`--set data.crop_size={min(shape)}` for training, "
        f"`data.val_crop_size` for validation, 0 = whole image) or remove this field of view"
    )
