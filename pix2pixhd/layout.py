"""The dataset on disk: folders, TIFF files, dataset.json, and the train-split statistics.

    DIR/<split>/<channel>/<fov>.tif     float32 2-D images; channel in phase, nuclei, membrane
    DIR/<split>/nuclei_masks/<fov>.tif  uint16 instance labels (0 is background)
    DIR/dataset.json                    provenance, counts, normalisation statistics

Everything that reads or writes these files goes through this module, so a bad file is
reported once, by name, with what to do about it.
"""

from __future__ import annotations

import functools
import glob
import json
import math
import numbers
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

SPLITS = ("train", "val", "test")
CHANNELS = ("phase", "nuclei", "membrane")
MASKS = "nuclei_masks"
PERCENTILES = (0.5, 99.5)
"""Robust range used to scale images: ignores the brightest and darkest 0.5 % of pixels."""
NORMALISE = ("dataset", "image")
"""How new phase images are scaled: the train split's median and IQR, or the image's own."""

HOW_TO_GET_DATA = (
    "make a dataset with `python -m pix2pixhd data synthetic --out data` "
    "(built in, offline) or `python -m pix2pixhd data download --out data` (real A549 images), "
    "or run `sh setup.sh`"
)


class DataError(ValueError):
    """A dataset file or folder that cannot be used as it is."""


def plain_name(name: object, what: str) -> str:
    """`name` if it is one plain path component, else a DataError naming `what`.

    Run and channel names, from options or read from checkpoints and dataset.json, become
    folder names: a separator, '..' or an absolute path would let them point anywhere on disk.
    """
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name
            or "\0" in name or Path(name).is_absolute()):
        raise DataError(f"{what} {name!r} is not a plain name: use one folder name without "
                        "'/', '\\' or '..'")
    return name


def check_output_folder(out: str | Path, inputs: list[str | Path | None]) -> Path:
    """Refuse an output folder that is, or lies inside, an input folder or a dataset.

    Predictions written into a data split would replace the real images of the same name. For
    an input file, only its own folder is refused (a subfolder beside it is fine).
    Returns `out` unchanged.
    """
    if Path(out).exists() and not Path(out).is_dir():
        raise DataError(f"output folder {out} is a file; choose a folder (it will be made)")
    where = Path(out).resolve()
    for source in (s for s in inputs if s is not None):
        folder = Path(source).resolve()
        inside = folder in where.parents and not folder.is_file()
        if where == (folder.parent if folder.is_file() else folder) or inside:
            raise DataError(f"output folder {out} is inside the input {source}; outputs there "
                            "would mix with or replace the inputs: choose a folder outside it")
    for folder in (where, *where.parents):
        if dataset_json_path(folder).is_file():
            raise DataError(f"output folder {out} is inside the dataset {folder} (it has a "
                            "dataset.json); choose a folder outside the dataset")
    return Path(out)


def image_path(root: str | Path, split: str, channel: str, fov: str) -> Path:
    return Path(root) / split / channel / f"{fov}.tif"


def list_fovs(root: str | Path, split: str, channel: str = "phase") -> list[str]:
    """Names of the fields of view of one split (file stems, sorted)."""
    folder = Path(root) / split / channel
    return sorted(p.stem for p in folder.glob("*.tif")) if folder.is_dir() else []


def read_image(path: str | Path) -> np.ndarray:
    """One 2-D image as float32; refuses unreadable, non-2-D and non-finite files."""
    array = _read_tiff(path)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{path} has pixel type {array.dtype}; expected real numbers")
    array = array.astype(np.float32, copy=False)
    bad = ~np.isfinite(array)
    if bad.any():
        raise DataError(
            f"{path} has {int(bad.sum())} NaN or infinite pixels; "
            "fix or remove this field of view"
        )
    return array


