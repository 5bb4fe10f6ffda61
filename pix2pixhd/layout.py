"""The dataset on disk: its folders, its TIFF files and its dataset.json.

    DIR/<split>/<channel>/<fov>.tif     float32 2-D images; channel in phase, nuclei, membrane
    DIR/<split>/nuclei_masks/<fov>.tif  uint16 instance labels (0 is background)
    DIR/dataset.json                    provenance, counts, normalisation statistics
                                        (measured by `normalisation.dataset_statistics`)

Everything that reads or writes these files goes through this module, so a bad file is
reported once, by name, with what to do about it; the writing itself (atomic, never through a
link) is `files.py`'s.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from pix2pixhd.files import DataError, refuse_link, write_atomically, write_text

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CHANNELS = ("phase", "nuclei", "membrane")
MASKS = "nuclei_masks"
STATISTICS = ("median", "iqr", "p_low", "p_high")
"""What dataset.json holds for each channel under "normalisation" (and mean, std, and p_top in
files written since the asinh stain map, which needs it)."""
UNITS_FILE = "units.json"
"""Written by `predict` beside its outputs: their units ("stain", or "viscy" for VisCy's
median/IQR units) and why; `evaluate` reads it."""
OWN_FILES = (UNITS_FILE, "dataset.json", "summary.json")
"""Files this package writes beside images, which a TIFF listing passes over in silence."""
MATCH = ("name", "sorted")
"""How `evaluate` pairs predictions with fields of view: by name, or by sorted order (as the
2024 course notebook paired VisCy's predictions)."""

HOW_TO_GET_DATA = (
    "make a dataset with `python -m pix2pixhd data synthetic --out data` "
    "(built in, offline) or `python -m pix2pixhd data download --out data` (real A549 images), "
    "or run `sh setup.sh`"
)


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
    if Path(out).is_symlink() and not Path(out).exists():
        raise DataError(f"output folder {out} is a symbolic link to {os.readlink(out)}, which "
                        "does not exist; make that folder or choose another --out")
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


def refuse_to_replace_foreign_files(
    out: str | Path, paths: Iterable[Path], markers: Sequence[str], command: str
) -> None:
    """DataError if one of `paths` exists in `out` and `out` holds none of `markers`.

    Each command that writes into a chosen output folder leaves a marker there first (predict
    its units.json, sample its sampling.json, evaluate its summary.json), so a file of the same
    name in a folder without one was not written by that command: a real stain, a table of the
    user's. Such a file is refused, not replaced. A subfolder of `out` on the way to a path
    that is a link (OUT/nuclei pointing at real stains) is refused as a link first.
    """
    out = Path(out)
    paths = list(paths)
    for folder in sorted({path.parent for path in paths} - {out}):
        refuse_link(folder, out)
    if any((out / marker).is_file() for marker in markers):
        return
    taken = [path for path in paths if path.is_file() or path.is_symlink()]
    if taken:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise DataError(f"{taken[0]}{more} is already there, and {out} holds no "
                        f"{' or '.join(markers)}: `{command}` did not write it, so it will not "
                        "replace it; choose a new or empty output folder")


def image_path(root: str | Path, split: str, channel: str, fov: str) -> Path:
    return Path(root) / split / channel / f"{fov}.tif"


def list_fovs(root: str | Path, split: str, channel: str = "phase") -> list[str]:
    """Names of the fields of view of one split (file stems, sorted)."""
    folder = Path(root) / split / channel
    return sorted(p.stem for p in folder.glob("*.tif")) if folder.is_dir() else []


TIFF_SUFFIXES = (".tif", ".tiff")
"""What a TIFF file's name ends with, in any case."""


def list_tiffs(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """The TIFF files in `folder` (with `recursive`, its subfolders too), sorted by path.

    Any case of .tif or .tiff counts. Hidden files (a leftover `.x.tif.abc.part` of an
    interrupted write), `.part` files and the JSON files this package writes beside images are
    skipped; other files are named in one log line, so that `b.tif.bak` is neither read as an
    image nor silently dropped.
    """
    folder = Path(folder)
    found, others = [], []
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.suffix.lower() in TIFF_SUFFIXES:
            found.append(path)
        elif path.suffix.lower() != ".part" and path.name not in OWN_FILES:
            others.append(str(relative))
    if others:
        shown = ", ".join(others[:5]) + (f", ... ({len(others)} in all)" if len(others) > 5
                                         else "")
        log.info("%s: skipped %d files that are not .tif/.tiff: %s", folder, len(others), shown)
    return found


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
    if array.max() > np.iinfo(np.int32).max:
        raise DataError(f"{path} has label {array.max()}, beyond the {np.iinfo(np.int32).max} "
                        "this package counts to; renumber the nuclei 1..N (e.g. skimage's "
                        "relabel_sequential) and save the mask as uint16 or uint32")
    return array.astype(np.int32, copy=False)


def read_image_shape(path: str | Path) -> tuple[int, ...]:
    """Shape of a 2-D TIFF from its header, without reading the pixels (fast)."""
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tiff:
            shape = tuple(int(n) for n in tiff.series[0].shape)
    except Exception as error:  # tifffile raises many kinds for corrupt files
        raise DataError(_unreadable_message(path, error)) from error
    _check_2d(path, shape)
    return shape


def _read_tiff(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} {_not_a_file(path)}")
    try:
        array = np.asarray(tifffile.imread(path))
    except Exception as error:  # tifffile raises many kinds for corrupt files
        raise DataError(_unreadable_message(path, error)) from error
    _check_2d(path, array.shape)
    return array


def _unreadable_message(path: Path, error: Exception) -> str:
    return f"{path} is not a readable TIFF ({error}); delete or replace it"


def _check_2d(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) != 2:
        raise DataError(f"{path} has shape {shape}; expected one 2-D plane (H, W)")


def _not_a_file(path: Path) -> str:
    """Why `path` cannot be read as a file: it is missing, a folder, or a device or pipe."""
    if path.is_dir():
        return "is a folder, not a TIFF file; pass the file, or rename the folder"
    if path.exists():
        return "is not a regular file (a device or a pipe); pass a TIFF file"
    if path.is_symlink():
        return f"is a symbolic link to {os.readlink(path)}, which does not exist"
    return "does not exist"


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


def dataset_json_path(root: str | Path) -> Path:
    return Path(root) / "dataset.json"


def read_dataset_json(root: str | Path) -> dict[str, Any]:
    """ROOT/dataset.json, refused in one line naming the file and the field unless it has the
    shape pix2pixhd writes. Every reader of the file comes through here."""
    path = dataset_json_path(root)
    if not Path(root).is_dir():
        raise DataError(f"data folder {root} does not exist; {HOW_TO_GET_DATA}")
    if not path.is_file():
        raise DataError(f"{path} is missing; {HOW_TO_GET_DATA}")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}); {HOW_TO_GET_DATA}") from error
    except RecursionError:
        raise DataError(f"{path} is nested too deeply to read: it is not a dataset.json that "
                        f"pix2pixhd wrote; {HOW_TO_GET_DATA}") from None
    problem = _dataset_json_problem(info)
    if problem:
        raise DataError(f"{path}: {problem}. Correct that field, or delete {path.name} and "
                        f"{HOW_TO_GET_DATA}")
    return info


