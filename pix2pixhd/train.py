"""Training: one Trainer for the Pix2PixHD GAN and for the regression baseline.

    trainer = Trainer(load_config("quick"))
    trainer.fit()                      # checkpoints/<name>/latest.pt and logs/ for TensorBoard

The GAN step (Wang et al. 2018), in `train_step`: the generator G turns phase into a stain;
the multi-scale discriminator D sees (phase, real stain) and (phase, fake stain).

    fake = G(phase)
    discriminator_step   D on the real pair and on (phase, fake.detach()); 0.5 * (LSGAN on
                         real + LSGAN on fake); update D. Keeps D's features of the real pair,
                         detached: G's feature-matching target.
    generator_step       D frozen (requires_grad_(False)); D on (phase, fake); LSGAN towards
                         "real" + lambda_feat * feature matching (+ lambda_l1 * L1 of the
                         stains blurred by l1_blur_sigma); update G.

D runs three times per step, as in the original (real, fake for D, fake for G). Updating D
before G's loss is the order of pix2pix and CycleGAN; the original computes G's loss with D's
weights from before D's update (`experiments/step_order.py` times the two). Both steps take
their losses from `models.Objective`; what each kind's generator minimises and logs is its
entry in `models.KINDS`: the regression baseline is the same generator with L1 alone, `viscy`
VisCy's network and loss; neither has a D. The TensorBoard tag
names are in `logs` (G_GAN, D_REAL, VAL_PSNR, ...); `epoch/<tag>` is the epoch's mean of each
loss and D score, logged at its last step.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from pix2pixhd import logs
from pix2pixhd.checkpoint import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)
from pix2pixhd.checks import check_training_data
from pix2pixhd.config import (
    Config,
    ConfigError,
    TrainConfig,
    from_dict,
    save_config,
    to_dict,
    validate,
)
from pix2pixhd.dataset import make_loaders, set_loader_epoch
from pix2pixhd.files import folder_lock, refuse_link
from pix2pixhd.layout import plain_name
from pix2pixhd.losses import Predictions, VGGLoss
from pix2pixhd.metrics import psnr, ssim
from pix2pixhd.models import (
    Objective,
    StainUnits,
    check_weights_fit,
    make_discriminator,
    make_generator,
    model_kind,
    shape_differences,
)
from pix2pixhd.normalisation import STAIN_DISPLAY_PERCENTILES, Normaliser
from pix2pixhd.runs import clear_run_folder, foreign_run_files, run_provenance

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stops before anything is saved."""


def learning_rate(epoch: int, train: TrainConfig) -> float:
    """Constant for `niter` epochs, then linearly down over `niter_decay` (epoch counts from 0).

    As the original: the first decayed epoch still uses the full rate, the last one lr/niter_decay.
    """
    if epoch < train.niter or train.niter_decay == 0:
        return train.lr
    return train.lr * (train.niter + train.niter_decay - epoch) / train.niter_decay


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"device {name!r} is not a device name ({error}); use auto, cpu, "
                          "cuda or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is visible; use "
                          "train.device=cpu (or auto, or --device cpu)")
    return device


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """Mixed precision only on CUDA: bf16 where the card has it (no loss scaling needed)."""
    if device.type != "cuda" or amp == "none":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


