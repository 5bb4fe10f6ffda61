"""Paired images for training: normalisation, crops, flips/rot90, samplers and loaders.

A training item is one crop of a phase image and the same crop of its fluorescence image(s):

    normaliser = Normaliser.from_dataset("data", "phase", ["nuclei"])
    dataset = PairedDataset("data", "train", normaliser, crop_size=256, augment=True)
    dataset.set_epoch(3)
    item = dataset[0]   # {"input": (1, 256, 256), "target": (1, 256, 256), "fov": "fov_0000"}

Every random choice (crop position, flip, rotation) comes from `np.random.default_rng([seed,
epoch, index])`, so an epoch is the same whatever the number of workers or GPUs, and a resumed
run sees exactly the crops it would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import tifffile
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

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
    read_mask,
)

log = logging.getLogger(__name__)

Array = TypeVar("Array", np.ndarray, torch.Tensor)

_INPUT_KEYS = ("median", "iqr")
_TARGET_KEYS = ("p_low", "p_high")


# --- normalisation ---------------------------------------------------------------------------


@dataclass
class Normaliser:
    """Scales images with the train split's statistics (from dataset.json), never constants.

    Input (phase): (x - median) / iqr, so the typical pixel is near 0 and the spread near 1.
    Targets (stains): p_low -> -1 and p_high -> +1, the range of the generator's final tanh.
    Works on numpy arrays and torch tensors alike; stored in checkpoints with `to_dict()`, so
    prediction does not need the dataset.
    """

    input_channel: str
    target_channels: list[str]
    stats: dict[str, dict[str, float]] = field(repr=False)
    """Per channel: median and iqr (input), p_low and p_high (targets), as in dataset.json."""

    def __post_init__(self) -> None:
        self.target_channels = list(self.target_channels)
        if not self.target_channels:
            raise ValueError("Normaliser needs at least one target channel")
        needed = {self.input_channel: _INPUT_KEYS}
        needed.update({channel: _TARGET_KEYS for channel in self.target_channels})
        for channel, keys in needed.items():
            values = self.stats.get(channel)
            if values is None or any(key not in values for key in keys):
                raise DataError(
                    f"no normalisation statistics ({', '.join(keys)}) for channel {channel!r}; "
                    f"known channels: {sorted(self.stats) or 'none'}. The statistics come from "
                    "the train split's images of that channel (dataset.json, 'normalisation')"
                )
        if not self.stats[self.input_channel]["iqr"] > 0:
            raise DataError(
                f"channel {self.input_channel!r} has an interquartile range of "
                f"{self.stats[self.input_channel]['iqr']}: its train images are (nearly) constant"
            )
        for channel in self.target_channels:
            low, high = self.stats[channel]["p_low"], self.stats[channel]["p_high"]
            if not high > low:
                raise DataError(
                    f"channel {channel!r} has p_high {high} <= p_low {low}: its train images "
                    "are (nearly) constant"
                )

    @classmethod
    def from_dataset(
        cls, root: str | Path, input_channel: str, target_channels: list[str]
    ) -> Normaliser:
        """The statistics stored in ROOT/dataset.json (measured on the train split)."""
        info = read_dataset_json(root)
        stats = info.get("normalisation") or {}
        wanted = [input_channel, *target_channels]
        missing = [channel for channel in wanted if channel not in stats]
        if missing:
            raise DataError(
                f"{dataset_json_path(root)} has no normalisation statistics for "
                f"{', '.join(map(repr, missing))} (it has {sorted(stats) or 'none'}); "
                f"does {Path(root) / 'train'} have images of that channel? Choose other "
                "channels (data.input_channel, data.target_channels) or rebuild the dataset"
            )
        return cls(input_channel, list(target_channels), {c: dict(stats[c]) for c in wanted})

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str, list, float): safe for `torch.load(weights_only=True)`."""
        return {
            "input_channel": self.input_channel,
            "target_channels": list(self.target_channels),
            "stats": {c: {k: float(v) for k, v in s.items()} for c, s in self.stats.items()},
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Normaliser:
        return cls(values["input_channel"], list(values["target_channels"]), values["stats"])

    def for_image(self, image: np.ndarray) -> Normaliser:
        """A copy that scales the input by `image`'s own median and IQR (targets unchanged).

        For phase images in other units or offsets than the training data: the model then
        sees the same typical value and spread as in training, whatever the units.
        """
        q25, median, q75 = np.percentile(np.asarray(image, np.float64), [25, 50, 75])
        if not q75 > q25:
            raise DataError(f"the image has an interquartile range of {q75 - q25}: it is "
                            "(nearly) constant, so it cannot be scaled by its own statistics")
        stats = {channel: dict(values) for channel, values in self.stats.items()}
        stats[self.input_channel] |= {"median": float(median), "iqr": float(q75 - q25)}
        return Normaliser(self.input_channel, self.target_channels, stats)

    def normalise_input(self, x: Array) -> Array:
        """Phase image(s) of any shape -> median 0, interquartile range 1."""
        stats = self.stats[self.input_channel]
        return (_as_float(x) - stats["median"]) / stats["iqr"]

    def normalise_target(self, y: Array) -> Array:
        """Stain images (C, H, W) or (B, C, H, W) -> [p_low, p_high] onto [-1, 1], per channel."""
        y = _as_float(y)
        low, high = self._target_range(y)
        return 2 * (y - low) / (high - low) - 1

    def denormalise_target(self, y: Array) -> Array:
        """Inverse of `normalise_target`: back to the stain's own intensity units."""
        y = _as_float(y)
        low, high = self._target_range(y)
        return (y + 1) / 2 * (high - low) + low

    def _target_range(self, y: Array) -> tuple[Any, Any]:
        """p_low and p_high shaped to broadcast over y's channel axis (-3; 0 for (C, N))."""
        lows = [self.stats[c]["p_low"] for c in self.target_channels]
        highs = [self.stats[c]["p_high"] for c in self.target_channels]
        if len(lows) == 1:
            return lows[0], highs[0]
        axis = -3 if y.ndim >= 3 else 0
        if y.ndim < 2 or y.shape[axis] != len(lows):
            raise ValueError(
                f"stain array of shape {tuple(y.shape)} does not have the {len(lows)} channels "
                f"{self.target_channels} on axis {axis}; expected (C, H, W) or (B, C, H, W)"
            )
        shape = (len(lows),) + (1,) * (-axis - 1 if axis < 0 else y.ndim - 1)
        if isinstance(y, torch.Tensor):
            low = torch.tensor(lows, dtype=y.dtype, device=y.device).reshape(shape)
            high = torch.tensor(highs, dtype=y.dtype, device=y.device).reshape(shape)
            return low, high
        return np.asarray(lows, y.dtype).reshape(shape), np.asarray(highs, y.dtype).reshape(shape)


def _as_float(x: Any) -> Any:
    """Tensors stay tensors and arrays stay arrays; integer pixels become float32."""
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.float()
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)


