"""Choose which saved epoch of a GAN run to ship, on the validation split (never the test split).

    python scripts/select_epoch.py --run runs/pretrain/pix2pixhd_nuclei --data data/val \
        --out runs/select/pix2pixhd_nuclei

Every `epoch_NNN.pt` of the run predicts the first `--max-images` validation images (all by
default) and is scored by `evaluate`.
The criterion: among the epochs whose spectrum is realistic (band power ratios low and mid
within [0.5, 2], high at most 3), the one with the highest F1@0.5; if none is realistic, the
one with the lowest log-spectral distance. A GAN's validation metrics do not rise steadily,
so the last epoch is not necessarily the best one. Epochs already scored are not scored again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pix2pixhd.evaluate import evaluate_folder
from pix2pixhd.layout import image_path, list_fovs
from pix2pixhd.predict import predict_folder

COLUMNS = ("band_power_ratio_low", "band_power_ratio_mid", "band_power_ratio_high",
           "log_spectral_distance", "f1_iou50", "psnr")


def realistic(summary: dict) -> bool:
    """The spectral targets the shipped GAN must meet (README)."""
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


def score_epochs(run: Path, data: Path, out: Path, max_images: int | None) -> dict[int, dict]:
    scores = {}
    source = phase_images(data, out, max_images)
    for checkpoint in sorted(run.glob("epoch_*.pt")):
        epoch = int(checkpoint.stem.split("_")[1])
        folder = out / checkpoint.stem
        summary_path = folder / "eval" / "summary.json"
        if not summary_path.is_file():
            predict_folder(checkpoint, source, folder / "pred")
            evaluate_folder(folder / "pred", data, folder / "eval",
                            allow_missing=max_images is not None)
        scores[epoch] = json.loads(summary_path.read_text())
    if not scores:
        raise SystemExit(f"{run} holds no epoch_NNN.pt checkpoints")
    return scores


def choose(scores: dict[int, dict]) -> int:
    candidates = [epoch for epoch, summary in scores.items() if realistic(summary)]
    if candidates:
        return max(candidates, key=lambda epoch: scores[epoch]["f1_iou50"])
    return min(scores, key=lambda epoch: scores[epoch]["log_spectral_distance"])


def table(scores: dict[int, dict], chosen: int) -> str:
    lines = ["| epoch | " + " | ".join(COLUMNS) + " | realistic |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for epoch, summary in sorted(scores.items()):
        mark = "**" if epoch == chosen else ""
        values = " | ".join(f"{summary[c]:.3g}" for c in COLUMNS)
        verdict = "yes" if realistic(summary) else "no"
        lines.append(f"| {mark}{epoch}{mark} | {values} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a training run's folder")
    parser.add_argument("--data", default=Path("data/val"), type=Path, help="a validation split")
    parser.add_argument("--out", required=True, type=Path, help="where predictions and scores go")
    parser.add_argument("--max-images", type=int, default=None,
                        help="score only the first N validation images (faster)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    scores = score_epochs(args.run, args.data, args.out, args.max_images)
    chosen = choose(scores)
    text = table(scores, chosen)
    (args.out / "selection.md").write_text(text + "\n")
    print(text)
    print(f"\nchosen: epoch {chosen}; ship it with\n  python -m pix2pixhd export --run {args.run} "
          f"--epoch {chosen} --out checkpoints/{args.run.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
