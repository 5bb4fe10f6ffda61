"""TensorBoard event files as tables and plots, so the curves can be read without a server.

    scalars = read_scalars("checkpoints/pix2pixhd_nuclei/logs")   # tidy DataFrame
    plot_scalars(scalars, [D_REAL, D_FAKE], smoothing=0.9)
    grids = read_images("checkpoints/pix2pixhd_nuclei/logs")      # [(step, image), ...]

The tag names below are the only spelling of what the Trainer writes; `train`, `models`, `viz`
and the notebook import them. Which loss tags a model kind logs is in `models.KINDS`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

# --- the TensorBoard tags the Trainer writes -------------------------------------------------

G_GAN = "loss/G_GAN"
"""The generator's adversarial term: D's verdict on (phase, fake) against "real"."""
G_GAN_FEAT = "loss/G_GAN_Feat"
"""Feature matching, times lambda_feat: D's features of the fake pair against the real pair's."""
G_L1 = "loss/G_L1"
"""L1 distance of fake and real stain (the GAN's weighted and blurred one, or regression's)."""
G_L1_MSDSSIM = "loss/G_L1_MSDSSIM"
"""VisCy's mixed loss: 0.5 L1 + 0.5 (1 - MS-SSIM)."""
G_VGG = "loss/G_VGG"
"""Perceptual loss, times lambda_vgg (only where VGG weights are given)."""
D_REAL = "loss/D_real"
D_FAKE = "loss/D_fake"
"""The discriminator's loss on real pairs and on (detached) fake pairs."""
D_OUT_TRAIN_REAL = "D_out/train_real"
D_OUT_TRAIN_FAKE = "D_out/train_fake"
D_OUT_VAL_REAL = "D_out/val_real"
D_OUT_VAL_FAKE = "D_out/val_fake"
"""D's mean patch score (1 = "real" under LSGAN) on training and validation pairs."""
VAL_PSNR = "val/psnr"
VAL_SSIM = "val/ssim"
"""Per epoch, on the validation crops, in the stain's own units."""
LEARNING_RATE = "lr"
THROUGHPUT = "throughput/images_per_s"
VAL_IMAGES = "val/phase_target_prediction"
"""Image grid per epoch: phase | target | prediction."""
EPOCH_PREFIX = "epoch/"
"""epoch/<tag>: the epoch's mean of each loss and D score, logged at its last step."""

GENERATOR_TAGS = (G_GAN, G_GAN_FEAT, G_L1, G_L1_MSDSSIM, G_VGG)
"""Every generator loss term any model kind logs, in the order the figures list them."""
DISCRIMINATOR_TAGS = (D_REAL, D_FAKE)
D_OUT_TRAIN_TAGS = (D_OUT_TRAIN_REAL, D_OUT_TRAIN_FAKE)
D_OUT_VAL_TAGS = (D_OUT_VAL_REAL, D_OUT_VAL_FAKE)
VALIDATION_TAGS = (VAL_PSNR, VAL_SSIM)


def find_event_files(logdir: str | Path) -> list[Path]:
    return sorted(Path(logdir).rglob("events.out.tfevents.*"))