# --- the dataset -----------------------------------------------------------------------------


class PairedDataset(Dataset):
    """Crops of (input, target) image pairs of one split, normalised, optionally augmented.

    Items: {"input": float32 tensor (1, h, w), "target": float32 tensor (C, h, w), "fov": str}.
    Length: number of fields of view x crops_per_image.

    With augment=True every item is a random crop followed by one of the 8 symmetries of a
    square (rot90 x flip), the same for input and target, drawn from the generator seeded by
    (seed, epoch, index): call `set_epoch` before each epoch. With augment=False the crop is the
    centre crop. `random_crop` (default: as augment) separates the two, so training without
    flips still sees random crops. crop_size 0 keeps the whole image.

    All files are checked when the dataset is built (shapes from the TIFF headers, so this is
    fast), so a missing channel, mismatched sizes or too-small images stop the run at once.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        normaliser: Normaliser,
        *,
        crop_size: int,
        augment: bool,
        crops_per_image: int = 1,
        seed: int = 0,
        random_crop: bool | None = None,
    ) -> None:
        if crop_size < 0:
            raise ValueError(f"crop_size must be >= 0 (0 = whole image), got {crop_size}")
        if crops_per_image < 1:
            raise ValueError(f"crops_per_image must be >= 1, got {crops_per_image}")
        self.root = Path(root)
        self.split = split
        self.normaliser = normaliser
        self.crop_size = crop_size
        self.augment = augment
        self.random_crop = augment if random_crop is None else random_crop
        self.crops_per_image = crops_per_image
        self.seed = seed
        self.epoch = 0
        self.channels = [normaliser.input_channel, *normaliser.target_channels]
        self.fovs = list_fovs(self.root, split, normaliser.input_channel)
        if not self.fovs:
            folder = self.root / split / normaliser.input_channel
            raise DataError(f"{folder} has no .tif images; {HOW_TO_GET_DATA}")
        for fov in self.fovs:
            self._check_fov(fov)

    def __len__(self) -> int:
        return len(self.fovs) * self.crops_per_image

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose crops and flips __getitem__ draws."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        fov = self.fovs[index // self.crops_per_image]
        images = self._read_fov(fov)  # (1 + C, H, W), raw intensities
        rng = np.random.default_rng([self.seed, self.epoch, index])
        images = self._crop(images, rng)
        if self.augment:
            images = _dihedral(
                images, _draw_symmetry(rng, square=images.shape[-1] == images.shape[-2])
            )
        stack = np.ascontiguousarray(images, dtype=np.float32)
        return {
            "input": torch.from_numpy(self.normaliser.normalise_input(stack[:1])),
            "target": torch.from_numpy(self.normaliser.normalise_target(stack[1:])),
            "fov": fov,
        }

    def _read_fov(self, fov: str) -> np.ndarray:
        paths = [image_path(self.root, self.split, channel, fov) for channel in self.channels]
        images = [read_image(path) for path in paths]
        shapes = [image.shape for image in images]
        if len(set(shapes)) > 1:
            raise DataError(
                _shape_mismatch_message(self.split, fov, dict(zip(paths, shapes, strict=True)))
            )
        return np.stack(images)

    def _crop(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Square crop of side crop_size (random or centred) from (N, H, W); 0 = no crop."""
        if self.crop_size == 0:
            return images
        height, width = images.shape[-2:]
        if self.random_crop:
            top = int(rng.integers(0, height - self.crop_size + 1))
            left = int(rng.integers(0, width - self.crop_size + 1))
        else:
            top, left = (height - self.crop_size) // 2, (width - self.crop_size) // 2
        return images[:, top : top + self.crop_size, left : left + self.crop_size]

    def _check_fov(self, fov: str) -> None:
        """Raise the first problem of a field of view; reads only the TIFF headers (fast)."""
        problems, _ = _channel_problems(self.root, self.split, fov, self.channels,
                                        self.crop_size, _image_shape)
        if problems:
            raise DataError(problems[0])


