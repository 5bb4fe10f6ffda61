"""Benchmark: how fast a training step, an inference and MC-dropout sampling are, as JSON.

    python -m pix2pixhd bench --config quick --batch 4 --size 256

Every variant runs in the same process on the same random batch, so ratios are side by side:

    step              our step: D on (real, fake.detach()), then G through the updated D,
                      each in one D pass over real and fake together
    step_original     the original code's schedule: D on fake.detach(), on real and on fake
                      (three passes, one set of D weights), G's backward also filling D's
                      gradients
    step_bf16, step_compiled, step_channels_last   on CUDA only

Times are medians over `repeats` steps after `warmup` steps. They depend on the machine, so
they are reported (as in the README), never asserted in tests.
"""

from __future__ import annotations

import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from pix2pixhd.config import Config, apply_overrides
from pix2pixhd.losses import discriminator_loss, feature_matching_loss, gan_loss
from pix2pixhd.train import Trainer


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(work: Callable[[], Any], device: torch.device, warmup: int,
                   repeats: int) -> float:
    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeats):
        _synchronise(device)
        start = time.perf_counter()
        work()
        _synchronise(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def original_schedule_step(trainer: Trainer, batch: dict[str, torch.Tensor]) -> None:
    """One step organised as the original Pix2PixHD: three D passes, full backward for loss_G."""
    phase, target = batch["input"].to(trainer.device), batch["target"].to(trainer.device)
    model, loss = trainer.config.model, trainer.config.loss
    fake = trainer.generator(phase)
    pred_fake_detached = trainer.discriminator(torch.cat([phase, fake.detach()], 1))
    pred_real = trainer.discriminator(torch.cat([phase, target], 1))
    pred_fake = trainer.discriminator(torch.cat([phase, fake], 1))
    loss_D, _, _ = discriminator_loss(pred_real, pred_fake_detached, loss.gan_mode)
    loss_G = gan_loss(pred_fake, True, loss.gan_mode) + loss.lambda_feat * feature_matching_loss(
        pred_real, pred_fake, n_layers_D=model.n_layers_D, num_D=model.num_D)
    trainer.optimizer_G.zero_grad()
    loss_G.backward()
    trainer.optimizer_G.step()
    trainer.optimizer_D.zero_grad()
    loss_D.backward()
    trainer.optimizer_D.step()


def _trainer(config: Config, overrides: list[str], **options: Any) -> Trainer:
    folder = tempfile.mkdtemp(prefix="pix2pixhd-bench-")
    config = apply_overrides(config, [f"train.checkpoints_dir={folder}", "train.name=bench",
                                      "train.compile=false", *overrides])
    return Trainer(config, loaders=([], []), **options)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run_benchmark(
    config: Config, *, batch: int = 4, size: int = 256, warmup: int = 3, repeats: int = 10,
    mc_samples: int = 16,
) -> dict[str, Any]:
    """Median step and inference times of the variants above, with speedups, as a dict."""
    torch.manual_seed(0)
    base = _trainer(config, [])
    device = base.device
    channels = len(config.data.target_channels)
    data = {"input": torch.randn(batch, 1, size, size),
            "target": torch.rand(batch, channels, size, size) * 2 - 1}
    on_cuda = device.type == "cuda"
    cpu_only = ["train.amp=none", "train.channels_last=false"]
    variants: dict[str, Callable[[], Any]] = {}
    if config.model.kind == "gan":
        ours = _trainer(config, cpu_only)
        original = _trainer(config, cpu_only)
        variants |= {"step": lambda: ours.train_step(data),
                     "step_original": lambda: original_schedule_step(original, data)}
    else:
        regression = _trainer(config, cpu_only)
        variants["step"] = lambda: regression.train_step(data)
    if on_cuda:
        fast = _trainer(config, ["train.amp=auto", "train.channels_last=true"])
        bf16 = _trainer(config, ["train.amp=bf16", "train.channels_last=false"])
        variants |= {"step_bf16": lambda: bf16.train_step(data),
                     "step_bf16_channels_last": lambda: fast.train_step(data)}
        compiled = _trainer(config, ["train.amp=auto", "train.channels_last=true"])
        compiled.G, compiled.D = torch.compile(compiled.G), (
            torch.compile(compiled.D) if compiled.D is not None else None)
        variants["step_bf16_channels_last_compiled"] = lambda: compiled.train_step(data)

    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if on_cuda else platform.processor()
        or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "batch": batch, "size": size, "warmup": warmup, "repeats": repeats,
        "model": {k: getattr(config.model, k) for k in (
            "kind", "netG", "ngf", "n_downsample_global", "n_blocks_global", "ndf", "num_D",
            "use_dropout")},
        "seconds_per_step": {},
    }
    for name, work in variants.items():
        results["seconds_per_step"][name] = median_seconds(work, device, warmup, repeats)
    steps = results["seconds_per_step"]
    results["images_per_s"] = {name: batch / seconds for name, seconds in steps.items()}
    if "step_original" in steps:
        results["speedup_vs_original_schedule"] = {
            name: steps["step_original"] / seconds for name, seconds in steps.items()}
    results["inference_seconds_per_image"] = _inference_seconds(base, size, warmup, repeats)
    if config.model.use_dropout:
        results |= _mc_benchmark(base, size, mc_samples, warmup, repeats)
    results["peak_memory_mb"] = _peak_memory_mb(device)
    return results


def _inference_seconds(trainer: Trainer, size: int, warmup: int, repeats: int) -> float:
    generator = trainer.generator.eval()
    phase = torch.randn(1, 1, size, size, device=trainer.device)
    with torch.no_grad():
        return median_seconds(lambda: generator(phase), trainer.device, warmup, repeats)


def _mc_benchmark(trainer: Trainer, size: int, n: int, warmup: int, repeats: int) -> dict:
    """n MC-dropout samples in batches of several sizes against n sequential passes."""
    from pix2pixhd.sampling import mc_dropout_samples, mc_dropout_samples_sequential

    phase = torch.randn(1, 1, size, size, device=trainer.device)
    generator = trainer.generator
    repeats, warmup = max(3, repeats // 3), 1
    sequential = median_seconds(
        lambda: mc_dropout_samples_sequential(generator, phase, n, progress=False),
        trainer.device, warmup, repeats)
    batched = {
        chunk: median_seconds(
            lambda chunk=chunk: mc_dropout_samples(generator, phase, n, batch_size=chunk,
                                                   progress=False),
            trainer.device, warmup, repeats)
        for chunk in sorted({1, 4, n})
    }
    return {"mc_samples": n, "mc_sequential_seconds": sequential,
            "mc_batched_seconds": {str(chunk): seconds for chunk, seconds in batched.items()},
            "mc_batched_speedup": sequential / batched[n]}
