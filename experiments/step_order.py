"""The Trainer's GAN step against the original Pix2PixHD's step order, timed side by side.

    python experiments/step_order.py --configs quick pretrained --batches 1 4 --repeats 21

The original (NVIDIA/pix2pixHD, `Pix2PixHDModel.forward` and `train.py`) runs D three times,
(phase, fake.detach()), (phase, real), (phase, fake), all with D's weights from before its
update; G's loss comes from the last two (the real features detached), its backward also
fills D's gradients (cleared before D's backward), then G steps and D steps.
`Trainer.train_step` runs D on the real and the detached fake pair in one pass, updates D, then
scores the fake with the updated D, frozen, against the real features of the first pass.

Both steps run in one process on the same batch, in float32 on the CPU, from the same initial
weights, alternating one step each, so that a machine shared with other work slows both alike.
Prints one Markdown table: median seconds per step and the ratio ours / original.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch

from pix2pixhd.config import Config, apply_overrides, load_config
from pix2pixhd.losses import discriminator_loss, feature_matching_loss, gan_loss, l1_loss
from pix2pixhd.train import Trainer


def original_order_step(trainer: Trainer, batch: dict[str, torch.Tensor]) -> None:
    """One step in the original's order, with the Trainer's networks, optimisers and losses."""
    phase, target = batch["input"], batch["target"]
    model, loss = trainer.config.model, trainer.config.loss
    G, D = trainer.generator, trainer.discriminator
    fake = G(phase)
    pred_fake_detached = D(torch.cat([phase, fake.detach()], 1))
    pred_real = D(torch.cat([phase, target], 1))
    pred_fake = D(torch.cat([phase, fake], 1))
    loss_D, _, _ = discriminator_loss(pred_real, pred_fake_detached, loss.gan_mode)
    loss_G = gan_loss(pred_fake, True, loss.gan_mode) + loss.lambda_feat * feature_matching_loss(
        pred_real, pred_fake, n_layers_D=model.n_layers_D, num_D=model.num_D)
    if loss.lambda_l1 > 0:
        loss_G = loss_G + loss.lambda_l1 * l1_loss(fake, target, loss.l1_blur_sigma)
    trainer.optimizer_G.zero_grad()
    loss_G.backward()
    trainer.optimizer_G.step()
    trainer.optimizer_D.zero_grad()
    loss_D.backward()
    trainer.optimizer_D.step()


def cpu_trainer(config: Config, folder: str) -> Trainer:
    config = apply_overrides(config, [
        f"train.checkpoints_dir={folder}", "train.name=step_order", "train.device=cpu",
        "train.amp=none", "train.channels_last=false", "train.compile=false",
        "loss.l1_units=model"])  # both orders compare the normalised stains; there is no dataset
    torch.manual_seed(0)
    return Trainer(config, loaders=([], []))


def time_side_by_side(config: Config, batch_size: int, size: int, warmup: int,
                      repeats: int) -> tuple[float, float]:
    """Median seconds per step of (ours, the original's order), alternating step by step."""
    generator = torch.Generator().manual_seed(0)
    channels = len(config.data.target_channels)
    batch = {"input": torch.randn(batch_size, 1, size, size, generator=generator),
             "target": torch.rand(batch_size, channels, size, size, generator=generator) * 2 - 1}
    with tempfile.TemporaryDirectory() as folder:
        ours, original = cpu_trainer(config, folder), cpu_trainer(config, folder)
        steps = {"ours": lambda: ours.train_step(batch),
                 "original": lambda: original_order_step(original, batch)}
        times: dict[str, list[float]] = {name: [] for name in steps}
        for repeat in range(warmup + repeats):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                if repeat >= warmup:
                    times[name].append(time.perf_counter() - start)
    return statistics.median(times["ours"]), statistics.median(times["original"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["quick", "pretrained"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--size", type=int, default=128, help="crop size, pixels (the presets')")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.size} x {args.size} "
          f"crops, medians of {args.repeats} steps after {args.warmup}\n")
    print("| networks | batch | ours (s) | original order (s) | ours / original |")
    print("|---|---|---|---|---|")
    for name in args.configs:
        for batch_size in args.batches:
            ours, original = time_side_by_side(load_config(name), batch_size, args.size,
                                               args.warmup, args.repeats)
            print(f"| {name} | {batch_size} | {ours:.4f} | {original:.4f} | "
                  f"{ours / original:.3f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