@dataclass(frozen=True)
class Distributed:
    """Where this process sits in a `torchrun` job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Distributed:
        """The variables `torchrun` sets, checked: a variable set by hand alone, or a job whose
        other processes never start, would otherwise fail late or wait without a word."""
        environ = os.environ if environ is None else environ
        given = {name: environ[name] for name in TORCHRUN_VARIABLES if name in environ}
        numbers = {name: _whole_number(name, given[name])
                   for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if name in given}
        world_size = numbers.get("WORLD_SIZE", 1)
        if world_size < 1:
            raise ConfigError(f"WORLD_SIZE={world_size}: a job has at least one process; unset "
                              "it to train in one process")
        if world_size == 1:
            stray = [f"{name}={given[name]}" for name in ("RANK", "LOCAL_RANK")
                     if numbers.get(name)]
            if stray:
                raise ConfigError(
                    f"{', '.join(stray)} set without a WORLD_SIZE above 1; launch with "
                    "`torchrun --nproc_per_node N`, or unset it to train in one process")
            return cls()
        missing = [name for name in TORCHRUN_VARIABLES if name not in given]
        if missing:
            raise ConfigError(
                f"WORLD_SIZE={world_size} is set but {', '.join(missing)} not; launch with "
                "`torchrun --nproc_per_node N`, which sets them all, or unset WORLD_SIZE to "
                "train in one process")
        for name in ("RANK", "LOCAL_RANK"):
            if not 0 <= numbers[name] < world_size:
                raise ConfigError(f"{name}={numbers[name]} is not one of the "
                                  f"WORLD_SIZE={world_size} ranks 0 to {world_size - 1}")
        log.info("rank %d of %d waits for all %d processes to join at %.80s:%.20s (torchrun "
                 "starts them together; a process started by hand waits for the others)",
                 numbers["RANK"], world_size, world_size, given["MASTER_ADDR"],
                 given["MASTER_PORT"])
        return cls(numbers["RANK"], world_size, numbers["LOCAL_RANK"])


TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""What `torchrun` sets for each process of a job."""


def _whole_number(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text[:40]!r} is not a whole number; "
                          "torchrun sets it: unset it, or launch with torchrun") from None


@contextmanager
def frozen(module: nn.Module | None) -> Iterator[None]:
    """`module.requires_grad_(False)` for the block (nothing for None), then trainable again."""
    if module is None:
        yield
        return
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


def mean_score(predictions: Predictions) -> Tensor:
    """D's mean patch score over all scales: near 1 means "looks real" under LSGAN."""
    return torch.stack([scale[-1].float().mean() for scale in predictions]).mean()


