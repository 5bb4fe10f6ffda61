"""course.py: the exercise's setup from the environment, which the notebook's Part 0 calls."""

import re
from pathlib import Path

import pytest
import torch

from pix2pixhd.checkpoint import load_checkpoint
from pix2pixhd.config import apply_overrides
from pix2pixhd.course import (
    SHIPPED,
    SIZES,
    Course,
    choose_profile,
    choose_run,
    choose_seed,
    models_for,
)

CPU, GPU = torch.device("cpu"), torch.device("cuda")


def test_the_profile_suits_the_device_unless_the_environment_names_one():
    assert choose_profile(CPU, {}) == "quick"
    assert choose_profile(GPU, {}) == "course"
    assert choose_profile(CPU, {"PIX2PIXHD_PROFILE": "pretrained"}) == "pretrained"


def test_an_unknown_profile_is_refused_with_the_profiles_there_are():
    with pytest.raises(ValueError) as raised:
        choose_profile(CPU, {"PIX2PIXHD_PROFILE": "fast"})
    assert all(name in str(raised.value) for name in ("'fast'", *SIZES))


def test_synthetic_data_scores_the_shipped_models_and_real_data_never_does(tmp_path):
    models, trained_on = models_for("synthetic", tmp_path / "my_gan", {})
    assert models == SHIPPED and set(trained_on) == set(SHIPPED)
    models, trained_on = models_for("a549", tmp_path / "my_gan",
                                    {"PIX2PIXHD_REGRESSION_CHECKPOINT": "mine.pt"})
    assert models["GAN"] == tmp_path / "my_gan" / "latest.pt"
    assert models["regression"] == Path("mine.pt")
    assert not set(models.values()) & set(SHIPPED.values())
    assert "Part 1" in trained_on["GAN"]


def test_course_reads_its_folders_and_profile_from_the_environment(tiny_dataset, tmp_path):
    environ = {"PIX2PIXHD_DATA": str(tiny_dataset), "PIX2PIXHD_RESULTS": str(tmp_path / "res"),
               "PIX2PIXHD_RUNS": str(tmp_path / "runs"), "PIX2PIXHD_PROFILE": "quick"}
    course = Course.from_environment(environ)
    assert (course.profile, course.data, course.runs) == ("quick", tiny_dataset, tmp_path / "runs")
    assert course.results.is_dir() and course.sizes == SIZES["quick"]
    assert Path(course.config.data.root) == tiny_dataset and course.config.data.num_workers == 0
    assert course.source == "synthetic" and "profile quick" in course.describe()
    phase, stain, labels = course.read_test_fov("fov_0000")
    assert phase.shape == stain.shape == labels.shape
    course.pretrained = {"GAN": tmp_path / "absent.pt"}
    with pytest.raises(FileNotFoundError, match="PIX2PIXHD_GAN_CHECKPOINT"):
        course.predict_test_split("GAN")


def test_course_without_data_says_how_to_get_it(tmp_path):
    from pix2pixhd.layout import HOW_TO_GET_DATA, DataError

    with pytest.raises(DataError, match="does not exist") as raised:
        Course.from_environment({"PIX2PIXHD_DATA": str(tmp_path / "nothing"),
                                 "PIX2PIXHD_RESULTS": str(tmp_path / "res")})
    assert HOW_TO_GET_DATA in str(raised.value)


def test_a_new_run_starts_and_an_existing_one_resumes_outside_jupyter(tmp_path, capsys):
    assert choose_run(tmp_path / "my_gan") == (tmp_path / "my_gan", False)
    (tmp_path / "my_gan").mkdir()
    (tmp_path / "my_gan" / "latest.pt").write_bytes(b"")
    assert choose_run(tmp_path / "my_gan") == (tmp_path / "my_gan", True)
    assert "resuming it" in capsys.readouterr().out


def test_the_package_lends_every_public_name_from_its_module():
    import importlib

    import pix2pixhd

    for module, names in pix2pixhd.PUBLIC.items():
        for name in names:
            assert getattr(pix2pixhd, name) is getattr(
                importlib.import_module(f"pix2pixhd.{module}"), name), name
    with pytest.raises(AttributeError):
        pix2pixhd.no_such_name  # noqa: B018


