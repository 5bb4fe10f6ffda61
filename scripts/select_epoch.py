"""Choose which saved epoch of a GAN run to ship, on the validation split (never the test split).

    python scripts/select_epoch.py --run runs/pretrain/pix2pixhd_nuclei --data data/val \
        --out runs/select/pix2pixhd_nuclei

Every `epoch_NNN.pt` of the run, and the mean of the weights of the last `--average-last`
saved epochs (`checkpoint.average_generators`), predicts the first `--max-images` validation
images (all by default) and is scored by `evaluate`.
The criterion: among the candidates whose spectrum is realistic (band power ratios low and mid
within [0.5, 2], high at most 3), the one with the highest F1@0.5; if none is realistic, the
one with the lowest log-spectral distance. A GAN's validation metrics do not rise steadily,
so the last epoch is not necessarily the best one. Candidates already scored are not scored
again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pix2pixhd.checkpoint import average_generators, save_checkpoint
from pix2pixhd.evaluate import evaluate_folder
from pix2pixhd.files import output_path, write_text
from pix2pixhd.layout import image_path, list_fovs
from pix2pixhd.predict import predict_folder

COLUMNS = ("band_power_ratio_low", "band_power_ratio_mid", "band_power_ratio_high",
           "log_spectral_distance", "f1_iou50", "recall_bright_nuclei", "recall_other_nuclei",
           "psnr")


def realistic(summary: dict) -> bool:
    """The spectral targets the shipped GAN must meet (docs/results.md)."""
    return (0.5 <= summary["band_power_ratio_low"] <= 2
            and 0.5 <= summary["band_power_ratio_mid"] <= 2
            and summary["band_power_ratio_high"] <= 3)


def phase_images(data: Path, out: Path, max_images: int | None) -> Path:
    """A folder of links to the first `max_images` phase images of the split (or the split)."""
    if max_images is None:
        return data
    subset = out / "phase_subset"
    subset.mkdir(parents=True, exist_ok=True)
    for fov in list_fovs(data.parent, data.name)[:max_images]:
        link = subset / f"{fov}.tif"
        if not link.exists():
            link.symlink_to(image_path(data.parent, data.name, "phase", fov).resolve())
    return subset


def candidates(run: Path, out: Path, average_last: int) -> dict[tuple[int, ...], Path]:
    """(epochs,) -> checkpoint: every saved epoch, and the average of the last few."""
    saved = {int(path.stem.split("_")[1]): path for path in sorted(run.glob("epoch_*.pt"))}
    if not saved:
        raise SystemExit(f"{run} holds no epoch_NNN.pt checkpoints")
    found = {(epoch,): path for epoch, path in saved.items()}
    last = sorted(saved)[-average_last:]
    if average_last > 1 and len(last) == average_last:
        averaged = out / f"average_{last[0]:03d}-{last[-1]:03d}.pt"
        if not averaged.is_file():
            out.mkdir(parents=True, exist_ok=True)
            save_checkpoint(averaged, average_generators([saved[epoch] for epoch in last]))
        found[tuple(last)] = averaged
    return found


def score(checkpoints: dict[tuple[int, ...], Path], data: Path, out: Path,
          max_images: int | None) -> dict[tuple[int, ...], dict]:
    scores = {}
    source = phase_images(data, out, max_images)
    for epochs, checkpoint in checkpoints.items():
        folder = out / checkpoint.stem
        summary_path = folder / "eval" / "summary.json"
        if not summary_path.is_file():
            predict_folder(checkpoint, source, folder / "pred")
            evaluate_folder(folder / "pred", data, folder / "eval",
                            allow_missing=max_images is not None)
        scores[epochs] = json.loads(summary_path.read_text())
    return scores


def choose(scores: dict[tuple[int, ...], dict]) -> tuple[int, ...]:
    realistic_ones = [epochs for epochs, summary in scores.items() if realistic(summary)]
    if realistic_ones:
        return max(realistic_ones, key=lambda epochs: scores[epochs]["f1_iou50"])
    return min(scores, key=lambda epochs: scores[epochs]["log_spectral_distance"])


def label(epochs: tuple[int, ...]) -> str:
    return str(epochs[0]) if len(epochs) == 1 else f"mean of {epochs[0]}-{epochs[-1]}"


def table(scores: dict[tuple[int, ...], dict], chosen: tuple[int, ...]) -> str:
    lines = ["| epoch | " + " | ".join(COLUMNS) + " | realistic |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for epochs, summary in sorted(scores.items(), key=lambda item: (len(item[0]), item[0])):
        mark = "**" if epochs == chosen else ""
        values = " | ".join("-" if summary.get(c) is None else f"{summary[c]:.3g}"
                            for c in COLUMNS)
        verdict = "yes" if realistic(summary) else "no"
        lines.append(f"| {mark}{label(epochs)}{mark} | {values} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a training run's folder")
    parser.add_argument("--data", default=Path("data/val"), type=Path, help="a validation split")
    parser.add_argument("--out", required=True, type=Path, help="where predictions and scores go")
    parser.add_argument("--max-images", type=int, default=None,
                        help="score only the first N validation images (faster)")
    parser.add_argument("--average-last", type=int, default=5,
                        help="also score the mean weights of the last N saved epochs (1: no)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    checkpoints = candidates(args.run, args.out, args.average_last)
    scores = score(checkpoints, args.data, args.out, args.max_images)
    chosen = choose(scores)
    text = table(scores, chosen)
    write_text(output_path(args.out, "selection.md"), text + "\n")
    print(text)
    epochs = " ".join(map(str, chosen))
    print(f"\nchosen: epoch {label(chosen)}; ship it with\n  python -m pix2pixhd export --run "
          f"{args.run} --epoch {epochs} --out checkpoints/{args.run.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
