"""The recipe ablation behind the shipped GAN: short trainings of equal budget, scored on val.

    python experiments/ablation.py --data data --out runs/ablation --epochs 8           # all
    python experiments/ablation.py --data data --out runs/ablation --only resize resize_l1
    python experiments/ablation.py --out runs/ablation --report                         # the table

Every variant starts from the original Pix2PixHD recipe (ORIGINAL) on the `pretrained`
preset's architecture, on crops of `--crop` pixels (128 by default: a quarter of the preset's
cost, so that the whole ablation fits in under an hour on two CPU cores) and changes one or two
options. Each is trained for the same number of epochs, predicts the whole validation images,
and is scored by `evaluate` (band power ratios, log-spectral distance, F1, PSNR). Variants
already scored are skipped, so the script can be rerun after an interruption, or split across
processes with --only.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from pix2pixhd.config import apply_overrides, load_config
from pix2pixhd.evaluate import evaluate_folder
from pix2pixhd.predict import predict_folder
from pix2pixhd.train import Trainer

ORIGINAL = ["model.upsample=transpose", "loss.lambda_feat=10", "loss.lambda_l1=0",
            "loss.l1_blur_sigma=0"]
"""The original's recipe, undoing what the presets changed after this ablation
(`presets.RECIPE`)."""

VARIANTS = {
    "original": [],
    "resize": ["model.upsample=resize"],
    "resize_feat2": ["model.upsample=resize", "loss.lambda_feat=2"],
    "resize_feat1": ["model.upsample=resize", "loss.lambda_feat=1"],
    "resize_l1": ["model.upsample=resize", "loss.lambda_l1=10"],
    "resize_ndf32": ["model.upsample=resize", "model.ndf=32"],
    "resize_lrD_half": ["model.upsample=resize", "train.lr_D_ratio=0.5"],
    "regression": ["model.kind=regression", "model.upsample=resize"],
}
"""name -> `--set` overrides on top of the `pretrained` preset with the ORIGINAL recipe."""

COLUMNS = ("band_power_ratio_low", "band_power_ratio_mid", "band_power_ratio_high",
           "log_spectral_distance", "f1_iou50", "psnr", "ssim")


def run_variant(name: str, data: Path, out: Path, epochs: int, crop: int) -> dict:
    summary_path = out / name / "eval" / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    config = apply_overrides(load_config("pretrained"), [
        f"data.root={data}", f"train.name={name}", f"train.checkpoints_dir={out}",
        f"train.niter={epochs - epochs // 2}", f"train.niter_decay={epochs // 2}",
        f"data.crop_size={crop}", "data.num_workers=0", *ORIGINAL, *VARIANTS[name]])
    run_dir = out / name
    Trainer(config, resume=(run_dir / "latest.pt").is_file()).fit()
    predict_folder(run_dir / "latest.pt", data / "val", run_dir / "pred")
    return evaluate_folder(run_dir / "pred", data / "val", run_dir / "eval")


def report(out: Path, real_f1: float | None = None) -> str:
    lines = ["| variant | overrides | " + " | ".join(COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for name, overrides in VARIANTS.items():
        path = out / name / "eval" / "summary.json"
        if not path.is_file():
            continue
        summary = json.loads(path.read_text())
        real_f1 = summary.get("real_stain_f1_iou50", real_f1)
        values = " | ".join(f"{summary[c]:.3g}" for c in COLUMNS)
        lines.append(f"| {name} | {' '.join(overrides) or '(original)'} | {values} |")
    if real_f1 is not None:
        lines.append(f"\nreal stain, segmented the same way: F1@0.5 {real_f1:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", type=Path)
    parser.add_argument("--out", default="runs/ablation", type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--crop", type=int, default=128, help="training crop size, pixels")
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--report", action="store_true", help="only print the table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.report:
        for name in args.only or VARIANTS:
            run_variant(name, args.data, args.out, args.epochs, args.crop)
    table = report(args.out)
    print(table)
    (args.out / "ablation.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
