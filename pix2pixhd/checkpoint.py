"""Checkpoints: what a trained model is on disk, written atomically and read safely.

A checkpoint is one `torch.save`d dict of plain types and tensors, so it loads with
`torch.load(weights_only=True)` (no pickled code runs when a student opens a file):

    generator, discriminator         state dicts (the discriminator is None for regression)
    optimizer_G, optimizer_D, scaler optimiser and grad-scaler states, for an exact resume
    epoch, step                      epochs completed, optimiser steps taken
    config                           `config.to_dict(config)`: how to rebuild the networks
    normaliser                       `Normaliser.to_dict()`: how to scale new images
    rng                              torch RNG states (dropout draws from them)
    provenance                       `dataset.data_provenance`: the data it was trained on
    averaged_epochs                  only where the generator is a mean of several epochs
"""

from __future__ import annotations

import fnmatch
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pix2pixhd.config import Config, ModelConfig, from_dict, save_config, saved_config, to_dict
from pix2pixhd.dataset import data_provenance
from pix2pixhd.layout import DataError, read_dataset_json, write_atomically
from pix2pixhd.networks import build_discriminator, build_generator

ARCHITECTURE_OPTIONS = (
    "netG", "ngf", "n_downsample_global", "n_blocks_global", "n_local_enhancers",
    "n_blocks_local", "norm", "use_dropout", "upsample", "ndf", "n_layers_D", "num_D",
)
"""Model options that change the shapes or names of the weights."""
VISCY_ARCHITECTURE_OPTIONS = (
    "encoder_blocks", "dims", "decoder_conv_blocks", "stem_kernel_size", "in_stack_depth",
)
"""The same for model.kind=viscy, whose network takes only these."""

RUN_FILES = ("latest.pt", "epoch_[0-9][0-9][0-9]*.pt", "config.yaml", "logs", ".*.part")
"""What `train` writes into a run folder (glob patterns): all that --overwrite may delete."""

EXPORT_FILES = ("latest.pt", "config.yaml", "logs", ".*.part")
"""What `export_run` writes: all that it replaces in an earlier export."""

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or made for other options."""


def generator_from_config(model: ModelConfig, input_nc: int, output_nc: int) -> nn.Module:
    if model.kind == "viscy":
        from pix2pixhd.vscyto import build_viscy_generator  # vscyto reads checkpoints: no cycle

        return build_viscy_generator(model, input_nc, output_nc)
    return build_generator(
        input_nc=input_nc, output_nc=output_nc, ngf=model.ngf, netG=model.netG,
        n_downsample_global=model.n_downsample_global, n_blocks_global=model.n_blocks_global,
        n_local_enhancers=model.n_local_enhancers, n_blocks_local=model.n_blocks_local,
        norm=model.norm, use_dropout=model.use_dropout, dropout_p=model.dropout_p,
        upsample=model.upsample,
    )


def discriminator_from_config(model: ModelConfig, input_nc: int) -> nn.Module:
    """The discriminator sees the phase image and a stain side by side: input_nc = 1 + C."""
    return build_discriminator(
        input_nc=input_nc, ndf=model.ndf, n_layers_D=model.n_layers_D, num_D=model.num_D,
        norm=model.norm,
    )


def channel_counts(config: Config) -> tuple[int, int]:
    """(input channels, output channels): one phase image in, one map per target stain out."""
    return 1, len(config.data.target_channels)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Written atomically: an interrupted save leaves the previous checkpoint intact."""

    def save(temporary: str) -> None:
        try:
            torch.save(state, temporary)
        except RuntimeError as error:  # torch reports a full disk as a RuntimeError
            raise CheckpointError(f"could not write {path} ({error}); is the disk full? The "
                                  "previous checkpoint there is intact") from error

    return write_atomically(path, save)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt zip, pickled code, truncated file
        raise CheckpointError(f"{path} is not a readable checkpoint ({error})") from error
    if not isinstance(state, dict) or "generator" not in state or "config" not in state:
        raise CheckpointError(
            f"{path} holds no generator and config; for a state dict saved by the original "
            "Pix2PixHD use `networks.load_original_state_dict`"
        )
    saved_config(state["config"], path)  # its values and sizes, before a network is built
    return state


def architecture_differences(saved: ModelConfig, wanted: ModelConfig) -> list[str]:
    """'option: saved -> wanted' for every option that changes the weights' shapes."""
    names = VISCY_ARCHITECTURE_OPTIONS if wanted.kind == "viscy" else ARCHITECTURE_OPTIONS
    return [
        f"{name}: {getattr(saved, name)!r} in the checkpoint, {getattr(wanted, name)!r} now"
        for name in names
        if getattr(saved, name) != getattr(wanted, name)
    ]


def check_compatible(state: dict[str, Any], config: Config, path: str | Path) -> None:
    """Refuse to resume a checkpoint without optimiser states or made for other options."""
    if state.get("optimizer_G") is None:
        raise CheckpointError(
            f"{path} is an exported checkpoint: it holds no optimiser state, so it cannot be "
            "resumed. To fine-tune from it, start a new run (another --name) and load its "
            "weights first: trainer.generator.load_state_dict(load_checkpoint(path)['generator'])"
        )
    saved = from_dict(state["config"])
    differences = architecture_differences(saved.model, config.model)
    if saved.model.kind != config.model.kind:
        differences.insert(0, f"kind: {saved.model.kind!r} in the checkpoint, "
                              f"{config.model.kind!r} now")
    if saved.data.target_channels != config.data.target_channels:
        differences.append(f"data.target_channels: {saved.data.target_channels} in the "
                           f"checkpoint, {config.data.target_channels} now")
    if differences:
        raise CheckpointError(
            f"{path} was trained with other options; resume with the same ones or start a new "
            "run (--name):\n  " + "\n  ".join(differences)
        )