def _draw_symmetry(rng: np.random.Generator, *, square: bool) -> int:
    """One of the 8 symmetries of a square; only the 4 that keep the shape for a rectangle."""
    return int(rng.integers(8)) if square else 2 * int(rng.integers(4))


def _dihedral(images: np.ndarray, k: int) -> np.ndarray:
    """Symmetry k in 0..7 of (..., H, W): rotate k % 4 quarter turns, then mirror if k >= 4."""
    rotated = np.rot90(images, k % 4, axes=(-2, -1))
    return rotated[..., ::-1] if k >= 4 else rotated


def _image_shape(path: Path) -> tuple[int, ...]:
    """Shape of a 2-D TIFF from its header, without reading the pixels."""
    try:
        with tifffile.TiffFile(path) as tiff:
            shape = tuple(int(n) for n in tiff.series[0].shape)
    except Exception as error:  # tifffile raises many kinds for corrupt files
        raise DataError(f"{path} is not a readable TIFF ({error}); delete or replace it") from error
    if len(shape) != 2:
        raise DataError(f"{path} has shape {shape}; expected one 2-D plane (H, W)")
    return shape


def _missing_channel_message(path: Path, fov: str, channel: str) -> str:
    return (
        f"{path} is missing: field of view {fov!r} has no {channel} image; add it or remove "
        "the field of view from every channel folder"
    )