def read_mask(path: str | Path) -> np.ndarray:
    """One 2-D instance label image (0 = background) as int32; refuses non-integer masks."""
    array = _read_tiff(path)
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"{path} has pixel type {array.dtype}; an instance mask must hold integer labels "
            "(uint16 with 0 as background)"
        )
    if array.min() < 0:
        raise DataError(f"{path} has negative labels; labels must be >= 0 (0 is background)")
    return array.astype(np.int32, copy=False)


def _read_tiff(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    try:
        array = tifffile.imread(path)
    except Exception as error:  # tifffile raises many kinds for corrupt files
        raise DataError(f"{path} is not a readable TIFF ({error}); delete or replace it") from error
    array = np.asarray(array)
    if array.ndim != 2:
        raise DataError(f"{path} has shape {array.shape}; expected one 2-D plane (H, W)")
    return array


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write a float32 2-D TIFF atomically: a reader never sees a half-written file."""
    _write_atomic(path, np.asarray(image, dtype=np.float32))


def write_mask(path: str | Path, labels: np.ndarray) -> None:
    labels = np.asarray(labels)
    if labels.max(initial=0) > np.iinfo(np.uint16).max:
        raise DataError(f"{path}: {labels.max()} labels do not fit in uint16")
    _write_atomic(path, labels.astype(np.uint16))


def _write_atomic(path: str | Path, array: np.ndarray) -> None:
    if array.ndim != 2:
        raise DataError(f"refusing to write {path}: shape {array.shape} is not 2-D")
    write_atomically(path, lambda temporary: tifffile.imwrite(temporary, array))


def write_atomically(path: str | Path, write: Callable[[str], object]) -> Path:
    """Let `write` fill a temporary file beside `path`, then rename it: a reader (or a resumed
    download, or a crash) never sees a half-written file under the real name.

    Leftover temporaries of `path` from a killed earlier write are removed first, and the file
    takes the mode the umask gives new files (mkstemp alone would make it private, 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        leftover.unlink(missing_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(handle)
    try:
        os.chmod(temporary, 0o666 & ~current_umask())
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def write_json(path: str | Path, values: dict[str, Any]) -> Path:
    """Write a flat dict (e.g. a summary of metrics) as JSON, atomically; nan and inf -> null.

    JSON has no nan or inf (Python would write invalid tokens), so a score that is undefined
    (nan) or unbounded (the inf PSNR of a perfect prediction) is stored as null.
    """
    plain = {key: None if isinstance(value, numbers.Real) and not math.isfinite(value)
             else value for key, value in values.items()}
    text = json.dumps(plain, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return write_atomically(path, lambda temporary: Path(temporary).write_text(text))


def channel_statistics(
    root: str | Path,
    split: str = "train",
    channels: tuple[str, ...] = CHANNELS,
    max_pixels_per_image: int = 65536,
) -> dict[str, dict[str, float]]:
    """Robust intensity statistics per channel over one split (a strided subsample of pixels).

    Returns for each channel: median, iqr (75th - 25th percentile), p_low and p_high (the
    PERCENTILES), mean, std. These, never hard-coded constants, define the normalisation.
    """
    stats: dict[str, dict[str, float]] = {}
    fovs = list_fovs(root, split)
    if not fovs:
        raise DataError(f"{Path(root) / split} has no images to compute statistics from")
    for channel in channels:
        paths = [image_path(root, split, channel, fov) for fov in fovs]
        if not all(p.is_file() for p in paths):
            continue
        samples = [_subsample(read_image(p), max_pixels_per_image) for p in paths]
        values = np.concatenate(samples).astype(np.float64)
        q25, q50, q75, low, high = np.percentile(values, [25, 50, 75, *PERCENTILES])
        stats[channel] = {
            "median": float(q50),
            "iqr": float(q75 - q25),
            "p_low": float(low),
            "p_high": float(high),
            "mean": float(values.mean()),
            "std": float(values.std()),
        }
    return stats


def _subsample(image: np.ndarray, max_pixels: int) -> np.ndarray:
    step = max(1, int(np.ceil(np.sqrt(image.size / max_pixels))))
    return image[::step, ::step].ravel()


def dataset_json_path(root: str | Path) -> Path:
    return Path(root) / "dataset.json"


def read_dataset_json(root: str | Path) -> dict[str, Any]:
    path = dataset_json_path(root)
    if not Path(root).is_dir():
        raise DataError(f"data folder {root} does not exist; {HOW_TO_GET_DATA}")
    if not path.is_file():
        raise DataError(f"{path} is missing; {HOW_TO_GET_DATA}")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}); {HOW_TO_GET_DATA}") from error
    if not isinstance(info, dict):
        raise DataError(f"{path} holds a {type(info).__name__}, not the mapping of source, "
                        f"counts and normalisation that pix2pixhd writes; {HOW_TO_GET_DATA}")
    if not isinstance(info.get("normalisation", {}), dict):
        raise DataError(f"{path}: 'normalisation' holds a "
                        f"{type(info['normalisation']).__name__}, not a mapping of channels; "
                        "rewrite it with pix2pixhd.layout.write_dataset_json")
    for channel in info.get("normalisation", {}):
        plain_name(channel, f"{path}: channel")
    return info


def input_statistics(root: str | Path, channel: str = "phase") -> dict[str, float]:
    """median, iqr, p1 and p99 of one channel over the train split (a strided subsample).

    What a model saw: recorded in its checkpoints, so that new inputs can be compared with it.
    Measured once per version of dataset.json (a Trainer saves every epoch).
    """
    path = dataset_json_path(root)
    stamp = path.stat().st_mtime_ns if path.is_file() else 0
    return dict(_input_statistics(str(Path(root).resolve()), channel, stamp))


@functools.lru_cache(maxsize=8)
def _input_statistics(root: str, channel: str, stamp: int) -> dict[str, float]:
    fovs = list_fovs(root, "train", channel)
    if not fovs:
        raise DataError(f"{Path(root) / 'train' / channel} has no images; {HOW_TO_GET_DATA}")
    values = np.concatenate([_subsample(read_image(image_path(root, "train", channel, fov)),
                                        65536) for fov in fovs]).astype(np.float64)
    q1, q25, q50, q75, q99 = np.percentile(values, [1, 25, 50, 75, 99])
    return {"median": float(q50), "iqr": float(q75 - q25), "p1": float(q1), "p99": float(q99)}


PROVENANCE_DROPPED = ("normalisation", "positions", "counts", "percentiles")
"""dataset.json entries not copied into a checkpoint's provenance (long, or kept elsewhere)."""


def data_provenance(root: str | Path, channel: str = "phase") -> dict[str, Any]:
    """Where a model's data came from, for its checkpoints: plain types only.

    {"source": "synthetic" or the real dataset's name, "details": the rest of dataset.json
    (seed and simulator parameters, or URLs), "counts": fields of view per split,
    "input_statistics": `input_statistics` of the input channel, "root": the folder}.
    """
    info = read_dataset_json(root)
    return {
        "source": str(info.get("source", "unknown")),
        "details": {k: v for k, v in info.items() if k not in PROVENANCE_DROPPED
                    and k != "source"},
        "counts": {split: len(list_fovs(root, split)) for split in SPLITS},
        "input_statistics": input_statistics(root, channel),
        "root": str(root),
    }


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_dataset_json(root: str | Path, info: dict[str, Any]) -> None:
    """Write provenance plus the counts and train statistics measured from the files."""
    root = Path(root)
    info = dict(info)
    info["counts"] = {split: len(list_fovs(root, split)) for split in SPLITS}
    info["percentiles"] = list(PERCENTILES)
    info["normalisation"] = channel_statistics(root, "train")
    text = json.dumps(info, indent=2, sort_keys=True)
    temporary = dataset_json_path(root).with_suffix(".json.part")
    temporary.write_text(text + "\n")
    os.replace(temporary, dataset_json_path(root))