def read_scalars(logdir: str | Path) -> pd.DataFrame:
    """Every scalar in the event files under `logdir`: columns run, tag, step, value, wall_time.

    `run` is the sub-folder of `logdir` that holds the file ("" for the folder itself).
    `SummaryWriter.add_scalars("PSNR", {"train": ..., "validation": ...})` writes each series
    to its own sub-folder (PSNR_train/, PSNR_validation/) under the same tag, so the run is
    what tells them apart. When a run was resumed, later event files repeat some steps; the
    last written value wins.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = Path(logdir)
    files = find_event_files(logdir)
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {logdir}")
    rows = []
    for order, path in enumerate(files):
        run = path.parent.relative_to(logdir).as_posix()
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            rows += [("" if run == "." else run, tag, e.step, e.value, e.wall_time, order)
                     for e in accumulator.Scalars(tag)]
    columns = ["run", "tag", "step", "value", "wall_time", "file"]
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values(["run", "tag", "step", "file", "wall_time"])
    table = table.drop_duplicates(["run", "tag", "step"], keep="last").drop(columns="file")
    return table.reset_index(drop=True)


def read_images(
    logdir: str | Path, tag: str = VAL_IMAGES
) -> list[tuple[int, np.ndarray]]:
    """The images logged under `tag` in the event files under `logdir`: [(step, image), ...].

    In step order; each image uint8, (H, W, 3) or (H, W, 4) as TensorBoard stored it (a PNG, so
    the pixels are those written). The default tag is the Trainer's validation grid (rows of
    phase | real stain | prediction crops), logged once per epoch. When a resumed run logged a
    step again, the later file's image wins.
    """
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = find_event_files(logdir)
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {logdir}")
    encoded: dict[int, bytes] = {}
    tags: set[str] = set()
    for path in files:
        accumulator = EventAccumulator(str(path), size_guidance={"images": 0})
        accumulator.Reload()
        tags |= set(accumulator.Tags()["images"])
        if tag in accumulator.Tags()["images"]:
            encoded |= {e.step: e.encoded_image_string for e in accumulator.Images(tag)}
    if not encoded:
        known = ", ".join(sorted(tags)) or "none"
        raise KeyError(f"no images tagged {tag!r} under {logdir}; its image tags: {known}")
    return [(step, np.asarray(Image.open(io.BytesIO(encoded[step])))) for step in sorted(encoded)]


def curve(curves: pd.DataFrame, tag: str) -> pd.Series:
    """One tag's values in step order, from `read_scalars`' table of the top folder: its
    per-epoch means (`epoch/<tag>`) where the run logged them, else the tag itself."""
    if "run" in curves.columns:
        curves = curves[curves["run"] == ""]
    for name in (f"{EPOCH_PREFIX}{tag}", tag):
        rows = curves[curves["tag"] == name]
        if len(rows):
            return rows.sort_values("step")["value"].reset_index(drop=True)
    raise KeyError(f"no {tag!r} in these logs; they hold {sorted(curves['tag'].unique())}")


def first_and_last_tenth(values: pd.Series) -> tuple[float, float]:
    """Mean of the first and of the last tenth of a curve (at least one point each)."""
    tenth = max(len(values) // 10, 1)
    return float(values.iloc[:tenth].mean()), float(values.iloc[-tenth:].mean())


def trends(curves: pd.DataFrame, tags: Sequence[str], tolerance: float = 0.01) -> pd.DataFrame:
    """For each tag: the means of its curve's first and last tenth, and whether it "rises",
    "falls" or stays "flat" (changes by less than `tolerance` of its size). A noisy curve read
    by numbers rather than by eye."""
    rows = {}
    for tag in tags:
        first, last = first_and_last_tenth(curve(curves, tag))
        if abs(last - first) <= tolerance * max(abs(first), abs(last), 1e-12):
            trend = "flat"
        else:
            trend = "rises" if last > first else "falls"
        rows[tag] = {"first tenth": first, "last tenth": last, "trend": trend}
    return pd.DataFrame.from_dict(rows, orient="index")


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with bias correction (as TensorBoard's slider, roughly)."""
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    smoothed = np.empty(len(values), dtype=float)
    average = 0.0
    for i, value in enumerate(values):
        average = weight * average + (1 - weight) * value
        smoothed[i] = average / (1 - weight ** (i + 1))
    return smoothed


def plot_scalars(
    scalars: pd.DataFrame,
    tags: Sequence[str],
    *,
    smoothing: float = 0.0,
    ax: plt.Axes | None = None,
    title: str | None = None,
    ylabel: str = "value",
) -> plt.Axes:
    """Curves of some tags against the training step, raw (faint) and smoothed; one curve per
    run where a tag has several (add_scalars series)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    missing = [t for t in tags if t not in set(scalars["tag"])]
    if missing:
        known = ", ".join(sorted(set(scalars["tag"])))
        raise KeyError(f"no scalars tagged {missing}; the logs have: {known}")
    for tag in tags:
        series = scalars[scalars["tag"] == tag]
        runs = series["run"].unique() if "run" in series else [None]
        for run in runs:
            curve = series if run is None else series[series["run"] == run]
            label = tag if len(runs) == 1 else f"{tag} ({run or '.'})"
            line, = ax.plot(curve["step"], curve["value"], alpha=0.3 if smoothing else 1.0, lw=1)
            if smoothing:
                ax.plot(curve["step"], smooth(curve["value"].to_numpy(), smoothing),
                        color=line.get_color(), lw=1.8, label=label)
            else:
                line.set_label(label)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title or ", ".join(tags))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def thin_event_files(source: Path, target: Path, image_steps: int) -> None:
    """Copy TensorBoard event files; keep the images of only `image_steps` evenly spaced steps.

    The steps are chosen over the whole run, not per file: a run that was resumed wrote a
    second event file, and its copy keeps `image_steps` grids in all, not that many per file.
    """
    from tensorboard.backend.event_processing.event_file_loader import (
        LegacyEventFileLoader,
    )
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    def is_image(value) -> bool:
        return value.HasField("image")

    runs = {path: list(LegacyEventFileLoader(str(path)).Load())
            for path in sorted(source.rglob("events.out.tfevents.*"))}
    steps = sorted({event.step for events in runs.values() for event in events
                    if any(map(is_image, event.summary.value))})
    chosen = np.unique(np.linspace(0, len(steps) - 1, image_steps).round().astype(int))
    keep = {steps[i] for i in chosen} if steps else set()
    for path, events in runs.items():
        writer = EventFileWriter(str(target / path.parent.relative_to(source)))
        for event in events:
            if event.step not in keep and any(map(is_image, event.summary.value)):
                values = [v for v in event.summary.value if not is_image(v)]
                del event.summary.value[:]
                event.summary.value.extend(values)
                if not values:
                    continue
            writer.add_event(event)
        writer.close()
