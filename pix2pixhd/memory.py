"""How much memory a command will take, estimated before it reads a pixel, and one budget.

    estimate = predict_bytes((30000, 30000), channels=1, tile_size=1024,
                             activation_bytes_per_pixel=inference_bytes_per_pixel(generator))
    check_budget("big.tif (30000x30000)", estimate, "split the image into parts")

Every command whose memory grows with its input (download, predict, sample, evaluate, bench)
estimates it here from what headers and metadata say (a TIFF's shape, a store's claimed array
shape, --n, --batch) and refuses in one line, naming the size, the estimate and the option
that lowers it, instead of running for half a minute and ending in a traceback. The estimates
count the arrays the code keeps and its largest temporaries (a float64 copy, numpy's
`x - mean` inside `std`), and the network's activations; `tests/test_memory.py` holds each
within a factor of 1.5 of the peak it measures.

The budget is BUDGET_GIB, or $PIX2PIXHD_MEMORY_GIB where a machine has more (or less).
Host memory only: on a GPU the activations live in its memory, and CUDA names its own limit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

BUDGET_GIB = 8.0
"""Most memory one command may plan to take: a laptop's, with room for everything else."""
BUDGET_ENV = "PIX2PIXHD_MEMORY_GIB"

PROBE_SIDE = 64
"""Side of the image `inference_bytes_per_pixel` runs through the network to see its widths."""
CONV_WORKSPACE = 64
"""Bytes per pixel a CPU convolution pass takes as scratch, once per batch (64-80 B measured
for 1-4 channels at 1024x1024); a wide one takes a second copy of its output instead (measured
for 16 and 32 channels), counted per image by `inference_bytes_per_pixel`."""
LIVE_MAPS = 1.25
"""Feature maps alive at the widest layer, in units of that layer's own: a residual block keeps
its input while its padded copy and convolution run."""


class MemoryBudgetError(ValueError):
    """A command would need more memory than the budget; the message says what lowers it."""


def budget_bytes() -> float:
    """BUDGET_GIB, or $PIX2PIXHD_MEMORY_GIB (a positive number of GiB)."""
    text = os.environ.get(BUDGET_ENV)
    if text is None:
        return BUDGET_GIB * 2**30
    try:
        gib = float(text)
    except ValueError:
        gib = math.nan
    if not 0 < gib < math.inf:
        raise MemoryBudgetError(f"${BUDGET_ENV}={text!r} is not a positive number of GiB; "
                                "set it to the memory your computer may use, e.g. 32")
    return gib * 2**30


def check_budget(what: str, estimate: float, fix: str) -> None:
    """MemoryBudgetError if `estimate` bytes exceed the budget: `what` names the input and its
    size, `fix` the option that lowers the estimate."""
    budget = budget_bytes()
    if estimate > budget:
        raise MemoryBudgetError(
            f"{what} would take about {estimate / 2**30:.1f} GiB of memory, more than the "
            f"{budget / 2**30:g} GiB budget; {fix} (or raise the budget with "
            f"{BUDGET_ENV}=GiB if your computer has the memory)")


# --- what a network needs per pixel -------------------------------------------------------------


