"""Which stain map lets a model draw the brightest nuclei? A measurement, no training.

    python experiments/stain_range.py --data data                 # table on stdout
    python experiments/stain_range.py --data data --out stain_range.json

Stains are mapped to the generator's output units with the train split's 0.5th and 99.5th
percentiles (p_low -> -1, p_high -> +1) and the generator ends in tanh, so no prediction can
exceed p_high. Whole bright nuclei (mitoses, G2) lie above it. This script compares candidate
maps on the real stains of a dataset's train split (where a map's constants come from) and
test split (where it is judged), for each:

- `ceiling`: the largest value (a.u.) the model can output, and `test_above_ceiling_%`, the
  share of real test pixels above it (the aim: at most 0.01 %), with `nuclei_above_ceiling`,
  the test nuclei whose mean is above it;
- `nucleus_minus_background`: how many normalised units separate the background (median of
  the test pixels outside nuclei) from a typical nucleus (median over test nuclei of their
  mean intensity), and `vs_today`, that gap over today's: below 1 the ordinary nuclei are
  squeezed into fewer output units;
- `background_iqr`: the interquartile range of the test background (camera noise) in
  normalised units: a compressive map stretches the dim end, so the generator would have to
  draw that noise larger; `contrast_to_noise` is nucleus_minus_background over it;
- `bright_nucleus`: where the brightest test nucleus's mean lands, in normalised units
  (above 1 a tanh output cannot reach it);
- `test_max`: where the brightest test pixel lands, in normalised units.

Every map keeps p_low -> -1. Maps with `headroom` put the train split's brightest pixel at
+0.8, not +1, so the generator need not saturate its tanh to draw it (tanh(x) = 0.8 at
x = 1.1, while 0.99 needs 2.6) and test pixels somewhat brighter than any in train still fit.
The numbers and what they say: docs/stain-range.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from tqdm.auto import tqdm

from pix2pixhd.layout import MASKS, image_path, list_fovs, read_dataset_json, read_image, read_mask

HEADROOM = 0.2
"""Normalised units left between the train split's brightest pixel and tanh's bound of +1."""

SOFTNESS = (100.0, 250.0, 500.0, 1000.0)
"""a.u.: the scales s of the asinh maps (linear below s above p_low, logarithmic above)."""


@dataclass(frozen=True)
class StainMap:
    """A candidate map from the stain's units (a.u.) to the generator's output units."""

    name: str
    normalise: Callable[[np.ndarray], np.ndarray]
    ceiling: float
    """The largest value (a.u.) the model can output: inf without a bounded output."""


def linear(name: str, low: float, high: float, bounded: bool = True) -> StainMap:
    """low -> -1, high -> +1; with a tanh output (bounded) nothing above `high` is reachable."""
    return StainMap(name, lambda x: 2 * (x - low) / (high - low) - 1,
                    high if bounded else math.inf)


def linear_with_headroom(name: str, low: float, brightest: float) -> StainMap:
    """Linear, with `brightest` at 1 - HEADROOM: +1 (the ceiling) lies a little above it."""
    return linear(name, low, low + (brightest - low) * 2 / (2 - HEADROOM))


def asinh_map(name: str, low: float, softness: float, brightest: float) -> StainMap:
    """y = -1 + 2 asinh((x - low) / s) / a, with a chosen so `brightest` lands at 1 - HEADROOM.

    Near low the map is linear with slope 2 / (a s); far above it grows with log(x), so a
    nucleus ten times brighter than a typical one costs only a few more output units.
    """
    scale = 2 * np.arcsinh((brightest - low) / softness) / (2 - HEADROOM)
    return StainMap(name, lambda x: -1 + 2 * np.arcsinh((x - low) / softness) / scale,
                    low + softness * float(np.sinh(scale)))


def read_stains(data: Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The nuclei stains and their instance masks of one split (float64 / integer, (H, W))."""
    fovs = list_fovs(data, split)
    if not fovs:
        sys.exit(f"{data / split} has no images: make a dataset with "
                 f"`python -m pix2pixhd data synthetic --out {data}`")
    stains, masks = [], []
    for fov in tqdm(fovs, desc=f"reading {split}", leave=False):
        stains.append(read_image(image_path(data, split, "nuclei", fov)).astype(np.float64))
        masks.append(read_mask(image_path(data, split, MASKS, fov)))
    return stains, masks


