"""MC-dropout sampling: many plausible virtual stains for one phase image, and folders of them.

    samples = mc_dropout_samples(generator, phase, n=32, seed=0)        # (n, C, H, W) tensor
    stains = sample_stains(generator, normaliser, raw_phase, n=32)      # (n, C, H, W), stain units
    summary = sample_folder("checkpoints/pix2pixhd_nuclei/latest.pt", "data/test", "mc")

Dropout left on at inference turns one trained network into a family of slightly different
networks; the spread of their outputs is a cheap (approximate) Bayesian uncertainty (Gal and
Ghahramani 2016). This module draws the samples (torch) and runs whole folders; what the
spread says, and whether it points at the errors, is scored in `uncertainty` (numpy only).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pix2pixhd.config import check_counts
from pix2pixhd.files import output_path, write_atomically, write_json
from pix2pixhd.layout import (
    MASKS,
    image_path,
    read_image,
    read_image_shape,
    read_mask,
    refuse_to_replace_foreign_files,
    write_image,
    write_mask,
)
from pix2pixhd.memory import budget_bytes, check_budget, inference_bytes_per_pixel, sample_bytes
from pix2pixhd.normalisation import Normaliser
from pix2pixhd.predict import (
    default_overlap,
    default_tile_size,
    input_files,
    input_normaliser,
    load_predictor_and_statistics,
    pad_to_multiple,
    tile_starts,
)
from pix2pixhd.trust import (
    SegmentedSamples,
    matched_to_truth,
    mean_inside,
    segment_samples,
    trust_table,
)
from pix2pixhd.uncertainty import evaluate_uncertainty, fit_std_scale, uncertainty_maps

log = logging.getLogger(__name__)

MAX_SAMPLES = 1024
"""Most MC-dropout samples per image: the spread is estimated to a few per cent long before
(its relative standard error is about 1 / sqrt(2 (n - 1))), and every sample stays in memory."""

DROPOUT_TYPES = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)


# --- sampling ----------------------------------------------------------------------------------


def dropout_modules(generator: nn.Module) -> list[nn.Module]:
    """The dropout layers of a network that actually drop something (p > 0)."""
    return [m for m in generator.modules() if isinstance(m, DROPOUT_TYPES) and m.p > 0]


@contextmanager
def mc_dropout(generator: nn.Module) -> Iterator[nn.Module]:
    """The generator in evaluation mode except its dropout layers, which keep dropping.

    Normalisation layers stay as in evaluation (batch norm uses its running statistics and does
    not update them; instance norm is per sample either way), so the only randomness is dropout.
    Every module's train/eval flag is restored on exit, also after an error.
    """
    if not dropout_modules(generator):
        raise ValueError(
            "the generator has no dropout layer with p > 0, so MC-dropout would give n copies "
            "of one prediction; train a model with model.use_dropout=true (and dropout_p > 0)"
        )
    modes = [(module, module.training) for module in generator.modules()]
    try:
        generator.eval()
        for module in dropout_modules(generator):
            module.train()
        yield generator
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Seed the RNG that `device`'s dropout draws from, and put the caller's state back after.

    Only that one generator is forked and seeded (not every GPU's), so nothing else in the
    process sees a different random stream because samples were drawn.
    """
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index], device_type="cuda"):
            torch.random.default_generator.manual_seed(seed)
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
            yield
    elif device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            yield
    else:  # mps, xpu, ...: fork that backend's generator, seed through the global call
        with torch.random.fork_rng(device_type=device.type):
            torch.manual_seed(seed)
            yield


def _prepared_input(generator: nn.Module, phase: Tensor, multiple: int | None) -> Tensor:
    """phase (1, C, H, W) on the generator's device and dtype; checks shape and multiple."""
    if phase.ndim != 4 or phase.shape[0] != 1:
        raise ValueError(
            f"phase has shape {tuple(phase.shape)}; expected one normalised image (1, C, H, W): "
            "use phase[None, None] for an (H, W) tensor"
        )
    if multiple is not None and multiple < 1:
        raise ValueError(f"multiple={multiple} must be a positive integer (or None)")
    parameter = next(generator.parameters())
    return phase.to(device=parameter.device, dtype=parameter.dtype)


