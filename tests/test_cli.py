"""The command line end to end on a tiny dataset: the verbs, their files and JSON keys."""

import json
import re

import numpy as np
import pytest

from pix2pixhd.cli import main

from .conftest import TINY
from .tiny_data import MALFORMED


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A dataset and a one-epoch run, made once; tests get copies (`workspace`)."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    assert main(["data", "synthetic", "--out", str(data), "--n-train", "4", "--n-val", "2",
                 "--n-test", "2", "--size", "128", "--seed", "1"]) == 0
    sets = [item for option in TINY for item in ("--set", option)]
    assert main(["train", "--config", "quick", "--data", str(data), "--name", "gan",
                 "--checkpoints-dir", str(root / "runs"), "--epochs", "1", *sets]) == 0
    return root


@pytest.fixture
def workspace(prepared, tmp_path):
    """A fresh copy of the prepared data and run, so no test sees what another changed. The
    run's config names the prepared data folder, which no test writes into."""
    import shutil

    root = tmp_path / "cli"
    shutil.copytree(prepared, root)
    return root


def test_data_check_accepts_a_fresh_dataset_and_names_a_broken_file(workspace, capsys):
    assert main(["data", "check", str(workspace / "data")]) == 0
    broken = workspace / "broken"
    import shutil

    shutil.copytree(workspace / "data", broken)
    (broken / "val" / "phase" / "fov_0000.tif").write_bytes(b"not a tiff")
    assert main(["data", "check", str(broken)]) == 1
    assert "val/phase/fov_0000.tif" in capsys.readouterr().err


def test_train_resume_continues_the_saved_run(workspace):
    assert main(["train", "--resume", "--name", "gan", "--checkpoints-dir",
                 str(workspace / "runs"), "--epochs", "2"]) == 0
    import torch

    state = torch.load(workspace / "runs" / "gan" / "latest.pt", weights_only=True)
    assert state["epoch"] == 2


def test_predict_then_evaluate_writes_the_summary_keys(workspace):
    checkpoint = workspace / "runs" / "gan" / "latest.pt"
    assert main(["predict", "--checkpoint", str(checkpoint), "--input",
                 str(workspace / "data" / "test"), "--out", str(workspace / "pred")]) == 0
    assert main(["evaluate", "--pred", str(workspace / "pred"), "--data",
                 str(workspace / "data" / "test"), "--out", str(workspace / "eval")]) == 0
    summary = json.loads((workspace / "eval" / "summary.json").read_text())
    assert {"psnr", "ssim", "pearson", "f1_iou50", "f1_mean", "real_stain_f1_iou50",
            "hf_power_ratio"} <= set(summary)
    assert summary["n_images"] == 2


def test_sample_scores_uncertainty_against_the_real_stain(workspace):
    checkpoint = workspace / "runs" / "gan" / "latest.pt"
    assert main(["sample", "--checkpoint", str(checkpoint), "--input",
                 str(workspace / "data" / "test"), "--n", "4", "--out",
                 str(workspace / "mc"), "--calibration", str(workspace / "data" / "val")]) == 0
    summary = json.loads((workspace / "mc" / "summary.json").read_text())
    assert {"spearman_std_abs_error", "ause", "uce", "uce_unscaled"} <= set(summary)
    assert summary["std_scale"] > 0 and summary["n_samples"] == 4
    assert sorted(p.name for p in (workspace / "mc" / "std").glob("*.tif")) == [
        "fov_0000.tif", "fov_0001.tif"]


def test_bench_prints_json_timings_of_the_step_inference_and_sampling(capsys):
    sets = [item for option in TINY for item in ("--set", option)]
    assert main(["bench", "--config", "quick", "--batch", "1", "--size", "32", "--warmup", "1",
                 "--repeats", "2", *sets]) == 0
    results = json.loads(capsys.readouterr().out)
    assert "step" in results["seconds_per_step"]
    assert results["inference_seconds_per_image"] > 0
    assert results["mc_batched_speedup"] > 0


