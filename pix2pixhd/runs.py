"""Run folders: what `train` writes and `--overwrite` may clear, exports for sharing, and the
provenance of a run (the data it was trained on).

    export_run("runs/pretrain/pix2pixhd_nuclei", "checkpoints/pix2pixhd_nuclei", epoch=30)
    clear_run_folder(run_dir)                # only the files training wrote, or refuse
"""

from __future__ import annotations

import fnmatch
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from pix2pixhd.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from pix2pixhd.config import Config, from_dict, save_config, to_dict
from pix2pixhd.dataset import data_provenance
from pix2pixhd.files import refuse_link
from pix2pixhd.layout import DataError, read_dataset_json
from pix2pixhd.logs import thin_event_files
from pix2pixhd.models import channel_counts, generator_from_checkpoint
from pix2pixhd.normalisation import Normaliser

RUN_FILES = ("latest.pt", "epoch_[0-9][0-9][0-9]*.pt", "config.yaml", "logs", ".*.part")
"""What `train` writes into a run folder (glob patterns): all that --overwrite may delete."""

EXPORT_FILES = ("latest.pt", "config.yaml", "logs", ".*.part")
"""What `export_run` writes: all that it replaces in an earlier export."""

log = logging.getLogger(__name__)


def export_run(
    run_dir: str | Path, out_dir: str | Path, *, keep_discriminator: bool = False,
    image_epochs: int = 3, overwrite: bool = False, epoch: int | None = None,
) -> Path:
    """A trained run made small for sharing: latest.pt without optimiser states, and its logs.

    The exported checkpoint predicts, samples and evaluates like the original, but cannot be
    resumed (the optimisers' moments are gone): that is what makes it a third of the size. The
    logs keep every scalar but the image grids of only `image_epochs` evenly spaced epochs.
    Its config (in latest.pt and config.yaml) names `out_dir` as the run's folder. `epoch`
    exports the run's epoch_NNN.pt instead of its latest.pt; the logs are the whole run's.
    A non-empty `out_dir` must be an earlier export, unless `overwrite`. A checkpoint that
    records no provenance gets it from its config's data.root as that folder is now.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    path = run_dir / (f"epoch_{epoch:03d}.pt" if epoch is not None else "latest.pt")
    state = load_checkpoint(path)
    _check_export_folder(run_dir, out_dir, overwrite)
    kept = {key: state[key] for key in ("generator", "epoch", "step", "normaliser")}
    config = from_dict(state["config"])
    # the exported model lives in out_dir now, wherever it was trained
    config.train.checkpoints_dir, config.train.name = str(out_dir.parent), out_dir.name
    kept["config"] = to_dict(config)
    kept["discriminator"] = state["discriminator"] if keep_discriminator else None
    kept["provenance"] = state.get("provenance") or _provenance_from_config(state["config"])
    made = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / "latest.pt", kept)
    try:
        check_export_predicts(out_dir / "latest.pt")
    except Exception as error:
        _remove_export(out_dir, made)
        raise CheckpointError(
            f"the export of {path} does not load and predict ({error}); removed what it "
            "wrote. Export a checkpoint that `pix2pixhd predict` reads (an earlier epoch with "
            "--epoch, or retrain)") from error
    if (run_dir / "logs").is_dir():
        if (out_dir / "logs").is_dir():
            shutil.rmtree(out_dir / "logs")  # an earlier export's, checked above
        thin_event_files(run_dir / "logs", out_dir / "logs", image_epochs)
    save_config(config, out_dir / "config.yaml")
    return out_dir / "latest.pt"


CHECK_CROP = 64
"""Side of the crop an export predicts before it says it succeeded (rounded up to what the
network can halve)."""


def check_export_predicts(path: Path) -> None:
    """Load an exported checkpoint as `predict` does and predict one crop of zeros: weights
    that do not fit their config, a missing normaliser or a network that gives NaN are found
    here, not by the person the export was shared with."""
    state = load_checkpoint(path)
    generator, config = generator_from_checkpoint(state, path)
    if state.get("normaliser") is None:
        raise CheckpointError(f"{path} holds no normalisation statistics")
    Normaliser.from_dict(state["normaliser"])
    multiple = getattr(generator, "size_multiple", 1)
    side = multiple * math.ceil(CHECK_CROP / multiple)
    inputs, channels = channel_counts(config)
    with torch.no_grad():
        output = generator.eval()(torch.zeros(1, inputs, side, side))
    if tuple(output.shape) != (1, channels, side, side) or not torch.isfinite(output).all():
        raise CheckpointError(f"{path}: a {side}x{side} crop gave an output of shape "
                              f"{tuple(output.shape)} (expected {channels} channels), or NaN")


def _remove_export(out_dir: Path, made: bool) -> None:
    """Remove the latest.pt an export just wrote (and `out_dir`, if it made it)."""
    (out_dir / "latest.pt").unlink(missing_ok=True)
    if made:
        shutil.rmtree(out_dir, ignore_errors=True)


def _check_export_folder(run_dir: Path, out_dir: Path, overwrite: bool) -> None:
    """An export replaces only an earlier export, unless told to overwrite; never its run."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"{out_dir} is a file; choose a folder for the export")
    if out_dir.resolve() == run_dir.resolve():
        raise CheckpointError(f"exporting {run_dir} into itself would drop its optimiser "
                              "states; choose another --out")
    refuse_link(out_dir / "logs", out_dir)  # before latest.pt is replaced, not after
    if overwrite or not out_dir.is_dir() or not foreign_files(out_dir, (".*.part",)):
        return
    foreign = foreign_files(out_dir, EXPORT_FILES) + [
        str(path.relative_to(out_dir)) for path in out_dir.glob("logs/**/*")
        if path.is_file() and not path.name.startswith("events.out.tfevents.")]
    if not foreign and _is_export(out_dir / "latest.pt"):
        return
    raise CheckpointError(
        f"{out_dir} is not empty and is not an earlier export (it holds "
        f"{', '.join(foreign) or 'no exported latest.pt'}); choose an empty or "
        "new --out, or pass --overwrite to replace latest.pt, config.yaml and logs/ there")


