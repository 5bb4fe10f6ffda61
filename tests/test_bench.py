"""The benchmark's run estimate: it times the trainer's own steps and leaves the run as it was."""

import torch

from pix2pixhd.bench import estimate_run_seconds
from pix2pixhd.checkpoint import load_checkpoint
from pix2pixhd.config import apply_overrides
from pix2pixhd.train import Trainer


def test_estimating_a_run_leaves_the_run_it_precedes_unchanged(tiny_config, tmp_path):
    plain = apply_overrides(tiny_config, [f"train.checkpoints_dir={tmp_path / 'plain'}"])
    Trainer(plain).fit()
    timed = apply_overrides(tiny_config, [f"train.checkpoints_dir={tmp_path / 'timed'}"])
    trainer = Trainer(timed)
    estimate = estimate_run_seconds(trainer, n_steps=2)
    assert trainer.step == 0
    assert estimate["epochs"] == tiny_config.epochs
    assert estimate["steps_per_epoch"] == len(trainer.train_loader)
    assert estimate["seconds_per_step"] > 0
    assert estimate["total_seconds"] >= (estimate["epochs"] * estimate["steps_per_epoch"]
                                         * estimate["seconds_per_step"])
    trainer.fit()
    a = load_checkpoint(tmp_path / "plain" / plain.train.name / "latest.pt")
    b = load_checkpoint(tmp_path / "timed" / timed.train.name / "latest.pt")
    assert a["step"] == b["step"]
    for part in ("generator", "discriminator"):
        for name in a[part]:
            torch.testing.assert_close(a[part][name], b[part][name], rtol=0, atol=0, msg=name)
    for index, state in a["optimizer_G"]["state"].items():
        torch.testing.assert_close(state["exp_avg"], b["optimizer_G"]["state"][index]["exp_avg"],
                                   rtol=0, atol=0)


def test_a_finished_run_has_nothing_left_to_estimate(tiny_config, tmp_path):
    config = apply_overrides(tiny_config, [f"train.checkpoints_dir={tmp_path}"])
    Trainer(config).fit()
    resumed = Trainer(config, resume=True)
    assert estimate_run_seconds(resumed, n_steps=1)["total_seconds"] == 0
