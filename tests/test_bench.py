"""The benchmark's run estimate: it times the trainer's own steps and leaves the run as it was."""

import re
import tempfile
import time
from pathlib import Path

import pytest
import torch

from pix2pixhd.bench import estimate_run_seconds, run_benchmark
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


def test_a_batch_beyond_the_memory_budget_is_refused_before_anything_is_made(capsys):
    from pix2pixhd.cli import main

    started = time.perf_counter()
    assert main(["bench", "--batch", "100000", "--size", "2048"]) == 2
    err = capsys.readouterr().err
    assert "bench --batch 100000 --size 2048 would take about" in err
    assert "GiB budget; use a smaller --size" in err and err.count("\n") == 1
    assert main(["bench", "--batch", "100000", "--size", "256"]) == 2
    assert re.search(r"GiB budget; use --batch \d+ or fewer", capsys.readouterr().err)
    assert time.perf_counter() - started < 20


def _bench_folders() -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob("pix2pixhd-bench-*"))


def test_the_benchmark_leaves_no_temporary_folder(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    results = run_benchmark(tiny_config, batch=1, size=32, warmup=0, repeats=1, mc_samples=2)
    assert results["seconds_per_step"]["step"] > 0
    assert _bench_folders() == []


def test_an_interrupted_benchmark_leaves_no_temporary_folder(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def interrupt(*_, **__):
        assert len(_bench_folders()) == 1  # made, and in use
        raise KeyboardInterrupt

    monkeypatch.setattr("pix2pixhd.bench.median_seconds", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(tiny_config, batch=1, size=32, warmup=0, repeats=1)
    assert _bench_folders() == []
