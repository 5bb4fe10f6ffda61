"""Does a model draw the border of an image worse than its middle, and would context help?

    python experiments/edge_context.py --checkpoint checkpoints/viscy_nuclei/latest.pt \
        --data data --split test --images 10

A network sees nothing beyond the border of its input, and its own zero padding tells it where
the border is. VisCy's head adds a second effect: after its pixel shuffle it pads one row and
one column of zeros at the top and left and averages 2 x 2 neighbours, so the first row and
column of every output are averaged with zeros. A way round both is to give the network
context: pad the phase image by a margin before predicting, and crop the output back.

For each kind of context (none; the image reflected, its edge pixels repeated, or zeros, which
the normalised phase reads as its mean) and margin, this script prints, over the first
`--images` fields of view of a split:

- the mean absolute error against the real stain at 0, 1, 2, 4, 8, 16, 32 and 64 pixels from
  the nearest border (a.u.), and the root-mean-square error over the whole image;
- the median signed error of the first two rows and columns (a.u.): a line along an edge
  shows as a large value there.

It then predicts square crops of each image (the training crop's side and larger, at the
corner and inside) and prints the same first-line errors, and the last row's and column's:
if the line were a mismatch between the crops a model trains on and the whole images it
predicts, it would be missing at the training size.

The numbers and what they say: docs/results.md ("The three models' look").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pix2pixhd.layout import image_path, list_fovs, read_image
from pix2pixhd.predict import load_predictor, predict_tensor

DISTANCES = (0, 1, 2, 4, 8, 16, 32, 64)
CONTEXTS = (("none", 0), ("reflect", 2), ("reflect", 16), ("replicate", 16), ("constant", 16))
"""(padding mode of torch.nn.functional.pad, margin in pixels); 16 keeps VisCy's grid."""
CROP_CORNERS = ((0, 0), (64, 64), (192, 128))
"""Top-left corners (row, column) of the crops predicted on their own."""


def predict_with_context(generator: torch.nn.Module, phase: torch.Tensor, mode: str,
                         margin: int) -> torch.Tensor:
    """Normalised phase (1, 1, H, W) -> normalised stain (1, C, H, W), predicted with `margin`
    pixels of `mode` context on every side; `predict_tensor` then pads to the network's size
    multiple as `predict` does, so margin 0 is exactly what `predict` draws."""
    height, width = phase.shape[-2:]
    if margin:
        phase = F.pad(phase, (margin, margin, margin, margin), mode=mode)
    return predict_tensor(generator, phase)[..., margin:margin + height, margin:margin + width]


def distance_to_border(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[:height, :width]
    return np.minimum(np.minimum(rows, cols), np.minimum(height - 1 - rows, width - 1 - cols))


def border_errors(prediction: np.ndarray, stain: np.ndarray) -> dict[str, np.ndarray]:
    error = prediction - stain
    distance = distance_to_border(*error.shape)
    return {
        "by_distance": np.array([np.abs(error[distance == d]).mean() for d in DISTANCES]),
        "squared": np.array([np.mean(error**2)]),
        "first_lines": first_and_last_lines(error)[:4],
    }


def first_and_last_lines(error: np.ndarray) -> np.ndarray:
    """Median signed error of rows 0 and 1, columns 0 and 1, the last row and the last column."""
    return np.array([np.median(error[0]), np.median(error[1]), np.median(error[:, 0]),
                     np.median(error[:, 1]), np.median(error[-1]), np.median(error[:, -1])])


def crop_lines(predict_stain, phase: np.ndarray, stain: np.ndarray, size: int) -> list[np.ndarray]:
    """`first_and_last_lines` of each crop of side `size` at CROP_CORNERS that fits the image."""
    lines = []
    for row, col in CROP_CORNERS:
        if row + size <= phase.shape[0] and col + size <= phase.shape[1]:
            window = np.s_[row:row + size, col:col + size]
            lines.append(first_and_last_lines(predict_stain(phase[window]) - stain[window]))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="a dataset folder, e.g. data")
    parser.add_argument("--split", default="test")
    parser.add_argument("--channel", default="nuclei")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--crop-sizes", type=int, nargs="*", default=[128, 256],
                        help="sides of the crops predicted on their own (the training crop's "
                             "side first)")
    args = parser.parse_args(argv)

    generator, config, normaliser = load_predictor(args.checkpoint)
    channel = config.data.target_channels.index(args.channel)

    def predict_stain(phase: np.ndarray, mode: str = "none", margin: int = 0) -> np.ndarray:
        normalised = np.asarray(normaliser.normalise_input(phase), np.float32)
        prediction = predict_with_context(
            generator, torch.from_numpy(normalised)[None, None], mode, margin)
        return normaliser.denormalise_target(prediction[0].numpy())[channel]

    fovs = list_fovs(args.data, args.split)[:args.images]
    images = [(read_image(image_path(args.data, args.split, "phase", fov)),
               read_image(image_path(args.data, args.split, args.channel, fov))) for fov in fovs]

    print(f"{args.checkpoint}, {len(fovs)} fields of view of {Path(args.data) / args.split}")
    print(f"{'context':>10} {'margin':>6} | mean |error| at "
          f"{', '.join(map(str, DISTANCES))} px from the border | RMSE | "
          "median error of row 0, row 1, column 0, column 1")
    for mode, margin in CONTEXTS:
        results = [border_errors(predict_stain(phase, mode, margin), stain)
                   for phase, stain in images]
        by_distance = np.mean([r["by_distance"] for r in results], axis=0)
        rmse = np.sqrt(np.mean([r["squared"] for r in results]))
        lines = np.median([r["first_lines"] for r in results], axis=0)
        print(f"{mode:>10} {margin:>6} | {' '.join(f'{e:6.1f}' for e in by_distance)} | "
              f"{rmse:6.1f} | {' '.join(f'{e:+7.1f}' for e in lines)}", flush=True)

    print("\ncrops predicted on their own | median error of row 0, row 1, column 0, column 1, "
          "last row, last column")
    for size in args.crop_sizes:
        lines = [line for phase, stain in images
                 for line in crop_lines(predict_stain, phase, stain, size)]
        if lines:
            print(f"{size:>4} px, {len(lines):>3} crops | "
                  f"{' '.join(f'{e:+7.1f}' for e in np.median(lines, axis=0))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
