"""Does a virtual nucleus's trust tell whether it is real? AUROC of trust against a baseline.

    python experiments/trust_auroc.py sweep --checkpoint checkpoints/pix2pixhd_nuclei/latest.pt \
        --split test=data/test --split seed7=other/test --n 4 8 16 32 --max-images 16 \
        --out results/trust
    python experiments/trust_auroc.py table --out results/trust      # the table again, no sampling
    python experiments/trust_auroc.py files --sample OUT             # from what `sample` wrote

A virtual nucleus (segmented in the mean of the MC-dropout samples) is "matched" when a
ground-truth nucleus matches it one to one at IoU >= 0.5; the others are false nuclei (invented,
split, merged or badly drawn). The AUROC says how well a score ranks matched above unmatched
nuclei: trust (both definitions of `pix2pixhd.trust`) against the mean pixel std inside the
nucleus (lower std, more trusted).

`sweep` draws the largest n once per image, with the seed and batch size `sample` uses, and
takes its first n draws for each smaller n: those are exactly the samples `sample --n n`
draws (batches are drawn in order from one seeded stream, and every n here is a multiple of
the batch size), so each n is scored as `sample` would score it. `files` reads
OUT/nuclei_trust.csv, OUT/virtual_nuclei/ and OUT/std/ and prints the same numbers, to check
the two agree.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pix2pixhd.layout import read_image, read_mask
from pix2pixhd.metrics import auroc
from pix2pixhd.predict import input_normaliser, load_predictor_and_statistics
from pix2pixhd.sampling import read_nuclei_trust, sample_stains, split_images
from pix2pixhd.trust import (
    PRESENCE_IOU,
    TRUST_DEFINITIONS,
    matched_to_truth,
    mean_inside,
    nucleus_trust,
    segment_samples,
)
from pix2pixhd.uncertainty import uncertainty_maps

NUCLEI_FILE = "nuclei.csv"
BATCH_SIZE = 4  # sample's default on a CPU; the nesting of n needs every n to be a multiple


def sweep(checkpoint: str, splits: dict[str, Path], ns: list[int], max_images: int | None,
          out: Path, seed: int = 0) -> pd.DataFrame:
    """One row per virtual nucleus, per data set and n: trust, baseline, matched."""
    if any(n % BATCH_SIZE for n in ns):
        raise ValueError(f"every n must be a multiple of {BATCH_SIZE} to nest the draws")
    generator, _, normaliser, stats = load_predictor_and_statistics(checkpoint, "cpu")
    channel = normaliser.target_channels[0]
    rows = []
    for name, split in splits.items():
        images = list(split_images(split, channel).items())[:max_images]
        for file, paths in tqdm(images, desc=f"trust sweep {name}"):
            phase = read_image(paths["phase"])
            scaling = input_normaliser(phase, normaliser, stats, str(paths["phase"]), "dataset")
            stains = sample_stains(generator, scaling, phase, max(ns), seed=seed,
                                   batch_size=BATCH_SIZE)[:, 0]
            true_labels = read_mask(paths["masks"])
            for n in ns:
                labels, best, _ = segment_samples(stains[:n], progress=False)
                std = uncertainty_maps(stains[:n])["std"]
                table = pd.DataFrame({
                    "dataset": name, "n": n, "fov": Path(file).stem,
                    "label": np.unique(labels[labels > 0]),
                    "matched": matched_to_truth(labels, true_labels),
                    "mean_std": mean_inside(std, labels),
                    "samples_present": np.count_nonzero(best >= PRESENCE_IOU, axis=1),
                    **{f"trust_{d}": nucleus_trust(best, d) for d in TRUST_DEFINITIONS},
                })
                rows.append(table)
        pd.concat(rows).to_csv(out / NUCLEI_FILE, index=False)  # partial results survive
    return pd.concat(rows)


def auroc_table(nuclei: pd.DataFrame) -> pd.DataFrame:
    """Per data set and n: nuclei, share matched, AUROC of each trust and of -mean std."""
    scores = {f"trust_{d}": f"AUROC trust ({d})" for d in TRUST_DEFINITIONS}
    rows = []
    for (name, n), group in nuclei.groupby(["dataset", "n"], sort=False):
        row = {"dataset": name, "n": n, "nuclei": len(group),
               "matched": round(group.matched.mean(), 3)}
        row |= {title: auroc(group[column], group.matched) for column, title in scores.items()}
        row["AUROC -mean std (baseline)"] = auroc(-group.mean_std, group.matched)
        rows.append(row)
    return pd.DataFrame(rows)


def from_sample_files(folder: Path) -> pd.DataFrame:
    """The AUROC of trust and of the baseline from one `sample` output folder."""
    nuclei = read_nuclei_trust(folder)
    if "matched" not in nuclei:
        raise ValueError(f"{folder}/nuclei_trust.csv has no matched column: sample a split "
                         "folder that has nuclei_masks/")
    return pd.DataFrame([{
        "nuclei": len(nuclei), "matched": round(nuclei.matched.mean(), 3),
        "AUROC trust": auroc(nuclei.trust, nuclei.matched),
        "AUROC -mean std (baseline)": auroc(-nuclei.mean_std, nuclei.matched)}])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("sweep")
    run.add_argument("--checkpoint", default="checkpoints/pix2pixhd_nuclei/latest.pt")
    run.add_argument("--split", action="append", required=True, help="NAME=FOLDER")
    run.add_argument("--n", type=int, nargs="+", default=[4, 8, 16, 32])
    run.add_argument("--max-images", type=int, default=16)
    run.add_argument("--out", type=Path, required=True)
    again = verbs.add_parser("table")
    again.add_argument("--out", type=Path, required=True)
    files = verbs.add_parser("files")
    files.add_argument("--sample", type=Path, required=True)
    args = parser.parse_args()
    pd.set_option("display.width", 160)
    if args.verb == "files":
        print(from_sample_files(args.sample).round(3).to_string(index=False))
        return
    if args.verb == "sweep":
        args.out.mkdir(parents=True, exist_ok=True)
        splits = dict(item.split("=", 1) for item in args.split)
        sweep(args.checkpoint, {k: Path(v) for k, v in splits.items()}, sorted(args.n),
              args.max_images, args.out)
    nuclei = pd.read_csv(args.out / NUCLEI_FILE)
    print(auroc_table(nuclei).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
