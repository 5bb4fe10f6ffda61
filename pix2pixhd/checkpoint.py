"""Checkpoints: what a trained model is on disk, written atomically and read safely.

A checkpoint is one `torch.save`d dict of plain types and tensors, so it loads with
`torch.load(weights_only=True)` (no pickled code runs when a student opens a file):

    generator, discriminator         state dicts (the discriminator is None for regression)
    optimizer_G, optimizer_D, scaler optimiser and grad-scaler states, for an exact resume
    epoch, step                      epochs completed, optimiser steps taken
    config                           `config.to_dict(config)`: how to rebuild the networks
    normaliser                       `Normaliser.to_dict()`: how to scale new images
    rng                              torch RNG states (dropout draws from them)
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pix2pixhd.config import Config, ModelConfig, from_dict
from pix2pixhd.layout import write_atomically
from pix2pixhd.networks import build_discriminator, build_generator

ARCHITECTURE_OPTIONS = (
    "netG", "ngf", "n_downsample_global", "n_blocks_global", "n_local_enhancers",
    "n_blocks_local", "norm", "use_dropout", "upsample", "ndf", "n_layers_D", "num_D",
)
"""Model options that change the shapes or names of the weights."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or made for other options."""


def generator_from_config(model: ModelConfig, input_nc: int, output_nc: int) -> nn.Module:
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
    return write_atomically(path, lambda temporary: torch.save(state, temporary))


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
    return state


def architecture_differences(saved: ModelConfig, wanted: ModelConfig) -> list[str]:
    """'option: saved -> wanted' for every option that changes the weights' shapes."""
    return [
        f"{name}: {getattr(saved, name)!r} in the checkpoint, {getattr(wanted, name)!r} now"
        for name in ARCHITECTURE_OPTIONS
        if getattr(saved, name) != getattr(wanted, name)
    ]


def check_compatible(state: dict[str, Any], config: Config, path: str | Path) -> None:
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


def load_generator(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Config, dict[str, Any]]:
    """The trained generator in eval mode, its config, and its normaliser as a plain dict."""
    state = load_checkpoint(path)
    config = from_dict(state["config"])
    generator = generator_from_config(config.model, *channel_counts(config))
    generator.load_state_dict(state["generator"])
    return generator.to(device).eval(), config, state["normaliser"]


def export_run(
    run_dir: str | Path, out_dir: str | Path, *, keep_discriminator: bool = False,
    image_epochs: int = 3,
) -> Path:
    """A trained run made small for sharing: latest.pt without optimiser states, and its logs.

    The exported checkpoint predicts, samples and evaluates like the original, but cannot be
    resumed (the optimisers' moments are gone): that is what makes it a third of the size. The
    logs keep every scalar but the image grids of only `image_epochs` evenly spaced epochs.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    state = load_checkpoint(run_dir / "latest.pt")
    kept = {key: state[key] for key in ("generator", "epoch", "step", "config", "normaliser")}
    kept["discriminator"] = state["discriminator"] if keep_discriminator else None
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / "latest.pt", kept)
    if (run_dir / "logs").is_dir():
        shutil.rmtree(out_dir / "logs", ignore_errors=True)
        thin_event_files(run_dir / "logs", out_dir / "logs", image_epochs)
    if (run_dir / "config.yaml").is_file():
        shutil.copy2(run_dir / "config.yaml", out_dir / "config.yaml")
    return out_dir / "latest.pt"


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
