"""Whole-image inference: any size, in bounded memory, back in the stain's own units.

    generator, config, normaliser = load_predictor("checkpoints/pix2pixhd_nuclei/latest.pt")
    stain = predict_image(generator, phase, normaliser)          # (C, H, W) float32

The generator halves the image `n_downsample_global` times (more with local enhancers), so the
input is reflect-padded to a multiple of `generator.size_multiple` and the output cropped back.
Images larger than the tile size are cut into overlapping tiles whose predictions are blended
with weights that fall smoothly to zero at the tile edges, so no seam shows. Instance norm
divides each feature by its spread over the input, so a generator draws as it learnt only on
inputs the size of its training crops: a bright nucleus is a larger share of a 128-pixel crop
than of a 512-pixel image, and G trained on 128 crops draws it too bright on the whole image
(`docs/recipe.md`). So by default the tiles are the training crops' size
(`generator.training_crop_size`). VisCy's networks normalise over their whole input
(GlobalResponseNorm), as VisCy predicts with them, so they go through a field of view in one
pass up to ONE_PASS_LIMIT pixels a side.

Each output keeps its input's name, and OUT/units.json says whether the outputs are in the
stain's units (see `predict_folder`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pix2pixhd.checkpoint import load_checkpoint
from pix2pixhd.config import Config
from pix2pixhd.files import output_path, write_json
from pix2pixhd.layout import (
    UNITS_FILE,
    DataError,
    check_output_folder,
    list_fovs,
    list_tiffs,
    read_image,
    read_image_shape,
    refuse_to_replace_foreign_files,
    write_image,
)
from pix2pixhd.memory import (
    budget_bytes,
    check_budget,
    inference_bytes_per_pixel,
    predict_bytes,
)
from pix2pixhd.models import generator_from_checkpoint
from pix2pixhd.normalisation import NORMALISE, Normaliser, median_and_iqr
from pix2pixhd.runs import training_statistics
from pix2pixhd.vscyto import has_stain_statistics, is_viscy_checkpoint, load_viscy_predictor

log = logging.getLogger(__name__)



TILE_SIZE = 1024
"""The tile side of a generator that does not say its training crop size; tiles bound the
memory of large images."""
MAX_OVERLAP = 128
"""Neighbouring tiles share a quarter of the tile side, at most this many pixels."""
ONE_PASS_LIMIT = 2048
"""Side up to which a network with whole-input statistics predicts in one pass (see README:
2048 x 2048 through VSCyto2D's network on the CPU)."""

FOREIGN_SHIFT = 2.0
FOREIGN_SPREAD = 4.0
"""An input is far from the training data when its median lies more than FOREIGN_SHIFT
training IQRs from the training median, or its IQR is over FOREIGN_SPREAD times larger or
smaller than the training IQR. The training images' own medians stay within 0.5 IQR and their
IQRs within 0.4-1.2 times the pooled one on the built-in data, so these leave a wide margin,
while other units (8-bit counts, degrees) exceed them by far."""


def foreign_input_message(image: np.ndarray, stats: dict[str, float], name: str) -> str | None:
    """One warning line when `image` (H, W) is far from the training input `stats`, else None."""
    if not stats.get("iqr"):
        return None
    median, iqr = median_and_iqr(image)
    shift = abs(median - stats["median"]) / stats["iqr"]
    spread = iqr / stats["iqr"]
    if shift <= FOREIGN_SHIFT and 1 / FOREIGN_SPREAD <= spread <= FOREIGN_SPREAD:
        return None
    return (f"{name} is far from the training data: median {median:.4g} is {shift:.1f} training "
            f"IQRs from the training median {stats['median']:.4g} and its IQR is {spread:.2g} "
            "times the training IQR; the prediction may be meaningless: check its units, or "
            "try --normalise image")


def input_normaliser(
    phase: np.ndarray, normaliser: Normaliser, stats: dict[str, float], name: str,
    normalise: str = "dataset",
) -> Normaliser:
    """The normaliser for one input image; warns (one line) when `phase` is far from `stats`.

    normalise="dataset" keeps the training statistics; "image" uses the image's own median and
    IQR, which rescues inputs in other units at the cost of its absolute level.
    """
    if normalise not in NORMALISE:
        raise ValueError(f"normalise={normalise!r} is not one of {', '.join(NORMALISE)}")
    if normalise == "image":
        return normaliser.for_image(phase)
    message = foreign_input_message(phase, stats, name)
    if message:
        log.warning(message)
    return normaliser


def load_predictor(
    checkpoint: str | Path, device: str | torch.device = "cpu",
    dataset_root: str | Path | None = None,
) -> tuple[nn.Module, Config, Normaliser]:
    """Generator (eval mode, on `device`), config and normaliser of a `train` checkpoint (.pt)
    or a published VisCy one (.ckpt; its stain units then come from `dataset_root`'s
    dataset.json). The one way to load a trained model: predict, sample and the notebook use it."""
    return load_predictor_and_statistics(checkpoint, device, dataset_root)[:3]


def load_predictor_and_statistics(
    checkpoint: str | Path, device: str | torch.device = "cpu",
    dataset_root: str | Path | None = None, viscy_config: dict[str, Any] | None = None,
) -> tuple[nn.Module, Config, Normaliser, dict[str, float]]:
    """`load_predictor`'s three, and the statistics of the training inputs from the same read
    of the file (`runs.training_statistics`; none for a VisCy .ckpt, whose inputs are
    each scaled by their own). `viscy_config`: model_config entries for a .ckpt that lacks
    them (see `vscyto.read_viscy_checkpoint`)."""
    if is_viscy_checkpoint(checkpoint):
        return (*load_viscy_predictor(checkpoint, device, dataset_root, viscy_config), {})
    state = load_checkpoint(checkpoint)
    if state.get("normaliser") is None:
        raise ValueError(f"{checkpoint} holds no normalisation statistics; it cannot scale "
                         "new images. Was it trained through `pix2pixhd train`?")
    generator, config = generator_from_checkpoint(state, checkpoint)
    return (generator.to(device).eval(), config, Normaliser.from_dict(state["normaliser"]),
            training_statistics(state))


def pad_to_multiple(image: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (B, C, H, W) at the bottom and right; returns the original (H, W).

    At least two multiples: instance norm needs more than one pixel at the coarsest scale.
    """
    height, width = image.shape[-2:]
    pad_h = max(-height % multiple, 2 * multiple - height)
    pad_w = max(-width % multiple, 2 * multiple - width)
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        image = F.pad(image, (0, pad_w, 0, pad_h), mode=mode)
    return image, (height, width)


@torch.no_grad()
def predict_tensor(generator: nn.Module, phase: torch.Tensor) -> torch.Tensor:
    """Normalised phase (B, 1, H, W) -> normalised stain (B, C, H, W), any H and W.

    The generator halves the image once per downsampling, so its `size_multiple` must divide
    the padded height and width.
    """
    padded, (height, width) = pad_to_multiple(phase, generator.size_multiple)
    return generator(padded)[..., :height, :width]


def blending_window(size: int, overlap: int) -> np.ndarray:
    """1-D weights: a raised-cosine ramp over `overlap` pixels at each end, 1 in between."""
    window = np.ones(size, dtype=np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        window[:overlap] = ramp
        window[-overlap:] = ramp[::-1]
    return window


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start positions of tiles covering [0, length), neighbours sharing `overlap` pixels."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def tiles(height: int, width: int, tile: int, overlap: int) -> Iterator[tuple[slice, slice]]:
    for top in tile_starts(height, tile, overlap):
        for left in tile_starts(width, tile, overlap):
            yield slice(top, top + min(tile, height)), slice(left, left + min(tile, width))


def default_tile_size(generator: nn.Module, shape: tuple[int, int], name: str = "the image"
                      ) -> int:
    """The side of the tiles an image goes through the network in, when the caller names none.

    A generator with instance norm: its training crops' side (`training_crop_size`), the input
    size its normalised features are calibrated for; TILE_SIZE when it does not say. A network
    with whole-input statistics (`whole_input_statistics`, VisCy's GlobalResponseNorm): the
    whole image up to ONE_PASS_LIMIT pixels a side, since tiles change its output; above that,
    TILE_SIZE with a warning."""
    if not getattr(generator, "whole_input_statistics", False):
        return getattr(generator, "training_crop_size", 0) or TILE_SIZE
    if max(shape) <= ONE_PASS_LIMIT:
        return max(shape)
    log.warning("%s (%dx%d) is larger than %d pixels: predicted in tiles of %d, which change "
                "the output of a network that normalises over its whole input; pass a larger "
                "tile_size (--tile-size) if memory allows", name, *shape, ONE_PASS_LIMIT,
                TILE_SIZE)
    return TILE_SIZE


def default_overlap(tile_size: int) -> int:
    """Pixels that neighbouring tiles share: a quarter of the side, at most MAX_OVERLAP."""
    return min(MAX_OVERLAP, tile_size // 4)


def predict_image(
    generator: nn.Module,
    phase: np.ndarray,
    normaliser: Normaliser,
    *,
    tile_size: int | None = None,
    overlap: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Raw phase image (H, W) -> predicted stain (C, H, W) in the stain's units (float32).

    Images up to `tile_size` on both sides go through in one pass; larger ones in tiles of
    `tile_size` with `overlap` pixels blended, so memory stays bounded at any image size.
    None picks `default_tile_size` and `default_overlap`.
    """
    if phase.ndim != 2:
        raise ValueError(f"expected one 2-D phase image (H, W), got shape {phase.shape}")
    if min(phase.shape) < 2:
        raise ValueError(f"a phase image of {phase.shape[0]}x{phase.shape[1]} pixels is too "
                         "small to predict; it needs at least 2 pixels on each side")
    if tile_size is None:
        tile_size = default_tile_size(generator, phase.shape)
    if overlap is None:
        overlap = default_overlap(tile_size)
    if tile_size < 1 or overlap < 0:
        raise ValueError(f"tile size {tile_size} must be positive and overlap {overlap} must "
                         "not be negative")
    if overlap >= tile_size // 2 and max(phase.shape) > tile_size:  # only tiles overlap
        raise ValueError(f"overlap {overlap} must be below half the tile size {tile_size}")
    device = device or next(generator.parameters()).device
    normalised = torch.from_numpy(np.asarray(normaliser.normalise_input(phase), np.float32))
    height, width = phase.shape
    regions = list(tiles(height, width, tile_size, overlap))
    total = None
    weight_sum = np.zeros((height, width), dtype=np.float32)
    for rows, cols in tqdm(regions, desc="tiles", disable=not progress or len(regions) == 1):
        tile_input = normalised[rows, cols][None, None].to(device)
        tile_output = predict_tensor(generator, tile_input)[0].float().cpu().numpy()
        if len(regions) == 1:
            return np.asarray(normaliser.denormalise_target(tile_output), dtype=np.float32)
        if total is None:
            total = np.zeros((tile_output.shape[0], height, width), dtype=np.float32)
        window = np.outer(
            _edge_window(rows, height, overlap), _edge_window(cols, width, overlap))
        total[:, rows, cols] += tile_output * window
        weight_sum[rows, cols] += window
    stain = total / weight_sum
    return np.asarray(normaliser.denormalise_target(stain), dtype=np.float32)


def _edge_window(span: slice, length: int, overlap: int) -> np.ndarray:
    """Blending weights along one axis; no ramp at the image border, where nothing overlaps."""
    if span.start == 0 and span.stop == length:  # one tile spans this axis (it may be thinner
        return np.ones(length, dtype=np.float32)  # than the overlap): nothing to blend
    window = blending_window(span.stop - span.start, overlap)
    if span.start == 0:
        window[:overlap] = 1.0
    if span.stop == length:
        window[len(window) - overlap:] = 1.0
    return window


def input_files(source: str | Path) -> dict[str, Path]:
    """{output file name: phase TIFF} of one TIFF, a folder of TIFFs, or a split folder.

    An output keeps its input's name (`a.tif` and `a.tiff` both come out, `D.TIF` too); a
    split folder's phase/<fov>.tif gives <fov>.tif. The files are listed by
    `layout.list_tiffs`, the one listing that predict, sample and evaluate share.
    """
    source = Path(source)
    if source.is_file():
        return {source.name: source}
    if (source / "phase").is_dir():
        return {f"{fov}.tif": source / "phase" / f"{fov}.tif"
                for fov in list_fovs(source.parent, source.name)}
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is neither a TIFF file nor a folder")
    files = {path.name: path for path in list_tiffs(source)}
    if not files:
        raise FileNotFoundError(f"{source} holds no .tif/.tiff files (nor a phase/ folder)")
    return files


def _refuse_an_out_holding_the_input(out: str | Path, source: str | Path) -> None:
    """An `out` that holds the input's folder would put OUT/nuclei/ beside OUT/phase/, where a
    dataset without dataset.json keeps its real stains."""
    folder = Path(source).resolve()
    folder = folder.parent if folder.is_file() else folder
    if Path(out).resolve() in folder.parents:
        raise DataError(f"output folder {out} holds the input {source}; predictions there "
                        "(OUT/<channel>/) could replace real stains beside it: choose a folder "
                        "outside it")


def predict_folder(
    checkpoint: str | Path,
    source: str | Path,
    out: str | Path,
    *,
    device: str | torch.device = "cpu",
    tile_size: int | None = None,
    overlap: int | None = None,
    dataset_root: str | Path | None = None,
    normalise: str = "dataset",
    viscy_config: dict[str, Any] | None = None,
) -> list[Path]:
    """Predict every phase image of `source`; write OUT/<channel>/<name> per target channel
    (each output keeps its input's name) and OUT/units.json.

    `out` may not be `source` nor lie inside it or inside a dataset (it would replace real
    stains). Inputs far from the training data get a warning line (see `input_normaliser`).
    A VisCy .ckpt scales every input by its own median and IQR, as VisCy does, whatever
    `normalise` says; its outputs go to stain units with the statistics of `dataset_root`
    (default: the parent of a split folder such as data/test) where it has them, and are
    otherwise written in VisCy's units. units.json records which, and `evaluate` reads it.
    """
    check_output_folder(out, [source])
    _refuse_an_out_holding_the_input(out, source)
    if dataset_root is None and (Path(source) / "phase").is_dir():
        dataset_root = Path(source).parent
    generator, config, normaliser, stats = load_predictor_and_statistics(
        checkpoint, device, dataset_root, viscy_config)
    viscy = is_viscy_checkpoint(checkpoint)
    if viscy:
        log.info("%s is a VisCy checkpoint: each input is scaled by its own median and IQR, as "
                 "VisCy does (normalise=%r does not apply)", checkpoint, normalise)
    units = prediction_units(checkpoint, config, dataset_root)
    inputs = input_files(source)
    refuse_to_replace_foreign_files(
        out, [Path(out) / channel / name for channel in config.data.target_channels
              for name in inputs], [UNITS_FILE], "predict")
    sizes = _tile_sizes_within_budget(generator, inputs, tile_size,
                                      len(config.data.target_channels))
    write_json(output_path(out, UNITS_FILE), units)  # first: it marks the folder as predict's
    written = []
    for name, path in tqdm(inputs.items(), desc="predict"):
        phase = read_image(path)
        scaling = normaliser if viscy else input_normaliser(phase, normaliser, stats, str(path),
                                                            normalise)
        size = sizes[name]
        stain = predict_image(generator, phase, scaling, tile_size=size, overlap=overlap)
        for channel, image in zip(config.data.target_channels, stain, strict=True):
            target = output_path(out, channel, name)
            write_image(target, image)
            written.append(target)
    log.info("wrote %d predictions to %s (%s units)", len(written), out, units["units"])
    return written


def _tile_sizes_within_budget(generator: nn.Module, inputs: dict[str, Path],
                              tile_size: int | None, channels: int) -> dict[str, int]:
    """The tile size of each input; from the TIFF headers, before any image is read, an image
    whose prediction would exceed the memory budget (`memory.py`) is refused."""
    per_pixel = inference_bytes_per_pixel(generator)
    sizes = {}
    for name, path in inputs.items():
        shape = read_image_shape(path)
        size = sizes[name] = tile_size or default_tile_size(generator, shape, str(path))
        estimate = predict_bytes(shape, channels=channels, tile_size=size,
                                 activation_bytes_per_pixel=per_pixel)
        whole = predict_bytes(shape, channels=channels, tile_size=1,
                              activation_bytes_per_pixel=0)
        fix = (f"use a smaller --tile-size than {size}" if whole < budget_bytes() else
               "split the image into smaller parts and predict those")
        check_budget(f"{path} ({shape[0]}x{shape[1]} pixels, tiles of {size})", estimate, fix)
    return sizes


def prediction_units(checkpoint: str | Path, config: Config,
                     dataset_root: str | Path | None) -> dict[str, Any]:
    """What units.json says: "stain" (the real stain's units) or "viscy" (VisCy's median/IQR
    units, when no dataset gives a VisCy model's outputs their stain statistics), and why."""
    if not is_viscy_checkpoint(checkpoint):
        return {"units": "stain", "checkpoint": str(checkpoint),
                "reason": "mapped back with the training data's stain statistics"}
    if has_stain_statistics(dataset_root, config):
        return {"units": "stain", "checkpoint": str(checkpoint),
                "reason": f"VisCy's median/IQR units mapped with the median and IQR of "
                          f"{Path(dataset_root) / 'dataset.json'}; the published model's own "
                          "target normalisation is not documented"}
    log.warning("no dataset statistics for %s (dataset %s): its outputs stay in VisCy's "
                "median/IQR units; pass the dataset (--dataset) to map them to stain units",
                checkpoint, dataset_root)
    return {"units": "viscy", "checkpoint": str(checkpoint),
            "reason": "VisCy's median/IQR units: no dataset.json with the stains' median and "
                      "IQR was given"}


def predict_with_tta(generator: nn.Module, phase: np.ndarray, normaliser: Normaliser
                     ) -> np.ndarray:
    """Test-time augmentation: the mean of the stains (C, H, W) predicted for the 8 symmetries
    of the square (4 rotations by 90 degrees, each flipped or not), each turned back first.

    Nothing in a microscope image has a preferred orientation, so each is as valid an input;
    their mean removes what depends on orientation, such as texture a GAN draws differently
    each way."""
    stains = []
    for turns in range(4):
        for flip in (False, True):
            image = np.rot90(phase, turns)
            image = np.ascontiguousarray(image[:, ::-1] if flip else image)
            stain = predict_image(generator, image, normaliser)
            stain = stain[:, :, ::-1] if flip else stain
            stains.append(np.rot90(stain, -turns, axes=(1, 2)))
    return np.mean(stains, axis=0).astype(np.float32)
