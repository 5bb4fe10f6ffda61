"""Checkpoints (atomic writes, safe loading) and the run folders around them (`runs`: export
for sharing, --overwrite, provenance)."""

import glob
from pathlib import Path

import pytest
import torch

from pix2pixhd.checkpoint import CheckpointError, load_checkpoint
from pix2pixhd.config import from_dict
from pix2pixhd.logs import VAL_IMAGES, read_scalars
from pix2pixhd.predict import load_predictor
from pix2pixhd.runs import export_run
from pix2pixhd.train import Trainer


def image_steps(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for path in glob.glob(f"{logdir}/**/events.out.tfevents.*", recursive=True):
        accumulator = EventAccumulator(path, size_guidance={"images": 0})
        accumulator.Reload()
        if VAL_IMAGES in accumulator.Tags()["images"]:
            steps += [e.step for e in accumulator.Images(VAL_IMAGES)]
    return sorted(steps)


@pytest.fixture(scope="module")
def five_epochs(tiny_dataset, tmp_path_factory):
    """A five-epoch run with a checkpoint every epoch, which the export tests only read."""
    from pix2pixhd.config import apply_overrides, load_config

    from .conftest import TINY

    config = apply_overrides(load_config("quick"), TINY + [
        f"data.root={tiny_dataset}", f"train.checkpoints_dir={tmp_path_factory.mktemp('runs')}",
        "train.niter=3", "train.niter_decay=2", "train.save_every=1"])
    trainer = Trainer(config)
    trainer.fit()
    return trainer


def test_export_keeps_what_prediction_needs_and_thins_the_images(five_epochs, tmp_path):
    trainer = five_epochs
    exported = export_run(trainer.run_dir, tmp_path / "shared", image_epochs=2)
    state = load_checkpoint(exported)
    assert "optimizer_G" not in state and state["discriminator"] is None
    generator, _, _ = load_predictor(exported)
    for name, tensor in generator.state_dict().items():
        assert torch.equal(tensor, trainer.generator.state_dict()[name])
    original = read_scalars(trainer.run_dir / "logs")
    assert read_scalars(tmp_path / "shared" / "logs").equals(original)
    all_steps = image_steps(trainer.run_dir / "logs")
    assert len(all_steps) == 5 and image_steps(tmp_path / "shared" / "logs") == [
        all_steps[0], all_steps[-1]]


def test_export_of_a_resumed_run_keeps_the_image_epochs_over_the_whole_run(tiny_config,
                                                                          tmp_path):
    from pix2pixhd.config import apply_overrides

    config = apply_overrides(tiny_config, ["train.niter=3", "train.niter_decay=2"])
    Trainer(config).fit(epochs=2)
    resumed = Trainer(config, resume=True)
    resumed.fit()
    logs = resumed.run_dir / "logs"
    assert len(glob.glob(f"{logs}/**/events.out.tfevents.*", recursive=True)) >= 2
    all_steps = image_steps(logs)
    assert len(all_steps) == 5
    export_run(resumed.run_dir, tmp_path / "shared", image_epochs=3)
    assert image_steps(tmp_path / "shared" / "logs") == [all_steps[0], all_steps[2],
                                                         all_steps[-1]]


def test_export_of_an_epoch_ships_that_epochs_generator(five_epochs, tmp_path):
    trainer = five_epochs
    chosen = load_checkpoint(trainer.run_dir / "epoch_002.pt")
    latest = load_checkpoint(trainer.run_dir / "latest.pt")
    assert any(not torch.equal(chosen["generator"][name], latest["generator"][name])
               for name in chosen["generator"])  # the epochs differ, so the choice shows
    exported = export_run(trainer.run_dir, tmp_path / "chosen", epoch=2)
    assert load_checkpoint(exported)["epoch"] == 2
    generator, _, _ = load_predictor(exported)
    assert all(torch.equal(tensor, chosen["generator"][name])
               for name, tensor in generator.state_dict().items())


def test_an_export_names_its_own_folder_as_the_run(run, tmp_path):
    """A shared model must not point back at the folder where it happened to be trained."""
    from pix2pixhd.config import load_config

    trainer = run
    exported = export_run(trainer.run_dir, tmp_path / "models" / "shared_gan")
    for config in (from_dict(load_checkpoint(exported)["config"]),
                   load_config(tmp_path / "models" / "shared_gan" / "config.yaml")):
        assert config.train.checkpoints_dir == str(tmp_path / "models")
        assert config.train.name == "shared_gan"
        assert config.model == trainer.config.model


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    path = tmp_path / "latest.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="latest.pt is not a readable checkpoint"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="load_original_state_dict"):
        load_checkpoint(path)


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    """One trained epoch: a run folder with latest.pt, config.yaml and logs/."""
    from pix2pixhd.config import apply_overrides, load_config

    from .conftest import TINY

    config = apply_overrides(load_config("quick"), TINY + [
        f"data.root={tiny_dataset}",
        f"train.checkpoints_dir={tmp_path_factory.mktemp('runs')}"])
    trainer = Trainer(config)
    trainer.fit(epochs=1)
    return trainer


def test_every_checkpoint_records_the_data_it_was_trained_on(run):
    provenance = load_checkpoint(run.run_dir / "latest.pt")["provenance"]
    assert provenance["source"] == "synthetic" and provenance["details"]["seed"] == 0
    assert provenance["counts"] == {"train": 6, "val": 2, "test": 2}
    assert {"median", "iqr", "p_low", "p_high"} <= set(provenance["input_statistics"])


def test_export_fills_the_provenance_of_an_older_checkpoint_from_its_data_root(run, tmp_path):
    older = tmp_path / "older"
    older.mkdir()
    state = load_checkpoint(run.run_dir / "latest.pt")
    del state["provenance"]
    torch.save(state, older / "latest.pt")
    exported = load_checkpoint(export_run(older, tmp_path / "shared"))
    assert exported["provenance"]["source"] == "synthetic"
    assert exported["provenance"]["root"] == state["config"]["data"]["root"]


def test_export_replaces_only_an_earlier_export_unless_told(run, tmp_path):
    shared = tmp_path / "shared"
    export_run(run.run_dir, shared)
    export_run(run.run_dir, shared)  # an earlier export is replaced
    (shared / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=r"not an earlier export .*notes.txt.*--overwrite"):
        export_run(run.run_dir, shared)
    export_run(run.run_dir, shared, overwrite=True)
    assert (shared / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    (other / "logs").mkdir(parents=True)
    (other / "logs" / "mine.txt").write_text("kept")
    with pytest.raises(CheckpointError, match="not an earlier export"):
        export_run(run.run_dir, other)
    assert (other / "logs" / "mine.txt").read_text() == "kept"
    with pytest.raises(CheckpointError, match="into itself"):
        export_run(run.run_dir, run.run_dir, overwrite=True)


def test_export_does_not_replace_a_resumable_checkpoint(run, tmp_path):
    other = tmp_path / "other_run"
    other.mkdir()
    (other / "latest.pt").write_bytes((run.run_dir / "latest.pt").read_bytes())
    with pytest.raises(CheckpointError, match="not an earlier export .*no exported latest.pt"):
        export_run(run.run_dir, other)


def test_resuming_an_exported_checkpoint_says_how_to_fine_tune(run, tmp_path):
    from pix2pixhd.config import apply_overrides

    export_run(run.run_dir, tmp_path / "exported" / run.config.train.name)
    config = apply_overrides(run.config, [f"train.checkpoints_dir={tmp_path / 'exported'}"])
    with pytest.raises(CheckpointError, match="no optimiser state.*fine-tune"):
        Trainer(config, resume=True)


def test_overwrite_clears_only_a_folder_of_run_files(run, tmp_path):
    from pix2pixhd.config import apply_overrides

    folder = tmp_path / "runs" / run.config.train.name
    folder.mkdir(parents=True)
    (folder / "latest.pt").write_bytes((run.run_dir / "latest.pt").read_bytes())
    (folder / "thesis.tex").write_text("years of work")
    (folder / "checkpoints").mkdir()
    config = apply_overrides(run.config, [f"train.checkpoints_dir={tmp_path / 'runs'}"])
    with pytest.raises(CheckpointError, match=r"holds files that training did not write "
                                              r"\(checkpoints, thesis.tex\)"):
        Trainer(config, overwrite=True)
    assert (folder / "thesis.tex").is_file() and (folder / "latest.pt").is_file()
    (folder / "thesis.tex").unlink()
    (folder / "checkpoints").rmdir()
    (folder / "epoch_001.pt").write_bytes(b"")
    (folder / ".latest.pt.x.part").write_bytes(b"")
    Trainer(config, overwrite=True)
    assert list(folder.iterdir()) == [] and folder.is_dir()


def test_provenance_mismatch_names_both_sources(run, tmp_path):
    import json
    import shutil

    from pix2pixhd.runs import provenance_mismatch

    latest = run.run_dir / "latest.pt"
    assert provenance_mismatch(latest, run.config.data.root) is None
    other = tmp_path / "real"
    other.mkdir()
    info = json.loads((Path(run.config.data.root) / "dataset.json").read_text())
    (other / "dataset.json").write_text(json.dumps({**info, "source": "VSCyto2D A549",
                                                    "seed": 0}))
    message = provenance_mismatch(latest, other)
    assert "trained on synthetic data" in message and "holds VSCyto2D A549 data" in message
    shutil.rmtree(other)


def test_a_failed_save_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from pix2pixhd.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "latest.pt", {"epoch": 1})

    def full_disk(state, path):
        Path(path).write_bytes(b"half")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"could not write .*latest.pt .*disk full"):
        save_checkpoint(tmp_path / "latest.pt", {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(tmp_path / "latest.pt", weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def _malformed(state, key, value):
    """A copy of `state` with `key` (dotted: into nested dicts) set, or deleted for ...."""
    import copy

    state = copy.deepcopy(state)
    *parents, last = key.split(".")
    holder = state
    for parent in parents:
        holder = holder[parent]
    if value is ...:
        del holder[last]
    else:
        holder[last] = value
    return state


@pytest.mark.parametrize(("key", "value", "words"), [
    ("config", [1, 2], "holds a config that is a list, not a mapping"),
    ("generator", {}, "'generator' is not a non-empty state dict"),
    ("config.data.target_channels", ["nuclei", "membrane"], "'normaliser' scales ['nuclei']"),
    ("config.model.ngf", 8, "'generator' does not fit the checkpoint's own config"),
    ("normaliser", ..., "'normaliser' is missing"),
    ("normaliser.stats.phase.iqr", "abc", "'normaliser' has statistics that are not finite"),
    ("provenance.input_statistics.median", "zero", "'provenance' is not a mapping with numeric"),
    ("epoch", "1", "'epoch' is '1', not a count"),
])
def test_a_malformed_checkpoint_is_one_line_naming_the_file_and_field(run, tmp_path, key,
                                                                      value, words):
    from pix2pixhd.config import ConfigError
    from pix2pixhd.predict import load_predictor

    path = tmp_path / "latest.pt"
    torch.save(_malformed(load_checkpoint(run.run_dir / "latest.pt"), key, value), path)
    with pytest.raises((CheckpointError, ConfigError)) as error:
        load_predictor(path)
    message = str(error.value)
    assert message.startswith(str(path)) and words in message and "\n" not in message


def test_a_pickled_object_is_refused_in_one_line_without_unsafe_advice(tmp_path):
    path = tmp_path / "latest.pt"
    torch.save({"generator": {}, "config": Path("x")}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "pickled Python object (pathlib" in message and "\n" not in message
    assert "weights_only" not in message


def test_an_older_checkpoint_without_scaler_and_rng_resumes_with_a_warning(run, tmp_path,
                                                                           caplog):
    from pix2pixhd.config import apply_overrides

    folder = tmp_path / "runs" / run.config.train.name
    folder.mkdir(parents=True)
    state = load_checkpoint(run.run_dir / "latest.pt")
    del state["scaler"], state["rng"]
    torch.save(state, folder / "latest.pt")
    config = apply_overrides(run.config, [f"train.checkpoints_dir={tmp_path / 'runs'}"])
    with caplog.at_level("WARNING"):
        resumed = Trainer(config, resume=True)
    assert (resumed.epoch, resumed.step) == (state["epoch"], state["step"])
    assert any("holds no scaler or rng state" in r.getMessage() for r in caplog.records)


def test_an_export_whose_weights_do_not_fit_its_config_is_removed_and_named(
        tiny_config, tmp_path, capsys):
    from pix2pixhd.checkpoint import save_checkpoint
    from pix2pixhd.cli import main

    trainer = Trainer(tiny_config)
    trainer.fit(epochs=1)
    state = load_checkpoint(trainer.run_dir / "latest.pt")
    state["config"]["model"]["ngf"] = 8  # the weights were trained with ngf=4
    save_checkpoint(trainer.run_dir / "latest.pt", state)
    assert main(["export", "--run", str(trainer.run_dir), "--out", str(tmp_path / "shared")]) == 2
    err = capsys.readouterr().err
    assert "does not load and predict" in err and "does not fit the checkpoint's own config" in err
    assert "removed what it wrote" in err and err.count("\n") == 1
    assert not (tmp_path / "shared").exists()
