"""Checkpoints: what a trained model is on disk, written atomically and read safely, and
whether one can resume a run. (Run folders and export: `runs`.)

A checkpoint is one `torch.save`d dict of plain types and tensors, so it loads with
`torch.load(weights_only=True)` (no pickled code runs when a student opens a file):

    generator, discriminator         state dicts (the discriminator is None for regression)
    optimizer_G, optimizer_D, scaler optimiser and grad-scaler states, for an exact resume
    epoch, step                      epochs completed, optimiser steps taken
    config                           `config.to_dict(config)`: how to rebuild the networks
    normaliser                       `Normaliser.to_dict()`: how to scale new images
    rng                              torch RNG states (dropout draws from them)
    provenance                       `dataset.data_provenance`: the data it was trained on
"""

from __future__ import annotations

import math
import numbers
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pix2pixhd.config import Config, ModelConfig, from_dict, saved_config
from pix2pixhd.files import write_atomically
from pix2pixhd.layout import DataError
from pix2pixhd.normalisation import Normaliser


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
    """A checkpoint of `train` or `export`, read safely and checked (`check_checkpoint`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} {_why_not_a_file(path)}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:  # torch's refusal is many lines of advice
        raise CheckpointError(_unpickling_message(path, str(error))) from error
    except Exception as error:  # corrupt zip, truncated file
        raise CheckpointError(f"{path} is not a readable checkpoint ({_first_line(error)})"
                              ) from error
    check_checkpoint(state, path)
    return state


def _unpickling_message(path: Path, text: str) -> str:
    """One line for torch's weights-only refusal, without its advice to load unsafely."""
    pickled = re.search(r"GLOBAL (\S+)", text)
    if pickled:
        return (f"{path} holds a pickled Python object ({pickled.group(1)}), not only tensors "
                "and plain values, so it is not loaded: unpickling could run any code. "
                "pix2pixhd's checkpoints hold none; was it written by another program?")
    reason = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(\n|$)", text.strip())
    return (f"{path} is not a readable checkpoint "
            f"({reason.group(1) if reason else text.strip().splitlines()[0]})")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _why_not_a_file(path: Path) -> str:
    if path.is_dir():
        hint = f" (it holds {path / 'latest.pt'})" if (path / "latest.pt").is_file() else ""
        return f"is a folder; pass the checkpoint file in it{hint}"
    if path.exists():
        return "is not a regular file (a device or a pipe); pass a .pt file of `train`"
    return "does not exist"


def check_checkpoint(state: Any, path: str | Path) -> None:
    """CheckpointError (ConfigError for its config), one line naming `path` and the field,
    unless `state` has the fields a checkpoint of `train` or `export` has, of the right types,
    with weights that fit its config.

    Whether the weights fit the config is checked where a network is built from them
    (`models.generator_from_checkpoint`, resume); resume's own fields (optimiser states,
    scaler, rng) where a run resumes.
    """
    if not isinstance(state, dict) or "generator" not in state or "config" not in state:
        raise CheckpointError(
            f"{path} holds no generator and config; for a state dict saved by the original "
            "Pix2PixHD use `networks.load_original_state_dict`")

    def refuse(field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: '{field}' {problem}; it is not a checkpoint as "
                               "`pix2pixhd train` writes them, or it was damaged")

    config = saved_config(state["config"], path)  # its values and sizes, before any network
    weights = state["generator"]
    if not isinstance(weights, dict) or not weights or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise refuse("generator", "is not a non-empty state dict of tensors")
    for field in ("epoch", "step"):
        value = state.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise refuse(field, f"is {value!r}, not a count >= 0")
    if "normaliser" not in state:
        raise refuse("normaliser", "is missing")
    if state["normaliser"] is not None:
        problem = _normaliser_problem(state["normaliser"], config)
        if problem:
            raise refuse("normaliser", problem)
    provenance = state.get("provenance")
    statistics = provenance.get("input_statistics") if isinstance(provenance, dict) else None
    if provenance is not None and not isinstance(provenance, dict) or (
            statistics is not None and not _numbers(statistics)):
        raise refuse("provenance", "is not a mapping with numeric input_statistics")


def _normaliser_problem(values: Any, config: Config) -> str | None:
    """What is wrong with a checkpoint's `Normaliser.to_dict()`, or None."""
    if not isinstance(values, dict) or not isinstance(values.get("stats"), dict):
        return "is not a mapping with 'stats'"
    if not all(isinstance(v, dict) and _numbers(v) for v in values["stats"].values()):
        return "has statistics that are not finite numbers"
    if list(values.get("target_channels") or []) != list(config.data.target_channels):
        return (f"scales {values.get('target_channels')!r}, but the config's "
                f"data.target_channels are {config.data.target_channels}")
    try:
        Normaliser.from_dict(values)
    except (DataError, KeyError, TypeError, ValueError) as error:
        return f"cannot scale images ({error})"
    return None


def _numbers(values: dict[str, Any]) -> bool:
    """Whether every value of `values` is a finite real number (not a bool, not a string)."""
    return all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
               for v in values.values())


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
    if saved.data.stain_map != config.data.stain_map:  # the targets would change scale midway
        differences.append(f"data.stain_map: {saved.data.stain_map!r} in the checkpoint, "
                           f"{config.data.stain_map!r} now")
    if differences:
        raise CheckpointError(
            f"{path} was trained with other options; resume with the same ones or start a new "
            "run (--name):\n  " + "\n  ".join(differences)
        )
