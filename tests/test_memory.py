"""memory.py: each estimate is within a factor of 1.5 of the peak it predicts, measured in a
fresh process on two sizes, and a command over budget is refused before it reads pixels."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pix2pixhd import memory
from pix2pixhd.checkpoint import load_checkpoint
from pix2pixhd.predict import default_tile_size, load_predictor

ROOT = Path(__file__).resolve().parents[1]

MEASURE = """
import json

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

{setup}
with open("/proc/self/clear_refs", "w") as refs:  # the peak so far (imports) is not the work's
    refs.write("5")
before = status("VmRSS:")
{work}
print(json.dumps({{"extra": status("VmHWM:") - before}}))
"""
"""The peak is the process's VmHWM, the high-water mark of its resident memory, the number
getrusage's ru_maxrss reports for a process that was not started by a larger one: a child's
ru_maxrss starts at the size of the process that started it (Linux carries it over exec), so
under pytest it would read the test runner's size. clear_refs resets VmHWM to what is resident
now."""


def measured_extra_bytes(setup: str, work: str) -> float:
    """The peak resident memory of `work`, above what the process held before it."""
    result = subprocess.run(
        [sys.executable, "-c", MEASURE.format(setup=setup, work=work)], cwd=ROOT,
        capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                            "PATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])["extra"]


def _phase_image(path: Path, side: int) -> Path:
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.normal(0, 1, (side, side)).astype(np.float32))
    return path


@pytest.mark.parametrize("side", [1536, 2048])
def test_the_predict_estimate_is_within_half_again_of_its_measured_peak(
        checkpoint, tmp_path, side):
    image = _phase_image(tmp_path / "phase.tif", side)
    generator = load_predictor(checkpoint)[0]
    tile_size = default_tile_size(generator, (side, side))  # as predict_folder tiles it
    estimate = memory.predict_bytes((side, side), channels=1, tile_size=tile_size,
                                    activation_bytes_per_pixel=memory.inference_bytes_per_pixel(
                                        generator))
    small = _phase_image(tmp_path / "small.tif", 64)
    extra = measured_extra_bytes(
        "import torch; torch.set_num_threads(1)\n"
        "from pix2pixhd.predict import predict_folder\n"  # imports and first calls: not counted
        f"predict_folder({str(checkpoint)!r}, {str(small)!r}, {str(tmp_path / 'warm')!r})",
        f"predict_folder({str(checkpoint)!r}, {str(image)!r}, {str(tmp_path / 'out')!r})")
    print(f"predict {side}x{side}: estimate {estimate / 2**20:.0f} MiB, "
          f"measured {extra / 2**20:.0f} MiB")
    assert extra / 1.5 <= estimate <= extra * 1.5, (estimate, extra)


def _huge_tiff(path: Path, side: int) -> Path:
    """A real TIFF of side x side float32 pixels that takes no disk space (a sparse file)."""
    tifffile.imwrite(path, shape=(side, side), dtype="float32")
    return path


def test_predict_refuses_an_image_over_budget_from_its_header(checkpoint, tmp_path):
    from pix2pixhd.predict import predict_folder

    image = _huge_tiff(tmp_path / "huge.tif", 30000)
    crop = load_checkpoint(checkpoint)["config"]["data"]["crop_size"]
    with pytest.raises(memory.MemoryBudgetError,
                       match=rf"huge.tif \(30000x30000 pixels, tiles of {crop}\) would take about "
                             r"2\d\.\d GiB .* 8 GiB budget; split the image"):
        predict_folder(checkpoint, image, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(memory.BUDGET_ENV, "0.5")
    assert memory.budget_bytes() == 2**29
    with pytest.raises(memory.MemoryBudgetError, match="1.0 GiB .* than the 0.5 GiB budget; fix"):
        memory.check_budget("x", 2**30, "fix")
    monkeypatch.setenv(memory.BUDGET_ENV, "lots")
    with pytest.raises(memory.MemoryBudgetError, match="PIX2PIXHD_MEMORY_GIB='lots' is not"):
        memory.budget_bytes()


@pytest.mark.parametrize("side", [256, 512])
def test_the_sample_estimate_is_within_half_again_of_its_measured_peak(
        checkpoint, tmp_path, side):
    n, batch_size = 24, 4
    image = _phase_image(tmp_path / "phase.tif", side)
    generator = load_predictor(checkpoint)[0]
    estimate = memory.sample_bytes(
        (side, side), n=n, channels=1, tile_size=1024, batch_size=batch_size,
        activation_bytes_per_pixel=memory.inference_bytes_per_pixel(generator))
    small = _phase_image(tmp_path / "small.tif", 64)
    extra = measured_extra_bytes(
        "import torch; torch.set_num_threads(1)\n"
        "from pix2pixhd.sampling import sample_folder\n"
        f"sample_folder({str(checkpoint)!r}, {str(small)!r}, {str(tmp_path / 'warm')!r}, n=3)",
        f"sample_folder({str(checkpoint)!r}, {str(image)!r}, {str(tmp_path / 'out')!r}, n={n}, "
        f"batch_size={batch_size})")
    print(f"sample {side}x{side} n={n}: estimate {estimate / 2**20:.0f} MiB, "
          f"measured {extra / 2**20:.0f} MiB")
    assert extra / 1.5 <= estimate <= extra * 1.5, (estimate, extra)


def test_sample_refuses_what_its_old_estimate_let_through(checkpoint, tmp_path):
    """4096x4096 with --n 30 peaked at 11.7 GB when only the samples were counted (5.6 GiB)."""
    from pix2pixhd.sampling import sample_folder

    image = _huge_tiff(tmp_path / "big.tif", 4096)
    with pytest.raises(memory.MemoryBudgetError,
                       match=r"30 samples of 4096x4096 pixels would take about 1\d\.\d GiB .*; "
                             r"use --n 2\d or fewer"):
        sample_folder(checkpoint, image, tmp_path / "out", n=30)
    assert not (tmp_path / "out").exists()


def _split(root: Path, side: int) -> Path:
    """A test split of one field of view: square nuclei on noise, and their masks."""
    rng = np.random.default_rng(0)
    labels = np.zeros((side, side), np.uint16)
    for label, (y, x) in enumerate(rng.integers(0, side - 16, size=(side // 8, 2)), start=1):
        labels[y:y + 12, x:x + 12] = label
    stain = np.where(labels > 0, 1000.0, 100.0) + rng.normal(0, 10, labels.shape)
    for folder, image in (("nuclei", stain.astype(np.float32)), ("nuclei_masks", labels)):
        (root / "test" / folder).mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "test" / folder / "fov.tif", image)
    (root / "pred").mkdir()
    tifffile.imwrite(root / "pred" / "fov.tif", (stain * 0.9).astype(np.float32))
    return root


@pytest.mark.parametrize("side", [512, 1024])
def test_the_evaluate_estimate_is_within_half_again_of_its_measured_peak(tmp_path, side):
    root = _split(tmp_path / "big", side)
    warm = _split(tmp_path / "warm", 128)
    estimate = memory.evaluate_bytes((side, side))
    extra = measured_extra_bytes(
        "from pix2pixhd.evaluate import evaluate_predictions\n"
        f"evaluate_predictions({str(warm / 'pred')!r}, {str(warm / 'test')!r}, progress=False)",
        f"evaluate_predictions({str(root / 'pred')!r}, {str(root / 'test')!r}, progress=False)")
    print(f"evaluate {side}x{side}: estimate {estimate / 2**20:.0f} MiB, "
          f"measured {extra / 2**20:.0f} MiB")
    assert extra / 1.5 <= estimate <= extra * 1.5, (estimate, extra)


def test_evaluate_refuses_a_field_of_view_over_budget_from_its_header(tmp_path):
    from pix2pixhd.evaluate import evaluate_predictions

    (tmp_path / "test" / "nuclei").mkdir(parents=True)
    (tmp_path / "pred").mkdir()
    _huge_tiff(tmp_path / "test" / "nuclei" / "fov.tif", 30000)
    _huge_tiff(tmp_path / "pred" / "fov.tif", 30000)
    with pytest.raises(memory.MemoryBudgetError,
                       match=r"fov.tif \(30000x30000 pixels\) would take about \d+\.\d GiB .*; "
                             "evaluate crops of it"):
        evaluate_predictions(tmp_path / "pred", tmp_path / "test", progress=False)


@pytest.mark.parametrize("size", [192, 384])
def test_the_bench_estimate_is_within_half_again_of_its_measured_peak(tiny_config, size):
    from pix2pixhd.models import training_activations

    batch = 4
    elements, _ = training_activations(tiny_config, size)
    estimate = memory.training_step_bytes(batch=batch, elements_per_crop=elements,
                                          crop_size=size, channels=1)
    from .conftest import TINY

    setup = ("import torch; torch.set_num_threads(1)\n"
             "from pix2pixhd.bench import run_benchmark\n"
             "from pix2pixhd.config import apply_overrides, load_config\n"
             f"config = apply_overrides(load_config('quick'), {TINY!r} + ['train.device=cpu'])\n"
             "run_benchmark(config, batch=1, size=32, warmup=0, repeats=1, mc_samples=2)")
    extra = measured_extra_bytes(setup, f"run_benchmark(config, batch={batch}, size={size}, "
                                        "warmup=0, repeats=1, mc_samples=2)")
    print(f"bench batch {batch} size {size}: estimate {estimate / 2**20:.0f} MiB, "
          f"measured {extra / 2**20:.0f} MiB")
    assert extra / 1.5 <= estimate <= extra * 1.5, (estimate, extra)