def _shape_mismatch_message(split: str, fov: str, shapes: dict[Path, tuple[int, ...]]) -> str:
    listed = ", ".join(f"{path} {tuple(shape)}" for path, shape in shapes.items())
    return (
        f"the channels of field of view {fov!r} ({split}) differ in size: {listed}; "
        "every channel of a field of view must be the same size (registered pixel to pixel)"
    )


def _too_small_message(path: Path, shape: tuple[int, ...], crop_size: int) -> str:
    return (
        f"{path} is {shape[0]}x{shape[1]} pixels, smaller than the crop of {crop_size}; use "
        f"crops of at most {min(shape)} (`--set data.crop_size={min(shape)}` for training, "
        f"`data.val_crop_size` for validation, 0 = whole image) or remove this field of view"
    )


# --- sampling and loaders --------------------------------------------------------------------


class EpochSampler(Sampler[int]):
    """This rank's share of a permutation that depends only on (seed, epoch).

    Like DistributedSampler: the order is padded by wrapping around so every rank gets the
    same number of indices (DDP needs equal step counts), and rank r takes every world_size-th
    index from position r. Call `set_epoch` before each epoch.
    """

    def __init__(
        self, n: int, *, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.n = n
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-self.n // self.world_size)  # ceil

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator()
            # SeedSequence mixes (seed, epoch) so that e.g. (0, 1) and (1, 0) differ
            state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, np.uint64)
            generator.manual_seed(int(state[0]))
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        total = len(self) * self.world_size
        if order:
            order = (order * -(-total // len(order)))[:total]
        return iter(order[self.rank : total : self.world_size])


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell a loader's sampler and dataset which epoch comes next (both draw from it)."""
    for part in (getattr(loader, "sampler", None), getattr(loader, "dataset", None)):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)


def make_loaders(
    config: Any, *, rank: int = 0, world_size: int = 1
) -> tuple[DataLoader, DataLoader]:
    """Train and validation loaders from a `pix2pixhd.config.Config`.

    Train: random crops of data.crop_size (flips/rot90 if data.augment), this rank's share of
    each epoch, incomplete batches dropped. Validation: centre crops of data.val_crop_size,
    batch 1, in order, the whole split on every rank. Call `set_loader_epoch(train_loader, e)`
    before each epoch. The normaliser is `loader.dataset.normaliser`.
    """
    data = config.data
    root = Path(data.root)
    read_dataset_json(root)  # a missing folder or dataset.json says how to get data
    normaliser = Normaliser.from_dataset(root, data.input_channel, list(data.target_channels))
    seed = config.train.seed
    train = PairedDataset(
        root,
        "train",
        normaliser,
        crop_size=data.crop_size,
        augment=data.augment,
        crops_per_image=data.crops_per_image,
        seed=seed,
        random_crop=True,
    )
    val = PairedDataset(root, "val", normaliser, crop_size=data.val_crop_size, augment=False)
    sampler = EpochSampler(len(train), seed=seed, rank=rank, world_size=world_size)
    if len(sampler) < data.batch_size:
        raise DataError(
            f"{root / 'train'} gives {len(sampler)} crops per epoch to each of {world_size} "
            f"process(es), fewer than data.batch_size={data.batch_size}; lower data.batch_size, "
            "raise data.crops_per_image or add images"
        )
    pin_memory = torch.cuda.is_available()
    train_loader = DataLoader(
        train,
        batch_size=data.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=data.num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
    val_loader = DataLoader(
        val,
        batch_size=1,
        shuffle=False,
        num_workers=data.num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
    log.info(
        "train: %d fields of view, %d batches of %d per epoch; val: %d fields of view",
        len(train.fovs),
        len(train_loader),
        data.batch_size,
        len(val.fovs),
    )
    return train_loader, val_loader


# --- checking a dataset folder ---------------------------------------------------------------


def check_dataset(root: str | Path, crop_size: int | None = None) -> list[str]:
    """Every problem of a dataset folder, one message each (naming the file); [] if usable.

    Reads every file once. crop_size: also report images smaller than this crop.
    Never raises for a problem in the files: the caller decides what to do with the list.
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
        problems += _check_split(root, split, crop_size)
    if info is not None:
        problems += _check_statistics(root, info)
    return problems


def check_training_data(data: Any) -> None:
    """Raise one DataError if the train or val split has a problem `check_dataset` reports.

    `data` is a `config.DataConfig`. Reads every pixel (finite values, pixel type, readable
    file), so a broken file stops the run before the first epoch, not in a loader worker.
    """
    root = Path(data.root)
    read_dataset_json(root)  # a missing folder or dataset.json says how to get data
    problems = _check_split(root, "train", data.crop_size or None)
    problems += _check_split(root, "val", data.val_crop_size or None)
    if problems:
        more = f" (and {len(problems) - 1} more: `python -m pix2pixhd data check {root}`)"
        raise DataError(problems[0] + (more if len(problems) > 1 else ""))


def _check_split(root: Path, split: str, crop_size: int | None) -> list[str]:
    """Phase is always expected; other channels (and masks) wherever their folder exists."""
    folder = root / split
    channels = ["phase"] + [c for c in CHANNELS if c != "phase" and (folder / c).is_dir()]
    has_masks = (folder / MASKS).is_dir()
    fovs = sorted({fov for c in [*channels, MASKS] for fov in list_fovs(root, split, c)})
    if not fovs:
        expected = folder / "phase" / "<fov>.tif"
        return [f"{folder} has no images (expected {expected}); {HOW_TO_GET_DATA}"]
    problems = []
    for fov in tqdm(fovs, desc=f"checking {split}", unit="fov", leave=False):
        problems += _check_fov(root, split, fov, channels, has_masks, crop_size)
    return problems


def _check_fov(
    root: Path, split: str, fov: str, channels: list[str], has_masks: bool, crop_size: int | None
) -> list[str]:
    """Every problem of a field of view; reads the whole images (NaN, non-2-D) and the mask."""
    problems, shapes = _channel_problems(root, split, fov, channels, crop_size,
                                         lambda path: read_image(path).shape)
    if has_masks:
        problems += _check_mask(image_path(root, split, MASKS, fov), fov, shapes)
    return problems


def _channel_problems(
    root: Path,
    split: str,
    fov: str,
    channels: Sequence[str],
    crop_size: int | None,
    shape_of: Callable[[Path], tuple[int, ...]],
) -> tuple[list[str], dict[Path, tuple[int, ...]]]:
    """Missing channels, unreadable files, shapes that differ or are smaller than crop_size
    (0 or None: no crop), in that order; and the shape `shape_of` read for each file."""
    problems = []
    shapes: dict[Path, tuple[int, ...]] = {}
    for channel in channels:
        path = image_path(root, split, channel, fov)
        if not path.is_file():
            problems.append(_missing_channel_message(path, fov, channel))
            continue
        try:
            shapes[path] = shape_of(path)
        except DataError as error:
            problems.append(str(error))
    if len(set(shapes.values())) > 1:
        problems.append(_shape_mismatch_message(split, fov, shapes))
    elif shapes:
        path, shape = next(iter(shapes.items()))
        if crop_size and min(shape) < crop_size:
            problems.append(_too_small_message(path, shape, crop_size))
    return problems, shapes


def _check_mask(path: Path, fov: str, shapes: dict[Path, tuple[int, ...]]) -> list[str]:
    if not path.is_file():
        return [_missing_channel_message(path, fov, MASKS)]
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
    stats = info.get("normalisation") or {}
    return [
        f"{dataset_json_path(root)} has no normalisation statistics for {channel!r}, which has "
        "train images; rewrite it with pix2pixhd.layout.write_dataset_json"
        for channel in CHANNELS
        if list_fovs(root, "train", channel) and channel not in stats
    ]