class Trainer:
    """Trains a generator (and, for the GAN, a discriminator) from one Config.

    `fit()` runs the epochs: a `train_step` per batch, `validate` per epoch, a checkpoint per
    epoch. Loaders and normaliser are made from `config.data` unless given (the benchmark passes
    empty loaders and calls `train_step` on its own batches; without a normaliser, validation
    scores the normalised images). `generator` and `discriminator` are the networks (what a
    checkpoint holds); `ddp_generator` and `ddp_discriminator` are the same networks under
    DistributedDataParallel in a `torchrun` job (the networks themselves when run alone), for
    the passes whose gradients the processes must share.
    """

    def __init__(
        self,
        config: Config,
        *,
        resume: bool = False,
        overwrite: bool = False,
        distributed: Distributed | None = None,
        loaders: tuple[Any, Any] | None = None,
        normaliser: Normaliser | None = None,
    ) -> None:
        self.config = validate(config)  # a config changed by assignment is checked here
        self.distributed = distributed or Distributed()
        self.device = resolve_device(config.train.device, self.distributed.local_rank)
        self.run_dir = Path(config.train.checkpoints_dir) / plain_name(config.train.name, "run")
        self.kind = model_kind(config.model.kind)
        starting_over = self._prepare_run_dir(resume, overwrite)

        torch.manual_seed(config.train.seed)  # identical initial weights on every rank
        if loaders is None:
            check_training_data(config.data)  # every pixel, before any work can be lost
            loaders = make_loaders(config, rank=self.distributed.rank,
                                   world_size=self.distributed.world_size)
            normaliser = loaders[0].dataset.normaliser
        self.train_loader, self.val_loader = loaders
        self.normaliser = normaliser
        self._check_stain_units()

        self.generator = make_generator(config).to(self.device)
        if config.train.init_generator and not resume:
            self.generator.load_state_dict(starting_weights(config, self.device))
        discriminator = make_discriminator(config)
        self.discriminator = discriminator.to(self.device) if discriminator is not None else None
        if config.train.init_discriminator and self.discriminator is not None and not resume:
            self.discriminator.load_state_dict(starting_discriminator(config, self.device))
        betas = (config.train.beta1, config.train.beta2)
        self.optimizer_G = torch.optim.Adam(self.generator.parameters(), config.train.lr, betas)
        self.optimizer_D = (
            torch.optim.Adam(self.discriminator.parameters(),
                             config.train.lr * config.train.lr_D_ratio, betas)
            if self.discriminator is not None else None
        )
        self.amp_dtype = autocast_dtype(self.device, config.train.amp)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_dtype == torch.float16 and self.device.type == "cuda")
        vgg = (VGGLoss(config.loss.vgg_weights).to(self.device)
               if config.loss.lambda_vgg > 0 else None)
        self.objective = Objective(self.config, self.stain_units(), vgg)
        self.channels_last = config.train.channels_last and self.device.type == "cuda"
        self.epoch = 0  # epochs completed
        self.step = 0   # optimiser steps taken
        self.saved_epoch: int | None = None  # what latest.pt holds from this session
        if starting_over:  # only now: data and config are checked, the networks built
            clear_run_folder(self.run_dir)
        if resume:
            self.load_state(load_checkpoint(self.run_dir / "latest.pt", self.device))
        self.ddp_generator = self._prepare(self.generator)
        self.ddp_discriminator = self._prepare(self.discriminator)
        self.writer = None

    # --- set-up ---------------------------------------------------------------------------

    def _prepare_run_dir(self, resume: bool, overwrite: bool) -> bool:
        """Refuse what cannot go on; True when an earlier run is to be cleared (--overwrite),
        which happens only once everything else has been checked."""
        latest = self.run_dir / "latest.pt"
        refuse_link(self.run_dir / "logs", self.run_dir)
        if resume and not latest.is_file():
            raise CheckpointError(f"nothing to resume: {latest} does not exist; drop --resume "
                                  "to start a new run")
        if not resume and latest.is_file():
            if not overwrite:
                raise CheckpointError(
                    f"{latest} exists; pass --resume to continue that run, --overwrite to "
                    "start it again, or choose another --name")
            foreign_run_files(self.run_dir)
            return self.distributed.is_main
        return False

    def _prepare(self, module: nn.Module | None) -> nn.Module | None:
        """channels_last and torch.compile in place (state dict keys unchanged), then the
        module under DDP when several processes train."""
        if module is None:
            return None
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        if self.config.train.compile:
            module.compile()
        if self.distributed.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(module, device_ids=device_ids)
        return module

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=True)
        if self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    # --- one training step ------------------------------------------------------------------

    def discriminate(
        self, phase: Tensor, target: Tensor, fake: Tensor
    ) -> tuple[Predictions, Predictions]:
        """D's features on (phase, real stain) and on (phase, fake stain), per scale and layer.

        Instance norm treats each sample alone, so both pairs go through D in one pass of
        twice the batch (faster, and one forward per backward as DDP wants); batch norm
        would mix real and fake statistics, so it gets two passes.
        """
        real_pair = torch.cat([phase, target], dim=1)
        fake_pair = torch.cat([phase, fake], dim=1)
        if self.config.model.norm == "batch":
            return self.ddp_discriminator(real_pair), self.ddp_discriminator(fake_pair)
        both = self.ddp_discriminator(torch.cat([real_pair, fake_pair], dim=0))
        halves = [[feature.chunk(2, dim=0) for feature in scale] for scale in both]
        real = [[pair[0] for pair in scale] for scale in halves]
        fake = [[pair[1] for pair in scale] for scale in halves]
        return real, fake

    def train_step(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """One update of D, then of G (of G alone for kinds without D).

        Returns the step's loss terms and D's mean scores by tag, as detached 0-d tensors: plain
        numbers that stay on the device, since reading one (`float`) waits for the GPU; `fit`
        reads them only on logging steps.
        """
        phase, target = self._to_device(batch["input"]), self._to_device(batch["target"])
        with self._autocast():
            fake = self.ddp_generator(phase)
        numbers, real_features = {}, None
        if self.discriminator is not None:
            numbers, real_features = self.discriminator_step(phase, target, fake)
        numbers |= self.generator_step(phase, target, fake, real_features)
        self.scaler.update()
        self.step += 1
        return numbers

    def discriminator_step(
        self, phase: Tensor, target: Tensor, fake: Tensor
    ) -> tuple[dict[str, Tensor], Predictions]:
        """Update D: real pairs towards "real", fake pairs towards "fake".

        Returns D's loss terms and mean scores, and D's features of the real pair, detached:
        G's feature-matching target, which saves G's step a second pass of the real pair.
        """
        with self._autocast():
            # fake.detach(): D's loss must not send gradients into G
            real_features, fake_features = self.discriminate(phase, target, fake.detach())
            loss, loss_real, loss_fake = self.objective.discriminator_loss(real_features,
                                                                           fake_features)
        self.optimizer_D.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer_D)
        numbers = {logs.D_REAL: loss_real.detach(), logs.D_FAKE: loss_fake.detach(),
                   logs.D_OUT_TRAIN_REAL: mean_score(real_features).detach(),
                   logs.D_OUT_TRAIN_FAKE: mean_score(fake_features).detach()}
        return numbers, [[feature.detach() for feature in scale] for scale in real_features]

    def generator_step(
        self, phase: Tensor, target: Tensor, fake: Tensor,
        real_features: Predictions | None = None,
    ) -> dict[str, Tensor]:
        """Update G with its kind's loss terms: for the GAN, fool the updated D (frozen here)
        and match `real_features`; returns the terms, detached, by tag."""
        fake_features = None
        # D frozen: gradients pass through it to G, none stay in it
        with frozen(self.discriminator):
            with self._autocast():
                if self.discriminator is not None:
                    # not through DDP: it would wait for D's gradients, and there are none
                    fake_features = self.discriminator(torch.cat([phase, fake], dim=1))
                terms = self.objective.generator_terms(fake, target, real_features,
                                                       fake_features)
                loss = sum(terms.values())
            self.optimizer_G.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer_G)
        return {tag: term.detach() for tag, term in terms.items()}

    def _check_stain_units(self) -> None:
        """A GAN whose L1 term is in stain units cannot train without the stain's map."""
        loss = self.config.loss
        uses_it = "loss.l1_units" not in self.kind.unused_options
        if (uses_it and loss.lambda_l1 > 0 and loss.l1_units == "stain"
                and self.stain_units() is None):
            raise ConfigError("loss.l1_units=stain needs the stain's normalisation: give the "
                              "Trainer a DatasetNormaliser, or set loss.l1_units=model")

    def stain_units(self) -> StainUnits | None:
        """What loss.l1_units=stain compares: the normaliser's linear units, when it has them."""
        return getattr(self.normaliser, "in_linear_units", None)

    # --- epochs -----------------------------------------------------------------------------

    def fit(self, epochs: int | None = None) -> dict[str, float]:
        """Train until `epochs` are completed (default: niter + niter_decay); returns val metrics.

        Ctrl-C leaves latest.pt as the last finished epoch wrote it (mid-epoch weights would
        make the resume inexact), says which epoch --resume repeats, and re-raises.
        """
        total = epochs if epochs is not None else self.config.epochs
        if self.distributed.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.run_dir / "config.yaml")
            self.writer = SummaryWriter(self.run_dir / "logs", purge_step=self.step or None)
        metrics: dict[str, float] = {}
        try:
            while self.epoch < total:
                means = self.train_epoch(total)
                metrics = self.validate()
                self.epoch += 1
                self._log_scalars(means | metrics)
                log.info("epoch %d/%d: %s", self.epoch, total,
                         ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
                self.save()
        except KeyboardInterrupt:
            log.warning("interrupted: %s", self._resume_note())
            raise
        finally:
            if self.writer is not None:
                self.writer.close()
        return metrics

    def train_epoch(self, total_epochs: int | None = None) -> dict[str, float]:
        """One pass over the training loader; returns the mean of each logged term, `epoch/...`.
        total_epochs only labels the progress bar."""
        total_epochs = total_epochs or self.config.epochs
        lr = learning_rate(self.epoch, self.config.train)
        for group in self.optimizer_G.param_groups:
            group["lr"] = lr
        for group in self.optimizer_D.param_groups if self.optimizer_D is not None else []:
            group["lr"] = lr * self.config.train.lr_D_ratio
        set_loader_epoch(self.train_loader, self.epoch)  # new crops and order every epoch
        self.generator.train()
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{total_epochs}",
                   disable=not self.distributed.is_main, leave=False, dynamic_ncols=True)
        images, started, checked = 0, time.perf_counter(), self.step
        sums: dict[str, Tensor] = {}
        for batch in bar:
            numbers = self.train_step(batch)
            for name, value in numbers.items():
                sums[name] = sums.get(name, 0.0) + value  # added on the device: no waiting
            images += len(batch["input"]) * self.distributed.world_size
            if self.step % self.config.train.log_every == 0:
                self.finite_totals(sums, checked)
                checked = self.step
                values = _read(numbers)
                bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in values.items()
                                 if k.startswith("loss/")})
                values[logs.THROUGHPUT] = images / (time.perf_counter() - started)
                values[logs.LEARNING_RATE] = lr
                self._log_scalars(values)
                images, started = 0, time.perf_counter()
        totals = self.finite_totals(sums, checked)
        n_steps = max(len(bar), 1)
        # the epoch's mean of every term, so even a one-epoch run on a few images has curves
        return {f"{logs.EPOCH_PREFIX}{name}": total / n_steps for name, total in totals.items()}

    def finite_totals(self, sums: dict[str, Tensor], since_step: int) -> dict[str, float]:
        """The running sums of the loss terms, read; NonFiniteLossError if one is NaN or inf.

        Reading a loss waits for the GPU, so the loop does not read every step's: it adds each
        step's terms to these sums on the device and reads them on logging steps and at the
        epoch's end. A NaN or inf in any step stays NaN or inf in the sum, so none is missed,
        and the check runs before anything is saved, at one read per `log_every` steps.
        """
        totals = _read(sums)
        bad = [name for name, total in totals.items() if not math.isfinite(total)]
        if bad:
            raise NonFiniteLossError(
                f"{', '.join(bad)} became {totals[bad[0]]} between steps {since_step + 1} and "
                f"{self.step} (epoch {self.epoch + 1}); stopped without saving, "
                f"{self.run_dir / 'latest.pt'} is the last good checkpoint. Try a lower "
                "train.lr, or train.amp=none")
        return totals

    @torch.no_grad()
    def validate(self, n_images_logged: int = 4, max_batches: int | None = None
                 ) -> dict[str, float]:
        """PSNR and SSIM of the generator (dropout off) on the validation crops, stain units;
        the first `max_batches` batches only when given (the benchmark times one)."""
        self.generator.eval()
        scores: dict[str, list[float]] = {logs.VAL_PSNR: [], logs.VAL_SSIM: []}
        if self.discriminator is not None:
            scores |= {logs.D_OUT_VAL_REAL: [], logs.D_OUT_VAL_FAKE: []}
        panels = []
        for batch in itertools.islice(self.val_loader, max_batches):
            phase, target = self._to_device(batch["input"]), self._to_device(batch["target"])
            with self._autocast():
                fake = self.ddp_generator(phase)
                if self.discriminator is not None:
                    pred_real, pred_fake = self.discriminate(phase, target, fake)
                    scores[logs.D_OUT_VAL_REAL].append(mean_score(pred_real).item())
                    scores[logs.D_OUT_VAL_FAKE].append(mean_score(pred_fake).item())
            fake, target = fake.float(), target.float()
            if self.normaliser is not None:
                real_units = self.normaliser.denormalise_target(target.cpu().numpy())
                fake_units = self.normaliser.denormalise_target(fake.cpu().numpy())
            else:
                real_units, fake_units = target.cpu().numpy(), fake.cpu().numpy()
            pairs = zip(real_units.reshape(-1, *real_units.shape[-2:]),
                        fake_units.reshape(-1, *fake_units.shape[-2:]), strict=True)
            for real_image, fake_image in pairs:
                scores[logs.VAL_PSNR].append(psnr(fake_image, real_image))
                scores[logs.VAL_SSIM].append(ssim(fake_image, real_image))
            if len(panels) < n_images_logged:
                panels.append(_display_panel(phase[0], real_units[0], fake_units[0]))
        self.generator.train()
        if panels and self.writer is not None:
            from torchvision.utils import make_grid

            grid = make_grid(torch.cat(panels), nrow=3, padding=4, pad_value=1.0)
            self.writer.add_image(logs.VAL_IMAGES, grid, self.step)
        return {name: float(np.mean(values)) for name, values in scores.items() if values}

    def _log_scalars(self, numbers: dict[str, float]) -> None:
        if self.writer is None:
            return
        for name, value in numbers.items():
            self.writer.add_scalar(name, value, self.step)
        self.writer.flush()

    # --- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": (self.discriminator.state_dict()
                              if self.discriminator is not None else None),
            "optimizer_G": self.optimizer_G.state_dict(),
            "optimizer_D": self.optimizer_D.state_dict() if self.optimizer_D is not None else None,
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "config": to_dict(self.config),
            "normaliser": self.normaliser.to_dict() if self.normaliser is not None else None,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "provenance": run_provenance(self.config),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue exactly where `state` left off: weights, optimisers, counters, RNG."""
        check_compatible(state, self.config, self.run_dir / "latest.pt",
                         self.kind.architecture_options)
        check_weights_fit(state["generator"], self.config, self.run_dir / "latest.pt")
        self.generator.load_state_dict(state["generator"])
        self.optimizer_G.load_state_dict(state["optimizer_G"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.optimizer_D.load_state_dict(state["optimizer_D"])
        self.epoch, self.step = state["epoch"], state["step"]
        if "scaler" not in state or "rng" not in state:  # checkpoints of older versions
            log.warning("%s holds no %s state: the run resumes with the same weights and "
                        "optimisers, but its random crops, dropout and loss scale start "
                        "afresh, so it will not repeat a run that never stopped",
                        self.run_dir / "latest.pt", " or ".join(
                            key for key in ("scaler", "rng") if key not in state))
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if "rng" in state:
            torch.set_rng_state(state["rng"]["torch"].cpu())
            if state["rng"]["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        log.info("resumed %s at epoch %d, step %d", self.run_dir, self.epoch, self.step)

    def save(self) -> None:
        """latest.pt every epoch, epoch_NNN.pt every `save_every` epochs and at the end."""
        if not self.distributed.is_main:
            return
        state = self.state_dict()
        save_checkpoint(self.run_dir / "latest.pt", state)
        self.saved_epoch = self.epoch
        if self.epoch % self.config.train.save_every == 0 or self.epoch == self.config.epochs:
            save_checkpoint(self.run_dir / f"epoch_{self.epoch:03d}.pt", state)

    def _resume_note(self) -> str:
        """What an interrupted fit left on disk, and what --resume will do with it."""
        saved = self.saved_epoch
        if saved is None:
            return (f"no epoch finished in this session; {self.run_dir / 'latest.pt'} is as it "
                    "was (if it exists, --resume continues from it)")
        return (f"{self.run_dir / 'latest.pt'} holds epoch {saved}, the last one finished; "
                f"--resume repeats epoch {saved + 1} from its start")


def starting_weights(config: Config, device: torch.device) -> dict[str, Tensor]:
    """The generator weights of `config.train.init_generator`, checked against `config`: the
    same architecture, and stains in the same units (the same channels and stain map)."""
    path = Path(config.train.init_generator)
    state = _starting_state(path, "train.init_generator", config, device)
    check_weights_fit(state["generator"], config, path)
    return state["generator"]


def starting_discriminator(config: Config, device: torch.device) -> dict[str, Tensor]:
    """The discriminator weights of `config.train.init_discriminator`, checked as G's are: D
    judges phase and stain together, so the stains must be the same too."""
    path = Path(config.train.init_discriminator)
    state = _starting_state(path, "train.init_discriminator", config, device)
    weights = state.get("discriminator")
    if weights is None:
        raise CheckpointError(
            f"train.init_discriminator={path} holds no discriminator: start from a GAN's "
            "training checkpoint, or an export made with --keep-discriminator")
    with torch.device("meta"):
        differences = shape_differences(weights, make_discriminator(config).state_dict())
    if differences:
        raise CheckpointError(
            f"train.init_discriminator={path}: its discriminator does not fit this config's "
            f"(model.ndf, num_D, n_layers_D and the channels must be the same): "
            f"{'; '.join(differences[:3])}")
    return weights


def _starting_state(path: Path, option: str, config: Config, device: torch.device) -> dict:
    """The checkpoint a run starts from, refused when its stains differ from `config`'s."""
    state = load_checkpoint(path, device)
    saved = from_dict(state["config"]).data
    if (saved.target_channels, saved.stain_map) != (config.data.target_channels,
                                                     config.data.stain_map):
        raise ConfigError(
            f"{option}={path} predicts {saved.target_channels} under the {saved.stain_map} "
            f"stain map, this run {config.data.target_channels} under {config.data.stain_map}; "
            f"start from a model of the same stains, or set {option}=''")
    return state