def inference_bytes_per_pixel(generator: nn.Module) -> float:
    """Bytes of activations per input pixel and image at the widest point of one inference
    pass (the convolutions' scratch, once per batch, is CONV_WORKSPACE).

    Runs a PROBE_SIDE image through the network with hooks that record each layer's input and
    output sizes: a fully convolutional network's widths per pixel are the same at every image
    size, so this holds for any tile. On a GPU the activations are not host memory: 0.
    """
    parameter = next(generator.parameters())
    if parameter.device.type != "cpu":
        return 0.0
    multiple = getattr(generator, "size_multiple", 1)
    side = multiple * max(1, math.ceil(PROBE_SIDE / multiple))
    channels = next(m.in_channels for m in generator.modules() if hasattr(m, "in_channels"))
    widest = 0

    def record(module: nn.Module, inputs: Sequence[object], output: object) -> None:
        nonlocal widest
        taken = sum(t.numel() * t.element_size() for t in inputs if isinstance(t, torch.Tensor))
        if isinstance(output, torch.Tensor):
            out = output.numel() * output.element_size()
            taken += 2 * out if isinstance(module, nn.modules.conv._ConvNd) else out
        widest = max(widest, taken)

    leaves = [m for m in generator.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    was_training = generator.training
    try:
        generator.eval()
        with torch.no_grad():
            generator(torch.zeros(1, channels, side, side, dtype=parameter.dtype))
    finally:
        generator.train(was_training)
        for hook in hooks:
            hook.remove()
    return LIVE_MAPS * widest / side**2


# --- what each command needs ----------------------------------------------------------------


def read_bytes(shape: Sequence[int], itemsize: int = 4) -> float:
    """Reading one image (`layout.read_image`): the file's pixels, their float32 copy (none
    for a float32 file), and the two boolean maps of the check for NaN and inf."""
    pixels = math.prod(shape)
    return pixels * (itemsize + (0 if itemsize == 4 else 4) + 2)


def tile_bytes(tile_side: int, count: int, channels: int, activation_bytes_per_pixel: float
               ) -> float:
    """One batch of `count` tiles through the network: activations and scratch, and the
    outputs (twice: the batches' list and its concatenation) with the float copies of mapping
    them back."""
    pixels = tile_side**2
    return count * pixels * (activation_bytes_per_pixel + 4 * channels * 4) + (
        pixels * CONV_WORKSPACE)


def predict_bytes(shape: Sequence[int], *, channels: int, tile_size: int,
                  activation_bytes_per_pixel: float, itemsize: int = 4) -> float:
    """`predict.predict_image` on an image of `shape`: the image and its normalised copy, the
    blended sum and its weights, the quotient and its mapping to stain units (float32), and
    one tile through the network."""
    pixels = math.prod(shape)
    whole = read_bytes(shape, itemsize) + pixels * (4 + 4 + 3 * 4 * channels)
    return whole + tile_bytes(min(tile_size, max(shape)), 1, channels,
                              activation_bytes_per_pixel)


def sample_bytes(shape: Sequence[int], *, n: int, channels: int, tile_size: int,
                 batch_size: int, activation_bytes_per_pixel: float, itemsize: int = 4) -> float:
    """`sampling.sample_folder` on one image: the image and the n float32 samples it keeps,
    and the larger of its two phases: one batch of tiles through the network (with the n
    outputs of a tile), or the statistics (the samples' float64 copy and the float64
    `x - mean` that numpy's std makes, both n x H x W, and the maps)."""
    pixels = math.prod(shape)
    side = min(tile_size, max(shape))
    kept = read_bytes(shape, itemsize) + pixels * 4 + n * pixels * 4 * channels
    network = tile_bytes(side, min(batch_size, n), channels, activation_bytes_per_pixel)
    network += n * side**2 * 4 * channels * 2  # the batches and their concatenation, or it and
    # its mapping to stain units
    statistics = n * pixels * (8 + 8) + pixels * 8 * 6  # and mean, std, cv, their temporaries
    return kept + max(network, statistics)


def evaluate_bytes(shape: Sequence[int]) -> float:
    """`evaluate.evaluate_predictions` on one field of view: the prediction, target and masks,
    the float64 copies of the pixel metrics, the segmentations and the spectra."""
    return math.prod(shape) * EVALUATE_BYTES_PER_PIXEL


EVALUATE_BYTES_PER_PIXEL = 100
"""Measured peaks of one field of view above the memory before it, after a warm-up on a small
one: 56 and 224 MiB at 768 and 1536 pixels a side, 93 and 100 bytes per pixel."""


def training_step_bytes(*, batch: int, elements_per_crop: float, crop_size: int,
                        channels: int) -> float:
    """One training step on `batch` crops: the activations autograd keeps (`sizes.py` counts
    them per crop, in elements), as much again for their gradients and the convolutions'
    scratch during the backward pass (measured 1.9-2.0 times the activations on the CPU),
    and the batch itself."""
    return batch * (elements_per_crop * 4 * BACKWARD_FACTOR + crop_size**2 * 4 * (1 + channels))


BACKWARD_FACTOR = 2.0


def plane_bytes(shape: Sequence[int], dtype: np.dtype | str) -> float:
    """Reading one downloaded plane of `shape`: its pixels, and a float32 or int64 copy."""
    pixels = math.prod(int(n) for n in shape)
    return pixels * (np.dtype(dtype).itemsize + 8)
