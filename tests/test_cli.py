"""The command line end to end on a tiny dataset: the verbs, their files and JSON keys."""

import json

import pytest

from pix2pixhd.cli import main

from .conftest import TINY


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    assert main(["data", "synthetic", "--out", str(data), "--n-train", "4", "--n-val", "2",
                 "--n-test", "2", "--size", "128", "--seed", "1"]) == 0
    sets = [item for option in TINY for item in ("--set", option)]
    assert main(["train", "--config", "quick", "--data", str(data), "--name", "gan",
                 "--checkpoints-dir", str(root / "runs"), "--epochs", "1", *sets]) == 0
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


def test_bench_prints_json_with_the_ablations(workspace, capsys):
    sets = [item for option in TINY for item in ("--set", option)]
    assert main(["bench", "--config", "quick", "--batch", "1", "--size", "32", "--warmup", "1",
                 "--repeats", "2", *sets]) == 0
    results = json.loads(capsys.readouterr().out)
    assert {"step", "step_original"} <= set(results["seconds_per_step"])
    assert results["mc_batched_speedup"] > 0


def test_errors_are_one_line_with_a_nonzero_exit(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nothing"), "--checkpoints-dir",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "synthetic" in err
    assert main(["train", "--set", "model.ngf=abc"]) == 2
    assert "model.ngf expects int" in capsys.readouterr().err
