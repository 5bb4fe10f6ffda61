"""Screen training recipes: variants x seeds of one preset, each scored at its last epoch on a
held-out data set (another synthetic seed, never used to choose anything during training).

    python experiments/screen.py --preset quick --data data --heldout runs/heldout/test \
        --out runs/screen --seeds 0 1 2 \
        --variant warm="train.init_generator=checkpoints/regression_nuclei/latest.pt" \
        --variant scratch=""

A variant is a name and comma-separated `--set` overrides. Every run trains in OUT/<variant>_s<seed>
(resumed when it stopped half-way; a finished run is only scored), then its last checkpoint
predicts the held-out split and `evaluate` scores it with G's weights. The moving average of
G's weights (train.ema_decay) that it once scored beside them was removed from the package
(results in docs/recipe.md). The table gives the band power ratios as Part 4 draws them (ratio
of the mean spectra), F1@0.5 as a multiple of the real stain's, PSNR, the recalls of the bright
and the other nuclei, whether all three bands are within [0.5, 2] (realistic), and how many of
the last `--last` saved epochs are realistic, a drift's trace that the last epoch alone can
hide. Each checkpoint predicts as `predict` does, in tiles of its training crops' side;
`--tiles SIZE OVERLAP` chooses other tiles (`experiments/tile_size.py`) and keeps those scores
apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from pix2pixhd.checkpoint import load_checkpoint
from pix2pixhd.config import apply_overrides, load_config
from pix2pixhd.evaluate import REAL_STAIN, evaluate_folder
from pix2pixhd.predict import predict_folder
from pix2pixhd.train import Trainer

BANDS = ("low", "mid", "high")


def realistic(summary: dict) -> bool:
    """All three band power ratios within [0.5, 2] of the real stain's."""
    return all(0.5 <= summary[f"band_power_ratio_{band}"] <= 2 for band in BANDS)


def train(preset: str, overrides: list[str], run_dir: Path, data: str) -> float:
    """Train (or finish) one run; returns the seconds this call trained."""
    config = apply_overrides(load_config(preset), [
        f"data.root={data}", "data.num_workers=0", f"train.name={run_dir.name}",
        f"train.checkpoints_dir={run_dir.parent}", *overrides])
    latest = run_dir / "latest.pt"
    resume = latest.is_file()
    if resume and load_checkpoint(latest)["epoch"] >= config.epochs:
        return 0.0
    started = time.perf_counter()
    Trainer(config, resume=resume).fit()
    return time.perf_counter() - started


def score(checkpoint: Path, heldout: Path, out: Path, tiles: tuple[int, int] | None = None
          ) -> dict:
    """evaluate's summary of `checkpoint` on `heldout`, predicted as `predict` does (tiles of
    the training crops' side) or in (size, overlap) `tiles`; kept in OUT and read from there
    the next time."""
    summary_path = out / "eval" / "summary.json"
    if not summary_path.is_file():
        size, overlap = tiles or (None, None)
        predict_folder(checkpoint, heldout / "phase", out / "pred", dataset_root=heldout.parent,
                       tile_size=size, overlap=overlap)
        evaluate_folder(out / "pred", heldout, out / "eval")
    return json.loads(summary_path.read_text())


def realistic_epochs(run_dir: Path, heldout: Path, out: Path, last: int,
                     tiles: tuple[int, int] | None = None) -> str:
    """'k of n (epochs ...)': how many of the run's last `last` saved epochs are realistic."""
    epochs = sorted(run_dir.glob("epoch_*.pt"))[-last:]
    good = [path.stem.removeprefix("epoch_") for path in epochs
            if realistic(score(path, heldout, out / path.stem, tiles))]
    return f"{len(good)} of {len(epochs)}" + (f" ({', '.join(good)})" if good else "")


def row(name: str, summary: dict, seconds: float, recent: str) -> str:
    f1 = summary["f1_iou50"] / summary[f"{REAL_STAIN}f1_iou50"]
    bands = " / ".join(f"{summary[f'band_power_ratio_{band}']:.2f}" for band in BANDS)
    took = "-" if not seconds else f"{seconds / 60:.1f}"
    return (f"| {name} | {bands} | {f1:.3f} | {summary['psnr']:.2f} | "
            f"{summary['recall_bright_nuclei']:.2f} / {summary['recall_other_nuclei']:.2f} | "
            f"{'yes' if realistic(summary) else 'no'} | {recent} | {took} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--data", default="data", help="the data set that trains")
    parser.add_argument("--heldout", required=True, type=Path, help="a split that only scores")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=OVERRIDES")
    parser.add_argument("--last", type=int, default=10,
                        help="count the realistic ones among this many last saved epochs")
    parser.add_argument("--tiles", type=int, nargs=2, metavar=("SIZE", "OVERLAP"),
                        help="predict in tiles of SIZE pixels sharing OVERLAP (default: as "
                        "predict does)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    lines = ["| run | bands low / mid / high | F1@0.5 / real | PSNR | recall bright / others "
             "| realistic | realistic of last | train min |", "|---|---|---|---|---|---|---|---|"]
    tiles = tuple(args.tiles) if args.tiles else None
    kept_apart = "_tiles{}_{}".format(*tiles) if tiles else ""  # other tiles, other files
    for variant in args.variant:
        name, _, text = variant.partition("=")
        overrides = [item for item in text.split(",") if item]
        for seed in args.seeds:
            run_dir = args.out / f"{name}_s{seed}"
            seconds = train(args.preset, [*overrides, f"train.seed={seed}"], run_dir, args.data)
            scores = args.out / f"scores{kept_apart}"
            summary = score(run_dir / "latest.pt", args.heldout, scores / run_dir.name, tiles)
            recent = realistic_epochs(run_dir, args.heldout, scores / run_dir.name, args.last,
                                      tiles)
            lines.append(row(run_dir.name, summary, seconds, recent))
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    (args.out / f"screen{kept_apart}.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