def test_bench_times_a_network_without_dropout_and_skips_only_the_sampling(capsys):
    pytest.importorskip("viscy")
    tiny_viscy = ["model.kind=viscy", "model.encoder_blocks=[1,1,1,1]",
                  "model.dims=[8,16,32,64]", "model.decoder_conv_blocks=1"]
    sets = [item for option in TINY + tiny_viscy for item in ("--set", option)]
    assert main(["bench", "--config", "quick", "--batch", "1", "--size", "64", "--warmup", "1",
                 "--repeats", "2", *sets]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["seconds_per_step"]["step"] > 0 and "mc_batched_speedup" not in results


def test_errors_are_one_line_with_a_nonzero_exit(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nothing"), "--checkpoints-dir",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "synthetic" in err
    assert main(["train", "--set", "model.ngf=abc"]) == 2
    assert "model.ngf expects int" in capsys.readouterr().err


def _run_files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_run_names_must_be_one_plain_folder_name(workspace, tmp_path, monkeypatch, capsys):
    """`--name .. --overwrite` once deleted the working folder that held checkpoints/."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "latest.pt").write_bytes(b"x")
    (tmp_path / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(tmp_path / "checkpoints")
    data = str(workspace / "data")
    for name in ("..", "../escape", str(tmp_path / "abs")):
        assert main(["train", "--data", data, "--name", name, "--checkpoints-dir", ".",
                     "--overwrite"]) == 2
        assert "is not a plain name" in capsys.readouterr().err
    assert (tmp_path / "thesis.tex").is_file() and not (tmp_path / "escape").exists()
    assert not (tmp_path / "abs").exists()


def test_outputs_into_a_data_split_or_the_input_are_refused(workspace, capsys):
    data, test = workspace / "data", workspace / "data" / "test"
    before = _run_files(test)
    checkpoint = str(workspace / "runs" / "gan" / "latest.pt")
    commands = [
        ["predict", "--checkpoint", checkpoint, "--input", str(test), "--out", str(test)],
        ["predict", "--checkpoint", checkpoint, "--input", str(test / "phase"),
         "--out", str(test / "phase" / "pred")],
        ["evaluate", "--pred", str(workspace / "pred"), "--data", str(test),
         "--out", str(data / "eval")],
        ["sample", "--checkpoint", checkpoint, "--input", str(test), "--n", "2",
         "--out", str(test / "mc")],
    ]
    for command in commands:
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.startswith("error: output folder") and err.count("\n") == 1, err
    assert _run_files(test) == before


def test_resume_continues_the_run_in_the_folder_given(workspace, tmp_path):
    import shutil

    import torch

    original = workspace / "runs" / "gan"
    shutil.copytree(original, tmp_path / "copy" / "gan")
    epoch = torch.load(original / "latest.pt", weights_only=True)["epoch"]
    before = (original / "latest.pt").read_bytes()
    assert main(["train", "--resume", "--name", "gan", "--checkpoints-dir",
                 str(tmp_path / "copy"), "--epochs", str(epoch + 1)]) == 0
    copy = torch.load(tmp_path / "copy" / "gan" / "latest.pt", weights_only=True)
    assert copy["epoch"] == epoch + 1
    assert (original / "latest.pt").read_bytes() == before


def test_channel_names_from_a_checkpoint_cannot_leave_out(workspace, tmp_path, capsys):
    import torch

    state = torch.load(workspace / "runs" / "gan" / "latest.pt", weights_only=True)
    state["config"]["data"]["target_channels"] = ["../../../x"]
    torch.save(state, tmp_path / "hostile.pt")
    out = tmp_path / "a" / "b" / "c" / "out"
    assert main(["predict", "--checkpoint", str(tmp_path / "hostile.pt"), "--input",
                 str(workspace / "data" / "test"), "--out", str(out)]) == 2
    assert "'../../../x' is not a plain name" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not out.exists()


@pytest.mark.parametrize(
    "arguments, words",
    [
        (["train", "--epochs", "-3"], "argument --epochs: must be at least 1, got -3"),
        (["predict", "--checkpoint", "c", "--input", "i", "--out", "o", "--overlap", "-5"],
         "argument --overlap: must be at least 0, got -5"),
        (["sample", "--checkpoint", "c", "--input", "i", "--out", "o", "--max-images", "0"],
         "argument --max-images: must be at least 1, got 0"),
    ],
)
def test_negative_or_zero_counts_are_refused(arguments, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(arguments)
    assert exit_.value.code == 2 and words in capsys.readouterr().err


def _predict(workspace, out):
    return main(["predict", "--checkpoint", str(workspace / "runs" / "gan" / "latest.pt"),
                 "--input", str(workspace / "data" / "test"), "--out", str(out)])


def test_an_out_that_is_a_file_or_a_full_disk_is_one_line(workspace, tmp_path, capsys,
                                                          monkeypatch):
    import errno

    (tmp_path / "file").write_text("")
    assert _predict(workspace, tmp_path / "file") == 2
    assert capsys.readouterr().err == (f"error: output folder {tmp_path / 'file'} is a file; "
                                       "choose a folder (it will be made)\n")

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr("pix2pixhd.layout.tifffile.imwrite", full)
    assert _predict(workspace, tmp_path / "pred") == 2
    err = capsys.readouterr().err  # after the progress bar: one line, no traceback
    assert err.splitlines()[-1].startswith("error: cannot use ") and "Traceback" not in err
    assert "No space left on device" in err.splitlines()[-1]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_names_the_cpu_setting(workspace, tmp_path, capsys):
    assert main(["train", "--data", str(workspace / "data"), "--checkpoints-dir",
                 str(tmp_path), "--set", "train.device=cuda"]) == 2
    assert "no CUDA GPU is visible; use train.device=cpu" in capsys.readouterr().err


def test_a_dataset_json_that_is_a_list_is_one_line(workspace, tmp_path, capsys):
    (tmp_path / "dataset.json").write_text("[1, 2]")
    assert main(["train", "--data", str(tmp_path), "--checkpoints-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds a list, not the mapping" in err and err.count("\n") == 1


@pytest.mark.parametrize("verb", ["check", "train"])
def test_an_infinite_statistic_in_dataset_json_is_one_line(dataset_root, tmp_path, capsys,
                                                          verb):
    """Before, `data check` said ok and training scaled every input to zero."""
    damage, words = MALFORMED["iqr-infinity"]
    damage(dataset_root)
    if verb == "check":
        assert main(["data", "check", str(dataset_root)]) == 1
    else:
        assert main(["train", "--data", str(dataset_root), "--checkpoints-dir",
                     str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert words in err and str(dataset_root / "dataset.json") in err
    assert err.count("\n") == (2 if verb == "check" else 1)  # data check adds a count line


def test_an_input_in_other_units_gets_one_warning_line(workspace, tmp_path, caplog):
    import numpy as np

    from pix2pixhd.layout import read_image, write_image

    phase = read_image(workspace / "data" / "test" / "phase" / "fov_0000.tif")
    eight_bit = np.round(255 * (phase - phase.min()) / np.ptp(phase))
    write_image(tmp_path / "images" / "camera.tif", eight_bit)
    with caplog.at_level("WARNING"):
        assert main(["predict", "--checkpoint", str(workspace / "runs" / "gan" / "latest.pt"),
                     "--input", str(tmp_path / "images"), "--out", str(tmp_path / "pred")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "camera.tif is far from the training data" in warnings[0]
    assert "--normalise image" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(["predict", "--checkpoint", str(workspace / "runs" / "gan" / "latest.pt"),
                     "--input", str(tmp_path / "images"), "--out", str(tmp_path / "pred2"),
                     "--normalise", "image"]) == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


# --- safe with real inputs: nothing lost, no link followed, one line per bad input ------------


def _copy_run(workspace, folder):
    import shutil

    shutil.copytree(workspace / "runs" / "gan", folder / "gan")
    return folder / "gan"


def test_overwrite_with_a_typo_in_data_leaves_the_old_run(workspace, tmp_path, capsys):
    run = _copy_run(workspace, tmp_path)
    before = _run_files(run)
    assert main(["train", "--data", str(workspace / "dta"), "--name", "gan",
                 "--checkpoints-dir", str(tmp_path), "--overwrite"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _run_files(run) == before
    for command in (["train", "--data", str(workspace / "dta"), "--name", "gan",
                     "--checkpoints-dir", str(tmp_path / "new" / "runs")],
                    ["export", "--run", str(tmp_path / "no_run"), "--out",
                     str(tmp_path / "new" / "shared")]):
        assert main(command) == 2
        assert not (tmp_path / "new").exists(), command  # nothing made for a failed command


def test_sample_and_evaluate_keep_same_named_files_they_did_not_write(workspace, tmp_path,
                                                                        capsys):
    checkpoint = workspace / "runs" / "gan" / "latest.pt"
    test = workspace / "data" / "test"
    users = tmp_path / "users"
    (users / "std").mkdir(parents=True)
    (users / "std" / "fov_0000.tif").write_bytes(b"the user's own map")
    (users / "per_image.csv").write_text("fov,mine\n")
    before = _run_files(users)
    assert main(["sample", "--checkpoint", str(checkpoint), "--input", str(test), "--n", "2",
                 "--out", str(users)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no sampling.json or summary.json" in err, err
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(test), "--out",
                 str(tmp_path / "pred")]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--data", str(test), "--out",
                 str(users)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "per_image.csv is already there" in err, err
    assert _run_files(users) == before
    # their own folders they replace, run after run
    for _ in range(2):
        assert main(["sample", "--checkpoint", str(checkpoint), "--input", str(test), "--n",
                     "2", "--out", str(tmp_path / "mc")]) == 0
        assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--data", str(test),
                     "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "mc" / "sampling.json").read_text())["n"] == 2


def test_data_show_writes_no_dataset_file_and_no_file_it_did_not_write(workspace, tmp_path,
                                                                       capsys):
    from PIL import Image

    data = workspace / "data"
    before = _run_files(data / "test")
    for out in (data / "test" / "nuclei" / "fov_0001.tif", data / "test" / "figure.png"):
        assert main(["data", "show", str(data), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "lies inside the dataset" in err, err
    assert _run_files(data / "test") == before
    foreign = tmp_path / "holiday.png"
    Image.new("RGB", (4, 4)).save(foreign)
    assert main(["data", "show", str(data), "--out", str(foreign)]) == 2
    assert "is not a figure of `data show`" in capsys.readouterr().err
    assert Image.open(foreign).size == (4, 4)
    mine = tmp_path / "examples.png"
    for _ in range(2):  # a figure it wrote, it may replace
        assert main(["data", "show", str(data), "--n", "1", "--out", str(mine)]) == 0
    assert main(["data", "show", str(data), "--n", "1"]) == 0  # ROOT/examples.png, the default
    assert (data / "examples.png").is_file()
    (data / "examples.png").unlink()


def test_predict_into_the_parent_of_its_input_keeps_the_stains_beside_it(workspace, tmp_path,
                                                                          capsys):
    import shutil

    folder = tmp_path / "X"  # a split without dataset.json
    shutil.copytree(workspace / "data" / "test", folder)
    before = _run_files(folder)
    assert main(["predict", "--checkpoint", str(workspace / "runs" / "gan" / "latest.pt"),
                 "--input", str(folder / "phase"), "--out", str(folder)]) == 2
    assert "holds the input" in capsys.readouterr().err
    assert _run_files(folder) == before


def test_a_link_inside_an_output_folder_is_not_written_through(workspace, tmp_path, capsys):
    import shutil

    truth = tmp_path / "truth"
    shutil.copytree(workspace / "data" / "test" / "nuclei", truth)
    before = _run_files(truth)
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "nuclei").symlink_to(truth)
    assert _predict(workspace, tmp_path / "pred") == 2
    err = capsys.readouterr().err
    assert "is a symbolic link" in err.splitlines()[-1]
    assert _run_files(truth) == before

    notes = tmp_path / "notes.txt"
    for verb, out, names in (("evaluate", tmp_path / "eval", ("per_image.csv", "summary.csv")),
                             ("sample", tmp_path / "mc", ("per_image.csv",))):
        command = (["evaluate", "--pred", str(workspace / "pred"), "--data",
                    str(workspace / "data" / "test"), "--out", str(out)] if verb == "evaluate"
                   else ["sample", "--checkpoint", str(workspace / "runs" / "gan" / "latest.pt"),
                         "--input", str(workspace / "data" / "test"), "--n", "2",
                         "--out", str(out)])
        if verb == "evaluate" and not (workspace / "pred").is_dir():
            assert _predict(workspace, workspace / "pred") == 0
        assert main(command) == 0  # the command's own folder, then links put in it
        for name in names:
            notes.write_text("my notes")
            (out / name).unlink()
            (out / name).symlink_to(notes)
        assert main(command) == 0
        assert notes.read_text() == "my notes"
        assert all((out / name).is_file() and not (out / name).is_symlink() for name in names)


def test_resume_writes_no_config_or_logs_through_links(workspace, tmp_path, capsys):
    run = _copy_run(workspace, tmp_path)
    notes = tmp_path / "notes.yaml"
    notes.write_text("mine")
    (run / "config.yaml").unlink()
    (run / "config.yaml").symlink_to(notes)
    assert main(["train", "--resume", "--name", "gan", "--checkpoints-dir", str(tmp_path),
                 "--epochs", "3"]) == 0
    assert notes.read_text() == "mine" and not (run / "config.yaml").is_symlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    import shutil

    shutil.rmtree(run / "logs")
    (run / "logs").symlink_to(elsewhere)
    assert main(["train", "--resume", "--name", "gan", "--checkpoints-dir", str(tmp_path),
                 "--epochs", "4"]) == 2
    assert "logs is a symbolic link" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []


def test_export_takes_one_epoch(workspace, tmp_path, capsys):
    import torch

    run = workspace / "runs" / "gan"
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "one"), "--epoch", "1"]) == 0
    assert torch.load(tmp_path / "one" / "latest.pt", weights_only=True)["epoch"] == 1
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "five"), "--epoch", "5"]) == 2
    assert "epoch_005.pt does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--run", str(run), "--out", str(tmp_path / "two"), "--epoch", "1", "1"])
    assert exit_.value.code == 2 and "unrecognized arguments: 1" in capsys.readouterr().err


def test_an_export_with_linked_logs_is_refused_before_latest_is_replaced(workspace, tmp_path,
                                                                       capsys):
    run, shared = workspace / "runs" / "gan", tmp_path / "shared"
    assert main(["export", "--run", str(run), "--out", str(shared)]) == 0
    notes = tmp_path / "notes.yaml"
    notes.write_text("mine")
    (shared / "config.yaml").unlink()
    (shared / "config.yaml").symlink_to(notes)
    assert main(["export", "--run", str(run), "--out", str(shared)]) == 0
    assert notes.read_text() == "mine"
    import shutil

    shutil.rmtree(shared / "logs")
    (shared / "logs").symlink_to(tmp_path)
    latest = (shared / "latest.pt").stat().st_mtime_ns, (shared / "latest.pt").read_bytes()
    assert main(["export", "--run", str(run), "--out", str(shared), "--overwrite"]) == 2
    assert "logs is a symbolic link" in capsys.readouterr().err
    assert ((shared / "latest.pt").stat().st_mtime_ns, (shared / "latest.pt").read_bytes()
            ) == latest


def test_a_second_training_of_one_run_names_the_process_holding_it(workspace, tmp_path,
                                                                  capsys):
    import os

    from pix2pixhd.files import folder_lock

    run = _copy_run(workspace, tmp_path)
    before = _run_files(run)
    with folder_lock(run, "pix2pixhd train --name gan"):
        assert main(["train", "--data", str(workspace / "data"), "--name", "gan",
                     "--checkpoints-dir", str(tmp_path), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"is in use by process {os.getpid()}" in err and "pix2pixhd train --name gan" in err
    assert err.count("\n") == 1 and _run_files(run) == before


def test_sample_bounds_n_and_shows_progress(workspace, tmp_path, capsys, monkeypatch):
    checkpoint = str(workspace / "runs" / "gan" / "latest.pt")
    monkeypatch.setenv("PIX2PIXHD_MEMORY_GIB", "0.004")  # a few samples of 128² fit
    assert main(["sample", "--checkpoint", checkpoint, "--input",
                 str(workspace / "data" / "test"), "--n", "16",
                 "--out", str(tmp_path / "mc")]) == 2
    err = capsys.readouterr().err
    assert "16 samples of 128x128 pixels would take" in err
    assert re.search(r"use --n \d+ or fewer", err)
    assert not (tmp_path / "mc").exists()  # refused before the first image was sampled
    monkeypatch.undo()
    assert main(["sample", "--checkpoint", checkpoint, "--input",
                 str(workspace / "data" / "test"), "--n", "100000000",
                 "--out", str(tmp_path / "mc")]) == 2
    assert "more than 1024" in capsys.readouterr().err
    assert not (tmp_path / "mc").exists()
    assert main(["sample", "--checkpoint", checkpoint, "--input",
                 str(workspace / "data" / "test" / "phase" / "fov_0000.tif"), "--n", "3",
                 "--batch-size", "1", "--out", str(tmp_path / "mc")]) == 0
    assert "MC-dropout batches" in capsys.readouterr().err


def test_bench_refuses_a_size_beyond_its_bound(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--size", "20000"])
    assert "--size: must be at most 2048" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf"])
def test_download_timeout_must_be_positive_seconds(timeout, capsys):
    with pytest.raises(SystemExit):
        main(["data", "download", "--timeout", timeout, "--out", "nowhere"])
    assert "--timeout: must be a number of seconds above 0" in capsys.readouterr().err


def test_unusable_checkpoint_and_output_paths_say_what_they_are(workspace, tmp_path, capsys):
    test = str(workspace / "data" / "test")
    for checkpoint, words in ((workspace / "runs" / "gan", "is a folder; pass the checkpoint "
                                                          "file in it (it holds"),
                              ("/dev/zero", "is not a regular file")):
        assert main(["predict", "--checkpoint", str(checkpoint), "--input", test,
                     "--out", str(tmp_path / "p")]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    assert _predict(workspace, tmp_path / "dangling") == 2
    err = capsys.readouterr().err
    assert "is a symbolic link to" in err and "which does not exist" in err
    assert "File exists" not in err and err.count("\n") == 1


def test_sample_writes_the_virtual_nuclei_and_their_trust(workspace, tmp_path):
    import shutil

    import pandas as pd
    import tifffile

    checkpoint = str(workspace / "runs" / "gan" / "latest.pt")
    test = workspace / "data" / "test"
    assert main(["sample", "--checkpoint", checkpoint, "--input", str(test), "--n", "4",
                 "--out", str(tmp_path / "split")]) == 0
    table = pd.read_csv(tmp_path / "split" / "nuclei_trust.csv")
    assert list(table.columns) == ["fov", "label", "trust", "area", "samples_present", "matched"]
    assert set(table.matched) <= {0, 1}
    assert (table.samples_present <= 4).all()
    # trust is the mean best IoU: at least 0.5 in each sample that draws the nucleus again
    assert ((table.trust >= 0.5 * table.samples_present / 4 - 1e-9) & (table.trust <= 1)).all()
    for fov, rows in table.groupby("fov"):
        labels = tifffile.imread(tmp_path / "split" / "virtual_nuclei" / f"{fov}.tif")
        assert labels.dtype == np.uint16
        assert sorted(rows.label) == sorted(set(np.unique(labels)) - {0})
        assert rows.area.tolist() == [int((labels == label).sum()) for label in rows.label]
    # the baseline beside it: the mean std inside each virtual nucleus
    from pix2pixhd.sampling import read_nuclei_trust

    nuclei = read_nuclei_trust(tmp_path / "split")
    first = nuclei.iloc[-1]
    labels = tifffile.imread(tmp_path / "split" / "virtual_nuclei" / f"{first.fov}.tif")
    std = tifffile.imread(tmp_path / "split" / "std" / f"{first.fov}.tif")
    assert np.isclose(first.mean_std, std[labels == first.label].mean())
    # without ground-truth masks there is nothing to match: no matched column
    unmasked = tmp_path / "unmasked" / "test"
    shutil.copytree(test, unmasked)
    shutil.rmtree(unmasked / "nuclei_masks")
    for source, out in ((unmasked, "nomasks"), (test / "phase", "folder")):
        assert main(["sample", "--checkpoint", checkpoint, "--input", str(source), "--n", "2",
                     "--out", str(tmp_path / out)]) == 0
        columns = pd.read_csv(tmp_path / out / "nuclei_trust.csv").columns
        assert list(columns) == ["fov", "label", "trust", "area", "samples_present"], out
        assert len(list((tmp_path / out / "virtual_nuclei").glob("*.tif"))) == 2


def test_sample_refuses_bad_inputs_in_one_line(workspace, tmp_path, capsys):
    import torch

    checkpoint = workspace / "runs" / "gan" / "latest.pt"
    empty = tmp_path / "empty" / "test"
    (empty / "phase").mkdir(parents=True)
    assert main(["sample", "--checkpoint", str(checkpoint), "--input", str(empty), "--n", "4",
                 "--out", str(tmp_path / "mc")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no phase images" in err, err
    with pytest.raises(SystemExit):
        main(["sample", "--checkpoint", str(checkpoint), "--input", str(empty), "--n", "1",
              "--out", str(tmp_path / "mc")])
    assert "--n: must be at least 2, got 1" in capsys.readouterr().err
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["model"]["dropout_p"] = 0.0  # same layers, nothing dropped
    torch.save(state, tmp_path / "no_dropout.pt")
    assert main(["sample", "--checkpoint", str(tmp_path / "no_dropout.pt"), "--input",
                 str(workspace / "data" / "test"), "--n", "4", "--out",
                 str(tmp_path / "mc")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_dropout.pt has no dropout layer" in err, err
    assert not (tmp_path / "mc").exists()  # refused before anything was written
