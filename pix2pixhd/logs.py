"""TensorBoard event files as tables and plots, so the curves can be read without a server.

    scalars = read_scalars("checkpoints/pix2pixhd_nuclei/logs")   # tidy DataFrame
    plot_scalars(scalars, ["loss/D_real", "loss/D_fake"], smoothing=0.9)

The tag names are the ones the Trainer writes (see `pix2pixhd.train`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


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
