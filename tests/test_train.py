"""The Trainer: exact resume, the loss terms, logs and checkpoints, clear failures, DDP."""

import copy
import logging
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from pix2pixhd import logs
from pix2pixhd.checkpoint import CheckpointError, load_checkpoint
from pix2pixhd.config import ConfigError, apply_overrides, load_config
from pix2pixhd.logs import read_scalars
from pix2pixhd.models import model_kind
from pix2pixhd.predict import load_predictor
from pix2pixhd.train import (
    Distributed,
    NonFiniteLossError,
    Trainer,
    _display_panel,
    learning_rate,
)


def weights(module):
    return {name: tensor.clone() for name, tensor in module.state_dict().items()}


def gradients(module):
    return {name: p.grad.clone() for name, p in module.named_parameters()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_learning_rate_follows_the_original_schedule():
    """The original lowers lr by lr/niter_decay after every epoch past niter."""
    train = load_config("quick").train
    train.niter, train.niter_decay, train.lr = 3, 4, 1.0
    lr, expected = 1.0, []
    for epoch in range(1, 8):  # the original's loop counts epochs from 1
        expected.append(lr)
        if epoch > train.niter:
            lr -= train.lr / train.niter_decay
    np.testing.assert_allclose([learning_rate(e, train) for e in range(7)], expected)


def test_resume_is_exact(tiny_config, tmp_path):
    """Weights, optimisers and random state all continue where they stopped."""
    straight = apply_overrides(tiny_config, [f"train.checkpoints_dir={tmp_path / 'a'}"])
    Trainer(straight).fit()
    split = apply_overrides(tiny_config, [f"train.checkpoints_dir={tmp_path / 'b'}"])
    Trainer(split).fit(epochs=1)
    resumed = Trainer(split, resume=True)
    assert (resumed.epoch, resumed.step) == (1, 3)
    resumed.fit()
    a = load_checkpoint(tmp_path / "a" / straight.train.name / "latest.pt")
    b = load_checkpoint(tmp_path / "b" / split.train.name / "latest.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 6)
    for part in ("generator", "discriminator"):
        assert_same_weights(a[part], b[part])


def test_a_run_can_start_from_another_models_generator(tiny_config):
    regression = apply_overrides(tiny_config, ["model.kind=regression", "train.name=start"])
    Trainer(regression).fit(epochs=1)
    start = Path(regression.train.checkpoints_dir) / "start" / "latest.pt"
    gan = Trainer(apply_overrides(tiny_config, [f"train.init_generator={start}"]))
    assert_same_weights(weights(gan.generator), load_checkpoint(start)["generator"])
    other_units = apply_overrides(tiny_config, [f"train.init_generator={start}",
                                                "data.stain_map=linear"])
    with pytest.raises(ConfigError, match=r"init_generator=.*asinh.*linear"):
        Trainer(other_units)
    other_shape = apply_overrides(tiny_config, [f"train.init_generator={start}", "model.ngf=8"])
    with pytest.raises(CheckpointError, match="does not fit"):
        Trainer(other_shape)


def test_a_gan_can_start_from_another_gans_discriminator(tiny_config, checkpoint):
    gan = Trainer(apply_overrides(tiny_config, [f"train.init_discriminator={checkpoint}"]))
    assert_same_weights(weights(gan.discriminator), load_checkpoint(checkpoint)["discriminator"])
    fresh = Trainer(apply_overrides(tiny_config, ["train.name=fresh"]))
    assert weights(fresh.discriminator).keys() == weights(gan.discriminator).keys()
    assert not all(torch.equal(a, b) for a, b in zip(
        weights(fresh.discriminator).values(), weights(gan.discriminator).values(), strict=True))
    other_shape = apply_overrides(tiny_config, [f"train.init_discriminator={checkpoint}",
                                                "model.ndf=8", "train.name=wide"])
    with pytest.raises(CheckpointError, match="does not fit"):
        Trainer(other_shape)
    other_units = apply_overrides(tiny_config, [f"train.init_discriminator={checkpoint}",
                                                "data.stain_map=linear", "train.name=linear"])
    with pytest.raises(ConfigError, match=r"init_discriminator=.*asinh.*linear"):
        Trainer(other_units)


def test_a_checkpoint_without_a_discriminator_cannot_start_one(tiny_config):
    regression = apply_overrides(tiny_config, ["model.kind=regression", "train.name=start"])
    Trainer(regression).fit(epochs=1)
    start = Path(regression.train.checkpoints_dir) / "start" / "latest.pt"
    with pytest.raises(CheckpointError, match="holds no discriminator.*--keep-discriminator"):
        Trainer(apply_overrides(tiny_config, [f"train.init_discriminator={start}"]))


def floats(numbers):
    """A step's numbers (0-d tensors, left on the device) as floats."""
    return {name: float(value) for name, value in numbers.items()}


def _record_gradients(optimizer, store):
    """Keep a copy of the gradients an optimiser is about to apply."""
    def hook(opt, args, kwargs):
        store.extend(p.grad.clone() for group in opt.param_groups for p in group["params"])
    optimizer.register_step_pre_hook(hook)


def test_step_equals_a_reference_with_separate_passes_and_explicit_detach(tiny_config):
    """The Trainer's step (one joint D pass for real and fake) against the textbook version:
    D(real) and D(fake.detach()) for D's loss, then D(real) and D(fake) for G's. A tiny lr keeps
    D's update from turning float rounding into different weights before G's loss."""
    from pix2pixhd.losses import discriminator_loss, feature_matching_loss, gan_loss, l1_loss

    # the L1 term in normalised units: these Trainers have no dataset to map stains back with
    config = apply_overrides(tiny_config, ["model.use_dropout=false", "train.lr=1e-9",
                                           "loss.l1_units=model"])
    batch = {"input": torch.randn(2, 1, 32, 32), "target": torch.rand(2, 1, 32, 32) * 2 - 1}
    trainer = Trainer(config, loaders=([], []))
    G, D = copy.deepcopy(trainer.generator), copy.deepcopy(trainer.discriminator)
    grads_D, grads_G = [], []
    _record_gradients(trainer.optimizer_D, grads_D)
    _record_gradients(trainer.optimizer_G, grads_G)
    numbers = floats(trainer.train_step(batch))

    phase, target = batch["input"], batch["target"]
    fake = G(phase)
    real_scores = D(torch.cat([phase, target], 1))
    fake_scores = D(torch.cat([phase, fake.detach()], 1))
    loss_D, loss_D_real, loss_D_fake = discriminator_loss(real_scores, fake_scores)
    reference_D = torch.autograd.grad(loss_D, list(D.parameters()))
    fake_scores = D(torch.cat([phase, fake], 1))
    loss_G_GAN = gan_loss(fake_scores, True)
    loss_G_feat = config.loss.lambda_feat * feature_matching_loss(
        real_scores, fake_scores, n_layers_D=config.model.n_layers_D, num_D=config.model.num_D)
    loss_G_L1 = config.loss.lambda_l1 * l1_loss(fake, target, config.loss.l1_blur_sigma)
    reference_G = torch.autograd.grad(loss_G_GAN + loss_G_feat + loss_G_L1, list(G.parameters()))

    expected = {"loss/D_real": loss_D_real, "loss/D_fake": loss_D_fake,
                "loss/G_GAN": loss_G_GAN, "loss/G_GAN_Feat": loss_G_feat}
    if config.loss.lambda_l1 > 0:
        expected["loss/G_L1"] = loss_G_L1
    for name, value in expected.items():
        assert numbers[name] == pytest.approx(value.item(), rel=1e-5), name
    # biases before an instance norm have a true gradient of 0: there, only rounding is left
    for ours, reference in zip(grads_D + grads_G, reference_D + reference_G, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-5)


def test_generator_loss_is_computed_through_the_updated_discriminator(tiny_config):
    """D is updated first; G's adversarial loss then scores the fake with D's new weights."""
    from pix2pixhd.losses import gan_loss

    config = apply_overrides(tiny_config, ["model.use_dropout=false", "train.lr=1e-2",
                                           "loss.l1_units=model"])
    batch = {"input": torch.randn(2, 1, 32, 32), "target": torch.rand(2, 1, 32, 32) * 2 - 1}
    trainer = Trainer(config, loaders=([], []))
    G_before, D_before = copy.deepcopy(trainer.generator), copy.deepcopy(trainer.discriminator)
    numbers = floats(trainer.train_step(batch))
    with torch.no_grad():
        fake_pair = torch.cat([batch["input"], G_before(batch["input"])], 1)
        with_new_D = gan_loss(trainer.discriminator(fake_pair), True).item()
        with_old_D = gan_loss(D_before(fake_pair), True).item()
    assert numbers["loss/G_GAN"] == pytest.approx(with_new_D, rel=1e-5)
    assert with_old_D != pytest.approx(with_new_D, rel=1e-3)


def test_generator_loss_does_not_train_the_discriminator(tiny_config):
    """D ends the step exactly as one SGD step on D's own loss leaves it, and its gradients
    are those of D's loss alone: G's loss neither adds to them nor steps D. SGD, unlike Adam,
    turns any extra gradient into a different weight. G is updated."""
    config = apply_overrides(tiny_config, ["model.use_dropout=false", "loss.l1_units=model"])
    batch = {"input": torch.randn(2, 1, 32, 32), "target": torch.rand(2, 1, 32, 32) * 2 - 1}
    trainer = Trainer(config, loaders=([], []))
    trainer.optimizer_D = torch.optim.SGD(trainer.discriminator.parameters(), lr=0.1)
    d_gradients = []
    _record_gradients(trainer.optimizer_D, d_gradients)
    G, D = copy.deepcopy(trainer.generator), copy.deepcopy(trainer.discriminator)
    g_before = weights(trainer.generator)
    trainer.train_step(batch)

    # the reference: D's loss alone, one SGD step
    from pix2pixhd.losses import discriminator_loss

    phase, target = batch["input"], batch["target"]
    with torch.no_grad():
        fake = G(phase)
    loss_D, _, _ = discriminator_loss(D(torch.cat([phase, target], 1)),
                                      D(torch.cat([phase, fake], 1)))
    optimizer = torch.optim.SGD(D.parameters(), lr=0.1)
    loss_D.backward()
    optimizer.step()
    for (name, ours), reference in zip(trainer.discriminator.named_parameters(),
                                       D.parameters(), strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6, msg=name)
    # what D's optimiser applied is what D still holds after G's step: nothing was added
    for recorded, parameter in zip(d_gradients, trainer.discriminator.parameters(), strict=True):
        assert torch.equal(recorded, parameter.grad)
    assert all(p.requires_grad for p in trainer.discriminator.parameters())
    assert any(not torch.equal(g_before[k], v) for k, v in weights(trainer.generator).items())


def test_regression_baseline_learns_without_a_discriminator(tiny_config):
    # no output low-pass: the target below is white noise through tanh, sharp at every pixel
    config = apply_overrides(tiny_config, ["model.kind=regression", "model.use_dropout=false",
                                           "train.lr=2e-3", "model.lowpass_output=false"])
    trainer = Trainer(config, loaders=([], []))
    assert trainer.discriminator is None
    generator = torch.Generator().manual_seed(0)
    phase = torch.randn(2, 1, 32, 32, generator=generator)
    batch = {"input": phase, "target": torch.tanh(phase)}  # a learnable pixel-wise map
    first = floats(trainer.train_step(batch))
    for _ in range(60):
        last = floats(trainer.train_step(batch))
    assert set(first) == {"loss/G_L1"}
    assert last["loss/G_L1"] < 0.5 * first["loss/G_L1"]


def test_fit_writes_checkpoints_and_the_documented_tensorboard_tags(tiny_config):
    metrics = Trainer(tiny_config).fit()
    run = Path(tiny_config.train.checkpoints_dir) / tiny_config.train.name
    state = torch.load(f"{run}/latest.pt", weights_only=True)
    assert {"generator", "discriminator", "optimizer_G", "optimizer_D", "scaler", "epoch",
            "step", "config", "normaliser", "rng"} <= set(state)
    assert sorted(p.name for p in run.glob("epoch_*.pt")) == [
        "epoch_001.pt", "epoch_002.pt"]
    tags = set(read_scalars(f"{run}/logs").tag)
    assert {"loss/G_GAN", "loss/G_GAN_Feat", "loss/D_real", "loss/D_fake", "D_out/train_real",
            "D_out/train_fake", "D_out/val_real", "D_out/val_fake", "val/psnr", "val/ssim",
            "lr", "throughput/images_per_s"} <= tags
    common = {logs.LEARNING_RATE, logs.THROUGHPUT, *logs.VALIDATION_TAGS}
    kind_tags = set(model_kind("gan").tags)
    assert tags <= common | kind_tags | {logs.EPOCH_PREFIX + tag for tag in kind_tags}
    assert np.isfinite(metrics["val/psnr"]) and -1 <= metrics["val/ssim"] <= 1
    generator, config, normaliser = load_predictor(f"{run}/latest.pt")
    assert not generator.training and config.model.ngf == 4
    recorded = load_checkpoint(f"{run}/latest.pt")["normaliser"]
    assert recorded["strategy"] == "dataset" and recorded["stain_map"] == "asinh"
    assert "p_top" in recorded["stats"]["nuclei"] and normaliser.stain_map == "asinh"


def test_every_epoch_logs_the_mean_of_its_steps_even_without_step_logs(tiny_config):
    """A one-epoch run shorter than log_every still has one point per term: the epoch's mean."""
    config = apply_overrides(tiny_config, ["train.log_every=1000"])
    trainer = Trainer(config)
    step_values = []
    original_step = trainer.train_step
    trainer.train_step = lambda batch: step_values.append(original_step(batch)) or step_values[-1]
    trainer.fit(epochs=1)
    scalars = read_scalars(trainer.run_dir / "logs")
    assert not (scalars.tag == "loss/G_GAN").any()  # no step reached log_every
    for name in ("loss/G_GAN", "loss/G_GAN_Feat", "loss/D_real", "loss/D_fake",
                 "D_out/train_real", "D_out/train_fake"):
        logged = scalars[scalars.tag == f"epoch/{name}"]
        assert list(logged.step) == [trainer.step] == [len(step_values)]
        expected = np.mean([float(values[name]) for values in step_values])
        assert logged.value.iloc[0] == pytest.approx(expected, rel=1e-5), name


def test_a_checkpoint_from_other_options_names_them(tiny_config):
    Trainer(tiny_config).fit(epochs=1)
    changed = apply_overrides(tiny_config, ["model.ngf=8", "model.num_D=3",
                                            "data.stain_map=linear"])
    with pytest.raises(CheckpointError, match=r"(?s)ngf: 4 in the checkpoint, 8 now.*num_D.*"
                                              r"data.stain_map: 'asinh' in the checkpoint, "
                                              r"'linear' now"):
        Trainer(changed, resume=True)


def test_validation_panels_show_real_and_fake_stain_linearly_on_one_scale():
    """The panels get stains in their own units (after the stain map) and draw both on the
    real stain's 1st-99.9th percentile: a ramp stays a ramp, a fake twice as bright shows."""
    phase = torch.linspace(-2, 2, 1000).reshape(1, 20, 50)
    real = np.linspace(100.0, 10100.0, 1000).reshape(1, 20, 50)  # a.u., (C, H, W)
    low, high = np.percentile(real, [1, 99.9])
    panel = _display_panel(phase, real, 2 * real)
    assert panel.shape == (3, 1, 20, 50) and panel.min() >= 0 and panel.max() <= 1
    np.testing.assert_allclose(panel[1, 0].numpy(), np.clip((real[0] - low) / (high - low), 0, 1),
                               atol=1e-6)
    np.testing.assert_allclose(panel[2, 0].numpy(),
                               np.clip((2 * real[0] - low) / (high - low), 0, 1), atol=1e-6)


def test_starting_over_an_existing_run_needs_overwrite(tiny_config):
    Trainer(tiny_config).fit(epochs=1)
    with pytest.raises(CheckpointError, match="--resume"):
        Trainer(tiny_config)
    assert Trainer(tiny_config, overwrite=True).epoch == 0


@pytest.mark.parametrize("log_every", [1, 1000])
def test_a_nan_loss_stops_training_and_keeps_the_last_checkpoint(tiny_config, log_every):
    """Stopped on the step's log when it has one, else at the epoch's end, before saving."""
    trainer = Trainer(apply_overrides(tiny_config, [f"train.log_every={log_every}"]))
    trainer.fit(epochs=1)
    run = trainer.run_dir
    before = load_checkpoint(run / "latest.pt")
    good = next(iter(trainer.train_loader))
    bad = {"input": torch.full((2, 1, 32, 32), float("nan")), "target": torch.zeros(2, 1, 32, 32)}
    trainer.train_loader = [bad, good]  # the NaN's step is not the epoch's last
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        trainer.fit()
    after = load_checkpoint(run / "latest.pt")
    assert after["epoch"] == before["epoch"] == 1
    assert_same_weights(before["generator"], after["generator"])


def test_ctrl_c_leaves_the_last_finished_epoch_in_latest(tiny_config):
    trainer = Trainer(tiny_config)
    trainer.fit(epochs=1)
    first_batch = next(iter(trainer.train_loader))

    def interrupted():
        yield first_batch
        raise KeyboardInterrupt

    trainer.train_loader = interrupted()
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    state = load_checkpoint(trainer.run_dir / "latest.pt")
    assert (state["epoch"], state["step"]) == (1, 3)


INTERRUPTED_RUN = """
import sys, time
from pathlib import Path
from pix2pixhd.config import load_config
from pix2pixhd.train import Trainer

config = load_config(sys.argv[1])
trainer = Trainer(config)
step = trainer.train_step

def step_then_wait(batch):
    numbers = step(batch)
    if trainer.step == 4:  # the first step of the second epoch (3 steps per epoch)
        Path(sys.argv[2]).touch()
        time.sleep(600)  # until the SIGINT, however long the parent takes
    return numbers

trainer.train_step = step_then_wait
trainer.fit()
"""


def test_sigint_in_the_second_epoch_then_resume_equals_a_straight_run(tiny_config, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from pix2pixhd.config import save_config

    three = ["train.niter=2", "train.niter_decay=1"]
    split = apply_overrides(tiny_config, [*three, f"train.checkpoints_dir={tmp_path / 'b'}"])
    save_config(split, tmp_path / "split.yaml")
    marker = tmp_path / "in_second_epoch"
    process = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_RUN, str(tmp_path / "split.yaml"), str(marker)],
        cwd=Path(__file__).parents[1], start_new_session=True)
    # the straight run trains here while the subprocess starts up and trains its first epoch
    straight = apply_overrides(tiny_config, [*three, f"train.checkpoints_dir={tmp_path / 'a'}"])
    Trainer(straight).fit()
    deadline = time.monotonic() + 120
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), "the training subprocess did not reach the second epoch"
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) != 0
    assert load_checkpoint(tmp_path / "b" / split.train.name / "latest.pt")["epoch"] == 1
    Trainer(split, resume=True).fit()
    a = load_checkpoint(tmp_path / "a" / straight.train.name / "latest.pt")
    b = load_checkpoint(tmp_path / "b" / split.train.name / "latest.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (3, 9)
    for part in ("generator", "discriminator"):
        assert_same_weights(a[part], b[part])


def _train_rank(rank, world_size, port, config, out):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        trainer = Trainer(config, distributed=Distributed(rank, world_size, 0))
        trainer.fit(epochs=1)
        torch.save(trainer.generator.state_dict(), f"{out}/rank{rank}.pt")
        torch.save(trainer.discriminator.state_dict(), f"{out}/rank{rank}_D.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_ranks_end_with_identical_weights(tiny_config, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.spawn(_train_rank, args=(2, port, tiny_config, tmp_path), nprocs=2)
    for part in ("", "_D"):
        rank0 = torch.load(tmp_path / f"rank0{part}.pt", weights_only=True)
        rank1 = torch.load(tmp_path / f"rank1{part}.pt", weights_only=True)
        assert_same_weights(rank0, rank1)
    initial = Trainer(apply_overrides(tiny_config, ["train.name=fresh", "loss.l1_units=model"]),
                      loaders=([], []))
    assert any(not torch.equal(initial.generator.state_dict()[k], v)
               for k, v in torch.load(tmp_path / "rank0.pt", weights_only=True).items())


def test_a_bad_pixel_stops_the_trainer_before_anything_is_written(tiny_config, tmp_path):
    import shutil

    import tifffile

    from pix2pixhd import layout

    data = tmp_path / "data"
    shutil.copytree(tiny_config.data.root, data)
    path = layout.image_path(data, "val", "phase", "fov_0001")
    image = layout.read_image(path)
    image[5, 5] = np.nan
    tifffile.imwrite(path, image)
    config = apply_overrides(tiny_config, [f"data.root={data}"])
    with pytest.raises(layout.DataError, match="fov_0001.tif has 1 NaN or infinite pixels"):
        Trainer(config)
    assert not Path(config.train.checkpoints_dir).exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_cuda_names_the_cpu_setting():
    from pix2pixhd.config import ConfigError
    from pix2pixhd.train import resolve_device

    with pytest.raises(ConfigError, match="no CUDA GPU is visible; use train.device=cpu"):
        resolve_device("cuda")


# --- the environment of a torchrun job ----------------------------------------------------


@pytest.mark.parametrize(
    "environ, words",
    [
        ({"WORLD_SIZE": "abc"}, "environment variable WORLD_SIZE='abc' is not a whole number"),
        ({"RANK": "1"}, "RANK=1 set without a WORLD_SIZE above 1"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0: a job has at least one process"),
        ({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"},
         "WORLD_SIZE=2 is set but RANK, LOCAL_RANK, MASTER_PORT not; launch with `torchrun"),
        ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
          "MASTER_PORT": "29500"}, "RANK=2 is not one of the WORLD_SIZE=2 ranks 0 to 1"),
    ],
)
def test_distributed_variables_that_disagree_are_refused_in_one_line(environ, words):
    with pytest.raises(ConfigError, match=words):
        Distributed.from_environment(environ)


def test_a_torchrun_job_says_what_it_waits_for(caplog):
    environ = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.7",
               "MASTER_PORT": "29500"}
    with caplog.at_level(logging.INFO, logger="pix2pixhd.train"):
        assert Distributed.from_environment(environ) == Distributed(1, 2, 1)
    assert "rank 1 of 2 waits for all 2 processes to join at 10.0.0.7:29500" in caplog.text
    assert Distributed.from_environment({}) == Distributed(0, 1, 0)
    assert Distributed.from_environment({"WORLD_SIZE": "1", "RANK": "0"}) == Distributed(0, 1, 0)


def test_the_trainer_reads_the_environment_through_the_same_check(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "abc")
    with pytest.raises(ConfigError, match="WORLD_SIZE='abc'"):
        Distributed.from_environment()


def test_a_trainer_without_a_normaliser_refuses_an_l1_term_in_stain_units(tiny_config):
    with pytest.raises(ConfigError, match="loss.l1_units=stain needs the stain's normalisation"):
        Trainer(tiny_config, loaders=([], []))
    Trainer(apply_overrides(tiny_config, ["loss.l1_units=model"]), loaders=([], []))


def test_the_l1_term_in_stain_units_goes_through_the_datasets_stain_map(tiny_config):
    config = apply_overrides(tiny_config, ["loss.l1_units=stain", "loss.lambda_l1=2"])
    trainer = Trainer(config)
    assert trainer.normaliser.stain_map == "asinh"
    y = torch.linspace(-1, 1, 9).reshape(1, 1, 3, 3)
    torch.testing.assert_close(trainer.stain_units()(y), trainer.normaliser.in_linear_units(y))
    assert torch.isfinite(trainer.train_step(next(iter(trainer.train_loader)))[logs.G_L1])


def test_validation_of_the_first_batches_scores_those_batches_only(tiny_config):
    tiny_config = apply_overrides(tiny_config, ["loss.l1_units=model"])  # no normaliser here
    generator = torch.Generator().manual_seed(1)
    batches = [{"input": torch.randn(2, 1, 32, 32, generator=generator),
                "target": torch.rand(2, 1, 32, 32, generator=generator) * 2 - 1}
               for _ in range(3)]
    first_only = Trainer(tiny_config, loaders=([], batches[:1]))
    trainer = Trainer(tiny_config, loaders=([], batches))
    trainer.generator.load_state_dict(first_only.generator.state_dict())
    trainer.discriminator.load_state_dict(first_only.discriminator.state_dict())
    expected = first_only.validate()
    assert trainer.validate(max_batches=1) == pytest.approx(expected, rel=1e-6)
    assert trainer.validate()[logs.VAL_PSNR] != pytest.approx(expected[logs.VAL_PSNR], rel=1e-3)