def _size_multiple(generator: nn.Module, multiple: int | None) -> int:
    """The multiple to pad to: the one given, else the generator's own `size_multiple`
    (looked up through a DistributedDataParallel wrapper too)."""
    if multiple is not None:
        return multiple
    inner = getattr(generator, "module", generator)
    return int(getattr(generator, "size_multiple", getattr(inner, "size_multiple", 1)))


def mc_dropout_samples(
    generator: nn.Module,
    phase: Tensor,
    n: int = 16,
    *,
    seed: int = 0,
    batch_size: int = 16,
    multiple: int | None = None,
    progress: bool = True,
) -> Tensor:
    """n stochastic predictions for one input, computed as batches: (n, C_out, H, W).

    phase: one normalised phase image (1, C_in, H, W), any H and W: it is reflect-padded to a
    multiple of `multiple` (None: the generator's `size_multiple`) and the output cropped back.
    The input is repeated along the batch axis, `batch_size` copies at a time, so a GPU computes
    many samples in the time of a few passes. Each copy draws its own dropout masks and instance
    norm is per sample, so the batch has the distribution of n separate passes (not the same
    numbers: the masks are drawn in another order). Returned on the generator's device, in the
    normalised target units ([-1, 1]).

    seed makes the draw reproducible for one (n, batch_size, device); the caller's RNG state is
    the same afterwards as before.
    """
    check_counts(n=n, batch_size=batch_size)
    phase = _prepared_input(generator, phase, multiple)
    padded, (height, width) = pad_to_multiple(phase, _size_multiple(generator, multiple))
    chunks = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    outputs = []
    with mc_dropout(generator), torch.no_grad(), _seeded(padded.device, seed):
        for size in tqdm(chunks, desc="MC-dropout batches", leave=False,
                         disable=not progress or len(chunks) < 2):
            batch = padded.repeat(size, 1, 1, 1)
            outputs.append(generator(batch)[..., :height, :width])
    return torch.cat(outputs)


# --- whole folders ---------------------------------------------------------------------------


