"""Checkpoints: atomic writes, safe loading, export for sharing."""

import glob

import pytest
import torch

from pix2pixhd.checkpoint import CheckpointError, export_run, load_checkpoint, load_generator
from pix2pixhd.logs import read_scalars
from pix2pixhd.train import Trainer


def image_steps(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for path in glob.glob(f"{logdir}/**/events.out.tfevents.*", recursive=True):
        accumulator = EventAccumulator(path, size_guidance={"images": 0})
        accumulator.Reload()
        if "val/phase_target_prediction" in accumulator.Tags()["images"]:
            steps += [e.step for e in accumulator.Images("val/phase_target_prediction")]
    return sorted(steps)


def test_export_keeps_what_prediction_needs_and_thins_the_images(tiny_config, tmp_path):
    from pix2pixhd.config import apply_overrides

    config = apply_overrides(tiny_config, ["train.niter=3", "train.niter_decay=2"])
    trainer = Trainer(config)
    trainer.fit()
    exported = export_run(trainer.run_dir, tmp_path / "shared", image_epochs=2)
    state = load_checkpoint(exported)
    assert "optimizer_G" not in state and state["discriminator"] is None
    generator, _, _ = load_generator(exported)
    for name, tensor in generator.state_dict().items():
        assert torch.equal(tensor, trainer.generator.state_dict()[name])
    original = read_scalars(trainer.run_dir / "logs")
    assert read_scalars(tmp_path / "shared" / "logs").equals(original)
    all_steps = image_steps(trainer.run_dir / "logs")
    assert len(all_steps) == 5 and image_steps(tmp_path / "shared" / "logs") == [
        all_steps[0], all_steps[-1]]


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    path = tmp_path / "latest.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="latest.pt is not a readable checkpoint"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="load_original_state_dict"):
        load_checkpoint(path)