def _dataset_json_problem(info: Any) -> str | None:
    """What keeps `info` from being a dataset.json as pix2pixhd writes it, or None.

    Checked: a mapping; "source" a name; "normalisation" a mapping from plain channel names to
    the STATISTICS (and any others), each a finite number, no spread negative. A statistic of
    Infinity would scale every image to zeros, and a string would fail deep inside numpy.
    """
    if not isinstance(info, dict):
        return (f"it holds a {type(info).__name__}, not the mapping of source, counts and "
                "normalisation that pix2pixhd writes")
    if not isinstance(info.get("source", ""), str):
        return f"'source' is {_short(info['source'])}, not a name"
    channels = info.get("normalisation", {})
    if not isinstance(channels, dict):
        return f"'normalisation' holds a {type(channels).__name__}, not a mapping of channels"
    for channel, stats in channels.items():
        try:
            field = f"normalisation.{plain_name(channel, 'channel')}"
        except DataError as error:
            return f"normalisation: {error}"
        if not isinstance(stats, dict):
            return f"{field} holds a {type(stats).__name__}, not a mapping of statistics"
        missing = [name for name in STATISTICS if name not in stats]
        if missing:
            return f"{field} has no {', '.join(missing)}"
        for name, value in stats.items():
            if not is_finite_number(value):
                return f"{field}.{name} is {_short(value)}, not a finite number"
        if stats["iqr"] < 0 or stats["p_high"] < stats["p_low"]:
            return (f"{field} has iqr {stats['iqr']}, p_low {stats['p_low']} and p_high "
                    f"{stats['p_high']}: no image has a negative spread")
    return None


def is_finite_number(value: object) -> bool:
    """A real number (not a bool or a string) that is neither NaN nor infinite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _short(value: object) -> str:
    """`value` as JSON spells it, cut short: a message never prints a whole file."""
    if isinstance(value, dict | list):
        return f"a {'list' if isinstance(value, list) else 'mapping'} of {len(value)}"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def write_dataset_json(root: str | Path, info: dict[str, Any]) -> None:
    """Write ROOT/dataset.json: `info` (provenance, and the statistics that
    `normalisation.dataset_statistics` measured) plus the counts of the files.

    Refuses what `read_dataset_json` would refuse, so no reader meets a file that was
    written wrong.
    """
    root = Path(root)
    info = dict(info)
    info["counts"] = {split: len(list_fovs(root, split)) for split in SPLITS}
    problem = _dataset_json_problem(info)
    if problem:
        raise DataError(f"refusing to write {dataset_json_path(root)}: {problem}")
    write_text(dataset_json_path(root), json.dumps(info, indent=2, sort_keys=True) + "\n")