def sample_stains(
    generator: nn.Module,
    normaliser: Normaliser,
    phase: np.ndarray,
    n: int = 16,
    *,
    seed: int = 0,
    batch_size: int = 16,
    tile_size: int | None = None,
    overlap: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """n MC-dropout stains for one raw phase image (H, W), in the stain's units: (n, C, H, W).

    Images larger than `tile_size` (None: `predict.default_tile_size`) go through the network
    in overlapping tiles placed as `predict_image` places them, so its memory stays bounded at
    any image size (only the samples themselves grow with H x W). Each pixel takes its samples
    from the one tile it is most central in, instead of predict's blend: sample i of two tiles
    are independent draws, and their blend would have a smaller spread in every overlap. Tile
    k draws with seed + k.
    """
    tile_size = tile_size or default_tile_size(generator, phase.shape)
    overlap = default_overlap(tile_size) if overlap is None else overlap
    check_counts(n=n, batch_size=batch_size, tile_size=tile_size)
    if not 0 <= overlap < tile_size // 2:
        raise ValueError(f"overlap {overlap} must be at least 0 and below half the tile size "
                         f"{tile_size}")
    device = next(generator.parameters()).device
    normalised = torch.from_numpy(np.asarray(normaliser.normalise_input(phase), np.float32))
    height, width = phase.shape
    regions = [(rows, cols) for rows in _owned_spans(height, tile_size, overlap)
               for cols in _owned_spans(width, tile_size, overlap)]
    stains = None
    for index, ((rows, own_rows), (cols, own_cols)) in enumerate(
            tqdm(regions, desc="MC-dropout tiles", leave=False,
                 disable=not progress or len(regions) == 1)):
        tile = normalised[rows, cols][None, None].to(device)
        samples = mc_dropout_samples(generator, tile, n, seed=seed + index,
                                     batch_size=batch_size, progress=progress)
        samples = samples[..., _within(own_rows, rows), _within(own_cols, cols)]
        samples = np.asarray(normaliser.denormalise_target(samples.float().cpu().numpy()))
        if stains is None:
            stains = np.empty((n, samples.shape[1], height, width), dtype=np.float32)
        stains[..., own_rows, own_cols] = samples
    return stains


def _owned_spans(length: int, tile: int, overlap: int) -> list[tuple[slice, slice]]:
    """(tile, owned part) along one axis: tiles where `predict.tile_starts` puts them, every
    pixel owned by one of them, the cut halfway through each overlap."""
    starts = tile_starts(length, tile, overlap)
    ends = [min(start + tile, length) for start in starts]
    cuts = [0, *((after + end) // 2 for after, end in zip(starts[1:], ends, strict=False)),
            length]
    return [(slice(start, end), slice(cuts[k], cuts[k + 1]))
            for k, (start, end) in enumerate(zip(starts, ends, strict=True))]


def _within(part: slice, whole: slice) -> slice:
    """`part` of an axis in the coordinates of `whole`, a span that contains it."""
    return slice(part.start - whole.start, part.stop - whole.start)


def split_images(source: Path, channel: str) -> dict[str, dict[str, Path | None]]:
    """{output file name: {phase, target, masks}} of a folder (names as `input_files` gives
    them); target and masks only in a split folder."""
    images = {}
    for name, phase in input_files(source).items():
        fov = Path(name).stem
        target = image_path(source.parent, source.name, channel, fov)
        masks = image_path(source.parent, source.name, MASKS, fov)
        images[name] = {"phase": phase, "target": target if target.is_file() else None,
                       "masks": masks if masks.is_file() else None}
    return images


def calibrate_std_scale(
    generator: nn.Module, normaliser: Normaliser, split: str | Path, *, n: int = 16,
    seed: int = 0, batch_size: int = 16, max_images: int | None = 8,
) -> float:
    """`fit_std_scale` on the MC-dropout spreads and errors of a validation split, pooled."""
    channel = normaliser.target_channels[0]
    images = split_images(Path(split), channel)
    stds, errors = [], []
    for name, paths in list(images.items())[:max_images]:
        if paths["target"] is None:
            raise FileNotFoundError(f"{split} has no {channel}/{name} to calibrate against")
        stains = sample_stains(generator, normaliser, read_image(paths["phase"]), n, seed=seed,
                               batch_size=batch_size)[:, 0]
        maps = uncertainty_maps(stains)
        stds.append(maps["std"].ravel())
        errors.append((maps["mean"] - read_image(paths["target"])).ravel())
    return fit_std_scale(np.concatenate(stds), np.concatenate(errors))


SAMPLING_FILE = "sampling.json"
"""What `sample_folder` writes first into its output folder: the checkpoint, source, n, seed."""
TRUST_FILE = "nuclei_trust.csv"
"""`sample_folder`'s table of virtual nuclei: fov, label, trust, area, samples_present, and
matched where the split has ground-truth masks."""
VIRTUAL_NUCLEI = "virtual_nuclei"
"""`sample_folder`'s folder of uint16 label images of the nuclei in the mean virtual stain."""


def sample_folder(
    checkpoint: str | Path,
    source: str | Path,
    out: str | Path,
    *,
    n: int = 16,
    seed: int = 0,
    batch_size: int | None = None,
    calibration: str | Path | None = None,
    max_images: int | None = None,
    device: str | torch.device = "cpu",
    normalise: str = "dataset",
) -> dict[str, float]:
    """MC-dropout for every phase image of `source` (a TIFF, a folder, or a split folder).

    Writes OUT/sampling.json (what was sampled, how), OUT/mean/<name> and OUT/std/<name>
    (first target channel, stain units; names as `predict.input_files` gives them, <fov>.tif
    for a split folder), OUT/virtual_nuclei/<name> (uint16 labels of the nuclei segmented in
    the mean) and OUT/nuclei_trust.csv, one row per such nucleus: fov, label, trust,
    area, samples_present (`trust.nuclei_trust`: the nucleus's mean best IoU across the
    samples, and the count of the samples that draw it again at IoU >= 0.5), and matched
    (1 when a ground-truth nucleus matches it one to one at IoU >= 0.5, else 0) when the
    split has nuclei_masks/. When
    `source` is a split folder with the real stain, every image is also scored
    (`evaluate_uncertainty`) into OUT/per_image.csv and the means into OUT/summary.json; the std
    scale is fitted on `calibration` (a validation split) when given, else left at 1.
    `normalise` and the warning on inputs far from the training data: `predict.input_normaliser`.
    Large images are sampled in tiles (`sample_stains`); `n` is at most MAX_SAMPLES, and an
    image whose sampling would take more than the memory budget (`memory.py`) is refused before
    sampling.
    """
    check_counts(n=n)
    if n > MAX_SAMPLES:
        raise ValueError(f"--n {n} samples per image is more than {MAX_SAMPLES}; the spread "
                         f"of {MAX_SAMPLES} is already known to within about 2 %")
    generator, _, normaliser, stats = load_predictor_and_statistics(checkpoint, device)
    if not dropout_modules(generator):
        raise ValueError(f"{checkpoint} has no dropout layer with p > 0, so its MC-dropout "
                         "samples would all be one prediction; sample a model trained with "
                         "model.use_dropout=true and model.dropout_p > 0")
    batch_size = batch_size or (16 if torch.device(device).type == "cuda" else 4)
    channel = normaliser.target_channels[0]
    images = list(split_images(Path(source), channel).items())[:max_images]
    if not images:
        raise FileNotFoundError(f"{source} holds no phase images (phase/*.tif in a split "
                                "folder); sample a split that has them, or a folder of TIFFs")
    per_pixel = inference_bytes_per_pixel(generator)
    for _, paths in images:  # from the headers, before any image is sampled or written
        shape = read_image_shape(paths["phase"])
        _check_sample_memory(paths["phase"], shape, n, len(normaliser.target_channels),
                             tile_size=default_tile_size(generator, shape), batch_size=batch_size,
                             per_pixel=per_pixel)
    refuse_to_replace_foreign_files(
        out, [Path(out) / folder / name for folder in ("mean", "std", VIRTUAL_NUCLEI)
              for name, _ in images]
        + [Path(out) / "per_image.csv", Path(out) / "summary.json", Path(out) / TRUST_FILE],
        [SAMPLING_FILE, "summary.json"], "sample")
    write_json(output_path(out, SAMPLING_FILE),  # first: it marks the folder as sample's
               {"checkpoint": str(checkpoint), "source": str(source), "n": n, "seed": seed,
                "calibration": None if calibration is None else str(calibration)})
    std_scale = 1.0
    if calibration is not None:
        std_scale = calibrate_std_scale(generator, normaliser, calibration, n=n, seed=seed,
                                        batch_size=batch_size)
        log.info("std scale fitted on %s: %.3f", calibration, std_scale)
    rows, nuclei = [], []
    with_masks = any(paths["masks"] is not None for _, paths in images)
    for name, paths in tqdm(images, desc="MC-dropout"):
        phase = read_image(paths["phase"])
        scaling = input_normaliser(phase, normaliser, stats, str(paths["phase"]), normalise)
        stains = sample_stains(generator, scaling, phase, n, seed=seed,
                               batch_size=batch_size, progress=True)[:, 0]
        maps = uncertainty_maps(stains)
        write_image(output_path(out, "mean", name), maps["mean"])
        write_image(output_path(out, "std", name), maps["std"])
        masks = read_mask(paths["masks"]) if paths["masks"] is not None else None
        segmented = segment_samples(stains)
        write_mask(output_path(out, VIRTUAL_NUCLEI, name), segmented.labels)
        nuclei.append(_trust_rows(segmented, Path(name).stem, masks, with_masks))
        if paths["target"] is not None:
            scores = evaluate_uncertainty(stains, read_image(paths["target"]), masks,
                                          std_scale=std_scale,
                                          sample_counts=segmented.counts)
            rows.append({"fov": Path(name).stem, **scores})
    trust_table = pd.concat(nuclei, ignore_index=True)
    write_atomically(output_path(out, TRUST_FILE),
                     lambda temporary: trust_table.to_csv(temporary, index=False))
    if not rows:
        return {}
    table = pd.DataFrame(rows)
    write_atomically(output_path(out, "per_image.csv"),
                     lambda temporary: table.to_csv(temporary, index=False))
    summary = {name: float(table[name].mean()) for name in table.columns if name != "fov"}
    summary |= {"n_images": len(table), "n_samples": n, "seed": seed}
    write_json(output_path(out, "summary.json"), summary)
    return summary


def read_nuclei_trust(out: str | Path) -> pd.DataFrame:
    """OUT/nuclei_trust.csv as `sample_folder` wrote it, plus mean_std: the mean of the std map
    inside each virtual nucleus (OUT/std/ and OUT/virtual_nuclei/), the per-pixel baseline
    that trust is compared with."""
    out = Path(out)
    if not (out / TRUST_FILE).is_file():
        raise FileNotFoundError(f"{out} has no {TRUST_FILE}; run `python -m pix2pixhd sample` "
                                "with --out there first")
    table = pd.read_csv(out / TRUST_FILE)
    parts = []
    for fov, rows in table.groupby("fov", sort=False):
        labels = read_mask(_one_file(out / VIRTUAL_NUCLEI, str(fov)))
        std = mean_inside(read_image(_one_file(out / "std", str(fov))), labels)
        ids = np.unique(labels[labels > 0])
        parts.append(rows.assign(mean_std=std[np.searchsorted(ids, rows.label)]))
    return pd.concat(parts, ignore_index=True) if parts else table.assign(mean_std=[])


def _one_file(folder: Path, fov: str) -> Path:
    """The TIFF of `fov` in one of sample's output folders (its name kept the input's
    suffix, .tif or .tiff)."""
    for suffix in (".tif", ".tiff", ".TIF", ".TIFF"):
        if (folder / f"{fov}{suffix}").is_file():
            return folder / f"{fov}{suffix}"
    raise FileNotFoundError(f"{folder} has no {fov}.tif: read a folder that `sample` wrote, "
                            "whole")


def _trust_rows(
    segmented: SegmentedSamples, fov: str, masks: np.ndarray | None, with_masks: bool
) -> pd.DataFrame:
    """One image's rows of nuclei_trust.csv; matched is empty for an image without a mask in
    a split where others have one."""
    table = trust_table(segmented)
    table.insert(0, "fov", fov)
    if masks is not None:
        table["matched"] = matched_to_truth(segmented.labels, masks)
    elif with_masks:
        log.warning("%s has no ground-truth mask: its nuclei get no matched value", fov)
        table["matched"] = pd.array([pd.NA] * len(table), dtype="Int64")
    return table


def _check_sample_memory(path: Path, shape: tuple[int, ...], n: int, channels: int, *,
                         tile_size: int, batch_size: int, per_pixel: float) -> None:
    """Refuse an image whose n samples, their float64 copies and the network's activations
    (`memory.sample_bytes`) exceed the memory budget; name the --n that would fit."""
    def estimate(count: int) -> float:
        return sample_bytes(shape, n=count, channels=channels, tile_size=tile_size,
                            batch_size=batch_size, activation_bytes_per_pixel=per_pixel)

    each = estimate(batch_size + 1) - estimate(batch_size)  # beyond a batch, linear in n
    fitting = int((budget_bytes() - estimate(batch_size)) // each) + batch_size
    if fitting >= 2:
        fix = f"use --n {min(fitting, n - 1)} or fewer"
    elif batch_size > 1:
        fix = "use a smaller --batch-size, or crop the image"
    else:
        fix = "crop the image"
    log.debug("%s: %d samples take about %.2f GiB", path, n, estimate(n) / 2**30)
    check_budget(f"{path}: {n} samples of {shape[0]}x{shape[1]} pixels", estimate(n), fix)
