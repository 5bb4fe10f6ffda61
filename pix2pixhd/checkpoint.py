"""Checkpoints: what a trained model is on disk, written atomically and read safely, whether
one can resume a run, and the mean of several. (Run folders and export: `runs`.)

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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pix2pixhd.config import Config, ModelConfig, from_dict, saved_config
from pix2pixhd.layout import write_atomically


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or made for other options."""


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


def architecture_differences(saved: ModelConfig, wanted: ModelConfig,
                             options: Sequence[str]) -> list[str]:
    """'option: saved -> wanted' for each of `options` (those that shape the weights,
    `models.ModelKind.architecture_options`) that differs."""
    return [
        f"{name}: {getattr(saved, name)!r} in the checkpoint, {getattr(wanted, name)!r} now"
        for name in options
        if getattr(saved, name) != getattr(wanted, name)
    ]


def check_compatible(state: dict[str, Any], config: Config, path: str | Path,
                     architecture_options: Sequence[str]) -> None:
    """Refuse to resume a checkpoint without optimiser states or made for other options
    (`architecture_options`: the model kind's options that shape its weights)."""
    if state.get("optimizer_G") is None:
        raise CheckpointError(
            f"{path} is an exported checkpoint: it holds no optimiser state, so it cannot be "
            "resumed. To fine-tune from it, start a new run (another --name) and load its "
            "weights first: trainer.generator.load_state_dict(load_checkpoint(path)['generator'])"
        )
    saved = from_dict(state["config"])
    differences = architecture_differences(saved.model, config.model, architecture_options)
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