def _read(numbers: dict[str, Tensor]) -> dict[str, float]:
    """0-d tensors as floats, in one wait for the device."""
    if not numbers:
        return {}
    return dict(zip(numbers, torch.stack([value.float() for value in numbers.values()]).tolist(),
                    strict=True))


def _display_panel(phase: torch.Tensor, target: np.ndarray, fake: np.ndarray) -> torch.Tensor:
    """(3, 1, H, W) in [0, 1]: phase scaled by its own range; the real (target) and predicted
    (fake) stains (C, H, W), stain units, first channel, between the real one's
    `STAIN_DISPLAY_PERCENTILES`."""
    phase = phase[:1].float().cpu()
    phase = (phase - phase.min()) / (phase.max() - phase.min()).clamp_min(1e-8)
    low, high = np.percentile(target[:1], STAIN_DISPLAY_PERCENTILES)
    to_unit = lambda stain: torch.from_numpy(  # noqa: E731
        np.clip((stain[:1] - low) / max(high - low, 1e-8), 0, 1).astype(np.float32))
    return torch.stack([phase, to_unit(target), to_unit(fake)])


def run_training(config: Config, *, resume: bool = False, overwrite: bool = False) -> dict:
    """Train in this process, or as one rank of a `torchrun` job (process group from the env)."""
    distributed = Distributed.from_environment()
    if distributed.world_size > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(distributed.local_rank)
    try:
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: pick the fastest kernels
        run_dir = Path(config.train.checkpoints_dir) / plain_name(config.train.name, "run")
        # one writer per run folder: only rank 0 writes, so only rank 0 locks
        with folder_lock(run_dir) if distributed.is_main else nullcontext():
            trainer = Trainer(config, resume=resume, overwrite=overwrite,
                              distributed=distributed)
            return trainer.fit()
    finally:
        if distributed.world_size > 1:
            dist.destroy_process_group()