def test_the_seed_comes_from_the_environment_and_a_bad_one_is_named():
    assert choose_seed({}) == 0 and choose_seed({"PIX2PIXHD_SEED": "2"}) == 2
    for bad in ("-1", "1.5", "two", str(2**32)):
        with pytest.raises(ValueError, match=f"PIX2PIXHD_SEED='{re.escape(bad)}'"):
            choose_seed({"PIX2PIXHD_SEED": bad})


def test_part_1_starts_from_the_shipped_regression_model_only_where_it_fits(tiny_dataset,
                                                                             tmp_path):
    environ = {"PIX2PIXHD_DATA": str(tiny_dataset), "PIX2PIXHD_RESULTS": str(tmp_path / "res"),
               "PIX2PIXHD_RUNS": str(tmp_path / "runs"), "PIX2PIXHD_SEED": "3"}
    quick = Course.from_environment(environ | {"PIX2PIXHD_PROFILE": "quick"})
    assert quick.config.train.seed == 3
    # the shipped regression model has quick's generator and stains; D starts from the shipped
    # GAN's discriminator only where its checkpoint keeps one
    g_start = f"train.init_generator={SHIPPED['regression']}"
    kept = load_checkpoint(SHIPPED["GAN"])["discriminator"] is not None
    d_start = [f"train.init_discriminator={SHIPPED['GAN']}"] if kept else []
    assert quick.part1_start(quick.config) == [g_start, *d_start]
    membrane = apply_overrides(quick.config, ["data.target_channels=[membrane]"])
    assert quick.part1_start(membrane) == []  # another stain: a fresh start
    course = Course.from_environment(environ | {"PIX2PIXHD_PROFILE": "course"})
    assert course.part1_start(course.config) == []  # larger networks start afresh
    quick.source = "a549"
    assert quick.part1_start(quick.config) == []  # real images: not a synthetic stain's model


def test_part_1s_discriminator_starts_from_the_shipped_gans_where_it_kept_one(
        tiny_dataset, tmp_path, monkeypatch):
    """The shipped GAN with a discriminator of quick's shape put in, as `export
    --keep-discriminator` writes it; and one whose D has another shape."""
    from pix2pixhd import course as course_module
    from pix2pixhd.checkpoint import save_checkpoint
    from pix2pixhd.models import make_discriminator

    environ = {"PIX2PIXHD_DATA": str(tiny_dataset), "PIX2PIXHD_RUNS": str(tmp_path / "runs"),
               "PIX2PIXHD_RESULTS": str(tmp_path / "results"), "PIX2PIXHD_PROFILE": "quick"}
    quick = Course.from_environment(environ)
    state = load_checkpoint(SHIPPED["GAN"])
    state["discriminator"] = make_discriminator(quick.config).state_dict()
    save_checkpoint(tmp_path / "gan.pt", state)
    narrow = apply_overrides(quick.config, ["model.ndf=8"])
    state["discriminator"] = make_discriminator(narrow).state_dict()
    save_checkpoint(tmp_path / "narrow_gan.pt", state)

    monkeypatch.setitem(course_module.SHIPPED, "GAN", tmp_path / "gan.pt")
    assert quick.part1_start(quick.config) == [
        f"train.init_generator={SHIPPED['regression']}",
        f"train.init_discriminator={tmp_path / 'gan.pt'}"]
    monkeypatch.setitem(course_module.SHIPPED, "GAN", tmp_path / "narrow_gan.pt")
    assert quick.part1_start(quick.config) == [f"train.init_generator={SHIPPED['regression']}"]
    monkeypatch.setitem(course_module.SHIPPED, "regression", tmp_path / "missing.pt")
    monkeypatch.setitem(course_module.SHIPPED, "GAN", tmp_path / "gan.pt")
    assert quick.part1_start(quick.config) == []  # no G start: no D start either


def test_progress_messages_get_one_handler_and_leave_the_root_loggers_alone():
    import logging

    from pix2pixhd.course import show_progress_messages

    root_handlers = list(logging.getLogger().handlers)
    show_progress_messages()
    show_progress_messages()
    package = logging.getLogger("pix2pixhd")
    assert [h.name for h in package.handlers].count("pix2pixhd") == 1
    assert package.getEffectiveLevel() == logging.INFO
    assert logging.getLogger().handlers == root_handlers