def nucleus_means(stains: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
    """The mean intensity of every nucleus of every image (a.u.), one value per nucleus."""
    means = []
    for stain, labels in zip(stains, masks, strict=True):
        ids = np.unique(labels[labels > 0])
        means.append(np.asarray(ndi.mean(stain, labels, index=ids), dtype=np.float64))
    return np.concatenate(means)


def candidates(train: np.ndarray, train_nuclear: np.ndarray, today: dict) -> list[StainMap]:
    """Today's map and the candidates, all with today's p_low (the 0.5th percentile)."""
    low, brightest = today["p_low"], float(train.max())
    maps = [linear("today: p_high = 99.5th pct of all pixels, tanh", low, today["p_high"])]
    for q in (99.9, 99.99):
        maps.append(linear(f"p_high = {q}th pct of all pixels, tanh", low,
                           float(np.percentile(train, q))))
    for q in (99.5, 99.9):
        maps.append(linear(f"p_high = {q}th pct of nuclear pixels, tanh", low,
                           float(np.percentile(train_nuclear, q))))
    maps.append(linear("p_high = train max, tanh", low, brightest))
    maps.append(linear_with_headroom("p_high: train max at +0.8, tanh", low, brightest))
    for s in SOFTNESS:
        maps.append(asinh_map(f"asinh, s = {s:g}, train max at +0.8, tanh", low, s, brightest))
    maps.append(linear("today's p_low/p_high, no tanh (linear output)", low, today["p_high"],
                       bounded=False))
    return maps


def measure(stain_map: StainMap, test: np.ndarray, outside: np.ndarray,
            nuclei: np.ndarray) -> dict[str, float]:
    """The row of one map: what it cannot reach, and how many units ordinary nuclei get.

    test: all test pixels; outside: those outside nuclei; nuclei: each test nucleus's mean.
    """
    f = stain_map.normalise
    q25, background, q75 = np.percentile(outside, [25, 50, 75])
    gap = float(f(np.median(nuclei)) - f(background))
    noise = float(f(q75) - f(q25))
    return {
        "map": stain_map.name,
        "ceiling": stain_map.ceiling,
        "test_above_ceiling_%": 100 * float(np.mean(test > stain_map.ceiling)),
        "nuclei_above_ceiling": int(np.sum(nuclei > stain_map.ceiling)),
        "nucleus_minus_background": gap,
        "background_iqr": noise,
        "contrast_to_noise": gap / noise,
        "bright_nucleus": float(f(nuclei.max())),
        "test_max": float(f(test.max())),
    }


def run(data: Path) -> dict:
    today = read_dataset_json(data)["normalisation"]["nuclei"]
    train_stains, train_masks = read_stains(data, "train")
    train = np.concatenate([s.ravel() for s in train_stains])
    train_nuclear = np.concatenate([s[m > 0] for s, m in zip(train_stains, train_masks,
                                                             strict=True)])
    del train_stains, train_masks
    test_stains, test_masks = read_stains(data, "test")
    test = np.concatenate([s.ravel() for s in test_stains])
    outside = np.concatenate([s[m == 0] for s, m in zip(test_stains, test_masks, strict=True)])
    nuclei = nucleus_means(test_stains, test_masks)
    rows = [measure(m, test, outside, nuclei) for m in candidates(train, train_nuclear, today)]
    base = rows[0]["nucleus_minus_background"]
    for row in rows:
        row["vs_today"] = row["nucleus_minus_background"] / base
    return {
        "data": str(data),
        "today": {"p_low": today["p_low"], "p_high": today["p_high"]},
        "train_max": float(train.max()),
        "test_max": float(test.max()),
        "test_above_train_max_%": 100 * float(np.mean(test > train.max())),
        "test_below_p_low_%": 100 * float(np.mean(test < today["p_low"])),
        "test_background_median": float(np.median(outside)),
        "test_typical_nucleus_mean": float(np.median(nuclei)),
        "test_brightest_nucleus_mean": float(nuclei.max()),
        "test_nuclei": int(nuclei.size),
        "rows": rows,
    }


def table(result: dict) -> str:
    columns = ("ceiling", "test_above_ceiling_%", "nuclei_above_ceiling",
               "nucleus_minus_background", "vs_today", "background_iqr", "contrast_to_noise",
               "bright_nucleus", "test_max")
    lines = ["| map | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in result["rows"]:
        lines.append(f"| {row['map']} | " + " | ".join(f"{row[c]:.4g}" for c in columns) + " |")
    facts = (f"train max {result['train_max']:.0f} a.u., test max {result['test_max']:.0f} "
             f"({result['test_above_train_max_%']:.4f} % of test pixels above the train max, "
             f"{result['test_below_p_low_%']:.2f} % below p_low, the floor of every map); "
             f"test background median {result['test_background_median']:.0f}, typical nucleus "
             f"{result['test_typical_nucleus_mean']:.0f}, brightest nucleus "
             f"{result['test_brightest_nucleus_mean']:.0f} a.u. ({result['test_nuclei']} nuclei)")
    return "\n".join([*lines, "", facts])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data"),
                        help="a dataset with train and test splits and nuclei masks")
    parser.add_argument("--out", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    result = run(args.data)
    print(table(result))
    if args.out is not None:
        # JSON has no infinity: an unbounded output's ceiling is written as null
        rows = [{k: (None if v == math.inf else v) for k, v in row.items()}
                for row in result["rows"]]
        args.out.write_text(json.dumps(result | {"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