def generator_from_state(
    state: dict[str, Any], device: str | torch.device = "cpu"
) -> tuple[nn.Module, Config, dict[str, Any]]:
    """A checkpoint's generator (eval mode), config and normaliser (a plain dict); to load a
    model from a file, use `predict.load_predictor`."""
    config = from_dict(state["config"])
    generator = generator_from_config(config.model, *channel_counts(config))
    generator.load_state_dict(state["generator"])
    return generator.to(device).eval(), config, state["normaliser"]


def average_generators(paths: Sequence[str | Path]) -> dict[str, Any]:
    """The last of `paths`' checkpoints with its generator's weights averaged over all of them.

    A GAN's single checkpoints swing (one adds noise, the next misplaces nuclei); the mean of
    the weights of its last few epochs, all near one point of a slowly moving trajectory, is
    steadier than any of them (weight averaging: Izmailov et al. 2018, Yazici et al. 2019).
    Instance norms keep no running statistics, so the averaged generator needs no
    recalibration. `averaged_epochs` records which epochs went in.
    """
    if not paths:
        raise ValueError("average_generators needs at least one checkpoint")
    states = [load_checkpoint(path) for path in paths]
    averaged = states[-1]
    weights = averaged["generator"]
    for state, path in zip(states, paths, strict=True):
        if state["generator"].keys() != weights.keys() or any(
                state["generator"][key].shape != value.shape for key, value in weights.items()):
            raise CheckpointError(f"{path} holds another architecture than {paths[-1]}; only "
                                  "checkpoints of one run can be averaged")
    averaged["generator"] = {
        key: (torch.stack([state["generator"][key] for state in states]).mean(0)
              if value.is_floating_point() else value)
        for key, value in weights.items()}
    averaged["averaged_epochs"] = [state["epoch"] for state in states]
    return averaged


def export_run(
    run_dir: str | Path, out_dir: str | Path, *, keep_discriminator: bool = False,
    image_epochs: int = 3, overwrite: bool = False, epochs: Sequence[int] = (),
) -> Path:
    """A trained run made small for sharing: latest.pt without optimiser states, and its logs.

    The exported checkpoint predicts, samples and evaluates like the original, but cannot be
    resumed (the optimisers' moments are gone): that is what makes it a third of the size. The
    logs keep every scalar but the image grids of only `image_epochs` evenly spaced epochs.
    Its config (in latest.pt and config.yaml) names `out_dir` as the run's folder. `epochs`
    exports the run's epoch_NNN.pt instead of its latest.pt, or for several epochs the average
    of their generators (`average_generators`); the logs are the whole run's.
    A non-empty `out_dir` must be an earlier export, unless `overwrite`. A checkpoint that
    records no provenance gets it from its config's data.root as that folder is now.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    paths = [run_dir / f"epoch_{epoch:03d}.pt" for epoch in epochs] or [run_dir / "latest.pt"]
    state = average_generators(paths) if len(paths) > 1 else load_checkpoint(paths[0])
    _check_export_folder(run_dir, out_dir, overwrite)
    kept = {key: state[key] for key in ("generator", "epoch", "step", "normaliser")}
    if "averaged_epochs" in state:
        kept["averaged_epochs"] = state["averaged_epochs"]
    config = from_dict(state["config"])
    # the exported model lives in out_dir now, wherever it was trained
    config.train.checkpoints_dir, config.train.name = str(out_dir.parent), out_dir.name
    kept["config"] = to_dict(config)
    kept["discriminator"] = state["discriminator"] if keep_discriminator else None
    kept["provenance"] = state.get("provenance") or _provenance_from_config(state["config"])
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / "latest.pt", kept)
    if (run_dir / "logs").is_dir():
        if (out_dir / "logs").is_dir():
            shutil.rmtree(out_dir / "logs")  # an earlier export's, checked above
        thin_event_files(run_dir / "logs", out_dir / "logs", image_epochs)
    save_config(config, out_dir / "config.yaml")
    return out_dir / "latest.pt"


def _check_export_folder(run_dir: Path, out_dir: Path, overwrite: bool) -> None:
    """An export replaces only an earlier export, unless told to overwrite; never its run."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"{out_dir} is a file; choose a folder for the export")
    if out_dir.resolve() == run_dir.resolve():
        raise CheckpointError(f"exporting {run_dir} into itself would drop its optimiser "
                              "states; choose another --out")
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


def clear_run_folder(run_dir: Path) -> None:
    """Delete what `train` wrote in `run_dir` (--overwrite); refuse if anything else is there.

    The folder itself stays, so a mistaken --name or --checkpoints-dir cannot remove a
    working folder: only the checkpoints, config and logs of a run go.
    """
    foreign = foreign_files(run_dir, RUN_FILES)
    if foreign:
        raise CheckpointError(
            f"--overwrite refused: {run_dir} holds files that training did not write "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); move them or "
            "choose another --name")
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


def thin_event_files(source: Path, target: Path, image_steps: int) -> None:
    """Copy TensorBoard event files; keep the images of only `image_steps` evenly spaced steps."""
    from tensorboard.backend.event_processing.event_file_loader import (
        LegacyEventFileLoader,
    )
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    for path in sorted(source.rglob("events.out.tfevents.*")):
        events = list(LegacyEventFileLoader(str(path)).Load())
        is_image = lambda value: value.HasField("image")  # noqa: E731
        steps = sorted({e.step for e in events if any(map(is_image, e.summary.value))})
        chosen = np.unique(np.linspace(0, len(steps) - 1, image_steps).round().astype(int))
        keep = {steps[i] for i in chosen} if steps else set()
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
