"""Does a generator draw the brightest nuclei alike on the crops it trained on and on whole
images? Counts of bright output pixels when the same images are predicted whole and tile by tile.

    python experiments/tile_size.py --data runs/heldout/test --tiles 128 256 \
        checkpoints/pix2pixhd_nuclei/latest.pt runs/screen/warm_s0/latest.pt

Each checkpoint predicts the first `--max-images` images of a split (one forward pass each, in
the mode `predict` uses) whole, and as independent tiles of each size (every tile normalised on
its own by the instance norms, as a training crop is). The table counts, per 10,000 pixels, the
outputs above 0.2 and above 0.5 in the network's own units (the asinh stain map's: the real
stain's brightest nuclei), beside the real stain's counts, in the first checkpoint's units (runs
on one dataset share them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tifffile
import torch

from pix2pixhd.checkpoint import load_checkpoint
from pix2pixhd.layout import image_path, list_fovs
from pix2pixhd.models import generator_from_checkpoint
from pix2pixhd.normalisation import Normaliser
from pix2pixhd.predict import predict_tensor, tiles

LEVELS = (0.2, 0.5)


def tiled(generator: torch.nn.Module, phase: torch.Tensor, size: int) -> np.ndarray:
    """G's output when each size x size tile (`predict.tiles`, none shared) is predicted alone."""
    height, width = phase.shape[-2:]
    out = np.empty((height, width), dtype=np.float32)
    for rows, cols in tiles(height, width, size, 0):
        out[rows, cols] = predict_tensor(generator, phase[..., rows, cols])[0, 0].numpy()
    return out


def counts(values: list[np.ndarray]) -> str:
    pixels = np.concatenate([v.ravel() for v in values])
    return " | ".join(f"{np.mean(pixels > level) * 1e4:.2f}" for level in LEVELS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data", required=True, type=Path, help="a split with phase and nuclei")
    parser.add_argument("--tiles", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--max-images", type=int, default=8)
    args = parser.parse_args(argv)
    torch.manual_seed(0)  # the dropout predict keeps on
    fovs = list_fovs(args.data.parent, args.data.name)[:args.max_images]
    header = " | ".join(f"> {level}" for level in LEVELS)
    print(f"| checkpoint | input | {header} |\n|---|---|" + "---|" * len(LEVELS))
    real_shown = False
    for checkpoint in args.checkpoints:
        state = load_checkpoint(checkpoint)
        generator, _ = generator_from_checkpoint(state, checkpoint)
        normaliser = Normaliser.from_dict(state["normaliser"])
        outputs: dict[str, list[np.ndarray]] = {"whole": []} | {
            f"{size} px tiles": [] for size in args.tiles}
        reals = []
        for fov in fovs:
            phase = tifffile.imread(image_path(args.data.parent, args.data.name, "phase", fov))
            stain = tifffile.imread(image_path(args.data.parent, args.data.name, "nuclei", fov))
            reals.append(np.asarray(normaliser.normalise_target(
                stain.astype(np.float32)[None]))[0])
            x = torch.as_tensor(np.asarray(normaliser.normalise_input(phase)),
                                dtype=torch.float32)[None, None]
            with torch.no_grad():
                outputs["whole"].append(predict_tensor(generator, x)[0, 0].numpy())
                for size in args.tiles:
                    outputs[f"{size} px tiles"].append(tiled(generator, x, size))
        if not real_shown:
            print(f"| real stain | - | {counts(reals)} |")
            real_shown = True
        for name, values in outputs.items():
            print(f"| {checkpoint} | {name} | {counts(values)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