def _is_export(path: Path) -> bool:
    """Whether `path` is a checkpoint written by `export_run` (one without optimiser states)."""
    try:
        return "optimizer_G" not in load_checkpoint(path)
    except CheckpointError:
        return False


def foreign_files(folder: Path, patterns: tuple[str, ...]) -> list[str]:
    """Names in `folder` that match none of `patterns` (files this package did not write)."""
    return sorted(entry.name for entry in folder.iterdir()
                  if not any(fnmatch.fnmatchcase(entry.name, p) for p in patterns))


def foreign_run_files(run_dir: Path) -> None:
    """Refuse --overwrite on a folder that holds files training did not write."""
    foreign = foreign_files(run_dir, RUN_FILES)
    if foreign:
        raise CheckpointError(
            f"--overwrite refused: {run_dir} holds files that training did not write "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); move them or "
            "choose another --name")


def clear_run_folder(run_dir: Path) -> None:
    """Delete what `train` wrote in `run_dir` (--overwrite); refuse if anything else is there.

    The folder itself stays, so a mistaken --name or --checkpoints-dir cannot remove a
    working folder: only the checkpoints, config and logs of a run go.
    """
    foreign_run_files(run_dir)
    for entry in run_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def run_provenance(config: Config) -> dict[str, Any] | None:
    """The data a Trainer trains on, for its checkpoints; None where there is no dataset."""
    try:
        return data_provenance(config.data.root, config.data.input_channel)
    except DataError as error:  # e.g. a benchmark on random tensors
        log.debug("no provenance recorded: %s", error)
        return None


def _provenance_from_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """For checkpoints trained before provenance was recorded: their data.root as it is now."""
    provenance = run_provenance(from_dict(config))
    if provenance is None:
        log.warning("the export records no data provenance: %s/dataset.json is not readable",
                    config.get("data", {}).get("root"))
    return provenance


def training_statistics(state: dict[str, Any]) -> dict[str, float]:
    """median and iqr (and p_low, p_high when recorded) of the input a checkpoint trained on."""
    provenance = state.get("provenance") or {}
    if provenance.get("input_statistics"):
        return dict(provenance["input_statistics"])
    normaliser = state.get("normaliser") or {}
    return dict(normaliser.get("stats", {}).get(normaliser.get("input_channel"), {}))


def provenance_mismatch(checkpoint_path: str | Path, data_root: str | Path) -> str | None:
    """One line when the data in `data_root` is not what the checkpoint was trained on.

    Compares the `source` of the checkpoint's provenance with that of data_root/dataset.json
    (and, for synthetic data, the seed); None when they agree or the checkpoint records none.
    """
    provenance = load_checkpoint(checkpoint_path).get("provenance")
    if not provenance:
        return None
    info = read_dataset_json(data_root)
    trained = (provenance.get("source"), provenance.get("details", {}).get("seed"))
    here = (info.get("source", "unknown"), info.get("seed"))
    if trained == here:
        return None
    return (f"{checkpoint_path} was trained on {trained[0]} data (seed {trained[1]}), but "
            f"{data_root} holds {here[0]} data (seed {here[1]}): scores measure how well it "
            "transfers, not how well it learned its own data")
