"""Benchmark: how fast a training step, an inference and MC-dropout sampling are, as JSON.

    python -m pix2pixhd bench --config quick --batch 4 --size 256

Every variant runs in the same process on the same random batch, so ratios are side by side:

    step                                   `Trainer.train_step` in float32
    step_bf16, step_bf16_channels_last,    on CUDA only: mixed precision, channels_last and
    step_bf16_channels_last_compiled       torch.compile (`train.amp`, `train.channels_last`,
                                           `train.compile`)

then one prediction, and MC-dropout samples one pass each against batches of them.
`estimate_run_seconds(trainer)` times a trainer's own first steps and says how long its whole
run will take (the notebook prints it before training). Times are
medians over `repeats` steps after `warmup` steps. They depend on the machine, so they are
reported, never asserted in tests. (The step against the original Pix2PixHD's step order:
`experiments/step_order.py`.)
"""

from __future__ import annotations

import copy
import itertools
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from pix2pixhd.config import Config, apply_overrides
from pix2pixhd.memory import budget_bytes, check_budget, training_step_bytes
from pix2pixhd.models import training_activations
from pix2pixhd.normalisation import DatasetNormaliser
from pix2pixhd.sampling import dropout_modules, mc_dropout_samples
from pix2pixhd.train import Trainer, resolve_device


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


def _trainer(config: Config, folder: str, name: str, overrides: list[str],
             **options: Any) -> Trainer:
    """A trainer whose run folder is FOLDER/NAME, inside the benchmark's temporary folder."""
    config = apply_overrides(config, [f"train.checkpoints_dir={folder}", f"train.name={name}",
                                      "train.compile=false", *overrides])
    options.setdefault("normaliser", _stand_in_normaliser(config))
    return Trainer(config, loaders=([], []), **options)


