"""Paired images for training: crops, flips/rot90, samplers and loaders; and the data's record.

A training item is one crop of a phase image and the same crop of its fluorescence image(s):

    normaliser = DatasetNormaliser.from_dataset("data", "phase", ["nuclei"])
    dataset = PairedDataset("data", "train", normaliser, crop_size=256, augment=True)
    dataset.set_epoch(3)
    item = dataset[0]   # {"input": (1, 256, 256), "target": (1, 256, 256), "fov": "fov_0000"}

Every random choice (crop position, flip, rotation) comes from `np.random.default_rng([seed,
epoch, index])`, so an epoch is the same whatever the number of workers or GPUs, and a resumed
run sees exactly the crops it would have seen. `data_provenance` is what a checkpoint records
of the data it was trained on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pix2pixhd import layout
from pix2pixhd.checks import check_fov, shape_mismatch_message
from pix2pixhd.normalisation import DatasetNormaliser, Normaliser

log = logging.getLogger(__name__)


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

    def __init__(self, root: str | Path, split: str, normaliser: Normaliser, *, crop_size: int,
                 augment: bool, crops_per_image: int = 1, seed: int = 0,
                 random_crop: bool | None = None) -> None:
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
        self.fovs = layout.list_fovs(self.root, split, normaliser.input_channel)
        if not self.fovs:
            folder = self.root / split / normaliser.input_channel
            raise layout.DataError(f"{folder} has no .tif images; {layout.HOW_TO_GET_DATA}")
        for fov in self.fovs:  # TIFF headers only: fast, and stops a bad run at once
            problems = check_fov(self.root, split, fov, self.channels, crop_size=crop_size,
                                 read_pixels=False)
            if problems:
                raise layout.DataError(problems[0])

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
        paths = [layout.image_path(self.root, self.split, c, fov) for c in self.channels]
        images = [layout.read_image(path) for path in paths]
        shapes = [image.shape for image in images]
        if len(set(shapes)) > 1:
            raise layout.DataError(
                shape_mismatch_message(self.split, fov, dict(zip(paths, shapes, strict=True)))
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


def _draw_symmetry(rng: np.random.Generator, *, square: bool) -> int:
    """One of the 8 symmetries of a square; only the 4 that keep the shape for a rectangle."""
    return int(rng.integers(8)) if square else 2 * int(rng.integers(4))


def _dihedral(images: np.ndarray, k: int) -> np.ndarray:
    """Symmetry k in 0..7 of (..., H, W): rotate k % 4 quarter turns, then mirror if k >= 4."""
    rotated = np.rot90(images, k % 4, axes=(-2, -1))
    return rotated[..., ::-1] if k >= 4 else rotated


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
    normaliser = DatasetNormaliser.from_dataset(root, data.input_channel, data.target_channels,
                                                stain_map=data.stain_map)
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
        raise layout.DataError(
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


# --- what a checkpoint records of its data ---------------------------------------------------

PROVENANCE_DROPPED = ("normalisation", "positions", "counts", "percentiles", "top_percentile")
"""dataset.json entries not copied into a checkpoint's provenance (long, or kept elsewhere)."""


def data_provenance(root: str | Path, channel: str = "phase") -> dict[str, Any]:
    """Where a model's data came from, for its checkpoints: plain types only.

    {"source": "synthetic" or the real dataset's name, "details": the rest of dataset.json
    (seed and simulator parameters, or URLs), "counts": fields of view per split,
    "input_statistics": the train split's statistics of the input `channel` (median, iqr,
    p_low, p_high, ...; what new inputs are compared with), "root": the folder}.
    """
    info = layout.read_dataset_json(root)
    statistics = info.get("normalisation", {})
    if channel not in statistics:
        raise layout.DataError(f"{layout.dataset_json_path(root)} has no normalisation "
                               f"statistics for {channel!r}; rebuild the dataset: "
                               f"{layout.HOW_TO_GET_DATA}")
    return {
        "source": str(info.get("source", "unknown")),
        "details": {k: v for k, v in info.items() if k not in PROVENANCE_DROPPED
                    and k != "source"},
        "counts": {split: len(layout.list_fovs(root, split, channel))
                   for split in layout.SPLITS},
        "input_statistics": dict(statistics[channel]),
        "root": str(root),
    }
