import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from pix2pixhd.logs import plot_scalars, read_images, read_scalars, smooth  # noqa: E402


def write_run(logdir, steps, offset=0.0):
    writer = SummaryWriter(logdir)
    for step in steps:
        writer.add_scalar("loss/D_real", 1.0 / (step + 1) + offset, step)
        writer.add_scalar("val/psnr", 20.0 + step + offset, step)
    writer.close()


def test_read_scalars_returns_what_was_written(tmp_path):
    write_run(tmp_path, range(5))
    table = read_scalars(tmp_path)
    d_real = table[table.tag == "loss/D_real"]
    assert list(d_real.step) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(d_real.value, [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5], rtol=1e-6)
    assert set(table.tag) == {"loss/D_real", "val/psnr"}


def test_a_resumed_run_keeps_the_later_value_of_repeated_steps(tmp_path):
    write_run(tmp_path, range(4))
    write_run(tmp_path, range(2, 6), offset=100.0)  # the resume rewrites steps 2 and 3
    psnr = read_scalars(tmp_path).query("tag == 'val/psnr'")
    assert list(psnr.step) == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(psnr.value, [20, 21, 122, 123, 124, 125])


def test_smoothing_of_a_constant_is_the_constant_and_zero_weight_is_identity():
    np.testing.assert_allclose(smooth(np.full(10, 3.0), 0.9), 3.0)
    values = np.random.default_rng(0).normal(size=20)
    np.testing.assert_allclose(smooth(values, 0.0), values)


def test_plot_names_missing_tags(tmp_path):
    write_run(tmp_path, range(3))
    table = read_scalars(tmp_path)
    assert len(plot_scalars(table, ["val/psnr"], smoothing=0.5).lines) == 2
    with pytest.raises(KeyError, match="val/psnr"):
        plot_scalars(table, ["loss/G_GAN"])


def test_no_event_files_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        read_scalars(tmp_path)


def test_add_scalars_series_are_all_read_with_their_run(tmp_path):
    """add_scalars puts each series in a sub-folder under one tag; none may be dropped."""
    writer = SummaryWriter(tmp_path)
    for step in range(3):
        writer.add_scalars("PSNR", {"train": 30.0 + step, "validation": 20.0 + step}, step)
        writer.add_scalar("lr", 0.1, step)
    writer.close()
    table = read_scalars(tmp_path)
    psnr = table[table.tag == "PSNR"]
    assert sorted(psnr.run.unique()) == ["PSNR_train", "PSNR_validation"]
    for run, start in (("PSNR_train", 30.0), ("PSNR_validation", 20.0)):
        series = psnr[psnr.run == run]
        assert list(series.step) == [0, 1, 2]
        np.testing.assert_allclose(series.value, [start, start + 1, start + 2])
    assert list(table[table.tag == "lr"].run.unique()) == [""]
    lines = plot_scalars(table, ["PSNR"]).get_lines()
    assert {line.get_label() for line in lines} == {"PSNR (PSNR_train)", "PSNR (PSNR_validation)"}


def write_images(logdir, steps, seed):
    """uint8 (3, 12, 20) images at `steps` (SummaryWriter stores uint8 unscaled); returns them."""
    rng = np.random.default_rng(seed)
    images = {step: rng.integers(0, 256, size=(3, 12, 20), dtype=np.uint8) for step in steps}
    writer = SummaryWriter(logdir)
    for step, image in images.items():
        writer.add_image("val/phase_target_prediction", image, step)
        writer.add_scalar("val/psnr", 20.0, step)
    writer.close()
    return images


def test_read_images_returns_the_logged_pixels_in_step_order(tmp_path):
    written = write_images(tmp_path, [30, 10, 20], seed=0)
    read = read_images(tmp_path)
    assert [step for step, _ in read] == [10, 20, 30]
    for step, image in read:
        np.testing.assert_array_equal(image, written[step].transpose(1, 2, 0))


def test_read_images_of_a_resumed_run_keep_the_later_image(tmp_path):
    import time

    write_images(tmp_path, [1, 2], seed=0)
    time.sleep(1.1)  # event file names hold the second they were opened
    later = write_images(tmp_path, [2, 3], seed=1)
    read = dict(read_images(tmp_path))
    assert sorted(read) == [1, 2, 3]
    np.testing.assert_array_equal(read[2], later[2].transpose(1, 2, 0))


def test_read_images_names_the_tags_there_are(tmp_path):
    write_images(tmp_path, [0], seed=0)
    with pytest.raises(KeyError, match="val/phase_target_prediction"):
        read_images(tmp_path, tag="train/grid")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        read_images(tmp_path / "empty")


def test_trends_read_per_epoch_means_and_say_which_way_a_curve_goes(tmp_path):
    import pandas as pd

    from pix2pixhd.logs import curve, trends

    rows = [("", "epoch/loss/G_GAN", step, 2.0 - step / 10) for step in range(20)]
    rows += [("", "loss/G_GAN", step, 99.0) for step in range(20)]  # per step: not read
    rows += [("", "val/psnr", step, 30.0) for step in range(20)]
    table = pd.DataFrame(rows, columns=["run", "tag", "step", "value"])
    assert curve(table, "loss/G_GAN").iloc[0] == 2.0
    found = trends(table, ["loss/G_GAN", "val/psnr"])
    assert found.loc["loss/G_GAN", "first tenth"] == pytest.approx(1.95)
    assert found.loc["loss/G_GAN", "last tenth"] == pytest.approx(0.15)
    assert list(found.trend) == ["falls", "flat"]
    with pytest.raises(KeyError, match="val/ssim"):
        curve(table, "val/ssim")