def check_benchmark_memory(config: Config, *, batch: int, size: int) -> None:
    """Refuse a --batch and --size whose training step would exceed the memory budget
    (`memory.py`), before any tensor is made: on the CPU its activations (`sizes.py`) and the
    batch, on a GPU the batch, which is made in host memory first."""
    channels = len(config.data.target_channels)
    elements, _ = training_activations(config, size)
    if resolve_device(config.train.device).type != "cpu":
        elements = 0.0  # the activations are the GPU's, whose own limit CUDA names

    def estimate(count: int) -> float:
        return training_step_bytes(batch=count, elements_per_crop=elements, crop_size=size,
                                   channels=channels)

    fitting = int(budget_bytes() // estimate(1))
    fix = f"use --batch {fitting} or fewer" if fitting >= 1 else "use a smaller --size"
    check_budget(f"bench --batch {batch} --size {size}", estimate(batch), fix)


def _stand_in_normaliser(config: Config) -> DatasetNormaliser:
    """Made-up statistics with the config's stain map: the timed step needs a normaliser when
    its L1 term is in stain units, and the numbers do not change what it costs."""
    data = config.data
    stats = {channel: {"median": 0.0, "iqr": 1.0, "p_low": 0.0, "p_high": 2000.0,
                       "p_top": 16000.0}
             for channel in [data.input_channel, *data.target_channels]}
    return DatasetNormaliser(data.input_channel, list(data.target_channels), stats,
                             stain_map=data.stain_map)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run_benchmark(
    config: Config, *, batch: int = 4, size: int = 256, warmup: int = 3, repeats: int = 10,
    mc_samples: int = 16,
) -> dict[str, Any]:
    """Median seconds of the step variants above, of one prediction and of MC sampling.

    The sizes are checked against the memory budget first; the trainers' run folders live in
    one temporary folder, removed when the benchmark ends, however it ends (Ctrl-C too).
    """
    check_benchmark_memory(config, batch=batch, size=size)
    with tempfile.TemporaryDirectory(prefix="pix2pixhd-bench-") as folder:
        return _run_benchmark(config, folder, batch=batch, size=size, warmup=warmup,
                              repeats=repeats, mc_samples=mc_samples)


def _run_benchmark(config: Config, folder: str, *, batch: int, size: int, warmup: int,
                   repeats: int, mc_samples: int) -> dict[str, Any]:
    torch.manual_seed(0)
    base = _trainer(config, folder, "base", [])
    device = base.device
    channels = len(config.data.target_channels)
    data = {"input": torch.randn(batch, 1, size, size),
            "target": torch.rand(batch, channels, size, size) * 2 - 1}
    on_cuda = device.type == "cuda"
    cpu_only = ["train.amp=none", "train.channels_last=false"]
    plain = _trainer(config, folder, "step", cpu_only)
    variants: dict[str, Callable[[], Any]] = {"step": lambda: plain.train_step(data)}
    if on_cuda:
        fast = _trainer(config, folder, "fast", ["train.amp=auto", "train.channels_last=true"])
        bf16 = _trainer(config, folder, "bf16", ["train.amp=bf16", "train.channels_last=false"])
        compiled = _trainer(config, folder, "compiled", [
            "train.amp=auto", "train.channels_last=true", "train.compile=true"])
        variants |= {"step_bf16": lambda: bf16.train_step(data),
                     "step_bf16_channels_last": lambda: fast.train_step(data),
                     "step_bf16_channels_last_compiled": lambda: compiled.train_step(data)}

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
    results["inference_seconds_per_image"] = _inference_seconds(base, size, warmup, repeats)
    if dropout_modules(base.generator):  # VisCy's network has none, whatever use_dropout says
        results |= _mc_benchmark(base, size, mc_samples, warmup, repeats)
    results["peak_memory_mb"] = _peak_memory_mb(device)
    return results


def _inference_seconds(trainer: Trainer, size: int, warmup: int, repeats: int) -> float:
    generator = trainer.generator.eval()
    phase = torch.randn(1, 1, size, size, device=trainer.device)
    with torch.no_grad():
        return median_seconds(lambda: generator(phase), trainer.device, warmup, repeats)


def _mc_benchmark(trainer: Trainer, size: int, n: int, warmup: int, repeats: int) -> dict:
    """n MC-dropout samples in batches of several sizes; batches of 1 are n sequential passes."""
    phase = torch.randn(1, 1, size, size, device=trainer.device)
    generator = trainer.generator
    repeats, warmup = max(3, repeats // 3), 1
    batched = {
        chunk: median_seconds(
            lambda chunk=chunk: mc_dropout_samples(generator, phase, n, batch_size=chunk,
                                                   progress=False),
            trainer.device, warmup, repeats)
        for chunk in sorted({1, 4, n})
    }
    sequential = batched[1]
    return {"mc_samples": n, "mc_sequential_seconds": sequential,
            "mc_batched_seconds": {str(chunk): seconds for chunk, seconds in batched.items()},
            "mc_batched_speedup": sequential / batched[n]}


def estimate_run_seconds(trainer: Trainer, n_steps: int = 3) -> dict[str, float]:
    """How long `trainer.fit()` will take here, from timing its own first steps.

    Runs one warm-up step and `n_steps` timed steps on the first batches of the trainer's
    loader, and times validation on one batch, then puts back the weights, optimisers, step
    counter and random state, so the run that follows is the run it would have been. Returns
    seconds per step, steps per epoch, epochs left and the estimate for all of them.
    """
    steps_per_epoch = len(trainer.train_loader)
    epochs = max(trainer.config.epochs - trainer.epoch, 0)
    if epochs == 0:
        return {"seconds_per_step": 0.0, "steps_per_epoch": steps_per_epoch,
                "validation_seconds": 0.0, "epochs": 0, "total_seconds": 0.0}
    snapshot = copy.deepcopy({
        "generator": trainer.generator.state_dict(),
        "discriminator": (trainer.discriminator.state_dict()
                          if trainer.discriminator is not None else None),
        "optimizer_G": trainer.optimizer_G.state_dict(),
        "optimizer_D": (trainer.optimizer_D.state_dict()
                        if trainer.optimizer_D is not None else None),
        "scaler": trainer.scaler.state_dict(), "step": trainer.step,
        "rng": torch.get_rng_state()})
    batches = itertools.cycle(trainer.train_loader)  # a loader of one batch is enough
    trainer.train_step(next(batches))  # warm-up: first-call allocations, cuDNN's choice
    seconds = []
    for _, batch in zip(range(n_steps), batches, strict=False):
        _synchronise(trainer.device)
        start = time.perf_counter()
        trainer.train_step(batch)
        _synchronise(trainer.device)
        seconds.append(time.perf_counter() - start)
    validation = _validation_seconds(trainer)
    trainer.generator.load_state_dict(snapshot["generator"])
    trainer.optimizer_G.load_state_dict(snapshot["optimizer_G"])
    if trainer.discriminator is not None:
        trainer.discriminator.load_state_dict(snapshot["discriminator"])
        trainer.optimizer_D.load_state_dict(snapshot["optimizer_D"])
    trainer.scaler.load_state_dict(snapshot["scaler"])
    trainer.step = snapshot["step"]
    torch.set_rng_state(snapshot["rng"])
    per_step = statistics.median(seconds)
    return {"seconds_per_step": per_step, "steps_per_epoch": steps_per_epoch,
            "validation_seconds": validation, "epochs": epochs,
            "total_seconds": epochs * (per_step * steps_per_epoch + validation)}


def _validation_seconds(trainer: Trainer) -> float:
    """One epoch's validation, from the time of its first batch through `Trainer.validate`."""
    batches = len(trainer.val_loader)
    if not batches:
        return 0.0
    _synchronise(trainer.device)
    start = time.perf_counter()
    trainer.validate(n_images_logged=0, max_batches=1)
    _synchronise(trainer.device)
    return (time.perf_counter() - start) * batches
