"""Numbers the notebook's text quotes agree with the files they come from (fast: no model runs)."""

import re
from pathlib import Path

import pytest

from pix2pixhd import config as configs
from pix2pixhd import course, logs

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_LOGS = {name: ROOT / path.parent / "logs" for name, path in course.SHIPPED.items()}


def markdown(starting_with: str) -> str:
    """The markdown cell of solution.py that begins with `starting_with`, as one line of text."""
    text = (ROOT / "solution.py").read_text()
    start = text.index(starting_with)
    end = text.find("\n# %%", start)
    lines = text[start:end if end > 0 else None].splitlines()
    return " ".join(line.removeprefix("#").strip() for line in lines)


def test_part_0_states_the_pretrained_recipe_as_the_presets_define_it():
    quick, pretrained = configs.load_config("quick"), configs.load_config("pretrained")
    text = markdown("# ## Part 0: setup")
    said = re.search(r"trained for (\d+) epochs instead of (\d+), its L1 term's blur "
                     r"(\d+) pixels? instead of (\d+)", text)
    assert said, "Part 0 no longer says what the pretrained profile changes"
    assert int(said[1]) == pretrained.train.niter + pretrained.train.niter_decay
    assert int(said[2]) == course.SIZES["quick"]["epochs"]
    assert float(said[3]) == pretrained.loss.l1_blur_sigma
    assert float(said[4]) == quick.loss.l1_blur_sigma
    assert (pretrained.data.crop_size, pretrained.data.batch_size) == (
        quick.data.crop_size, quick.data.batch_size)  # "the quick model": the same crops


@pytest.mark.skipif(not all(folder.is_dir() for folder in SHIPPED_LOGS.values()),
                    reason="the shipped checkpoints' logs are not in this checkout")
def test_part_2_answers_quote_the_shipped_logs():
    answer = markdown("# **Answers.** The numbers are the shipped run's")
    gan = logs.read_scalars(SHIPPED_LOGS["GAN"])
    regression = logs.read_scalars(SHIPPED_LOGS["regression"])
    trends = logs.trends(gan, (*logs.D_OUT_TRAIN_TAGS, *logs.D_OUT_VAL_TAGS, logs.G_GAN_FEAT))
    last = trends["last tenth"]
    quoted = [
        f"{last[logs.D_OUT_TRAIN_REAL]:.2f} on real and {last[logs.D_OUT_TRAIN_FAKE]:.2f} on fake",
        f"({last[logs.D_OUT_VAL_REAL]:.2f} and {last[logs.D_OUT_VAL_FAKE]:.2f} on validation",
        f"({trends['first tenth'][logs.G_GAN_FEAT]:.2f} to {last[logs.G_GAN_FEAT]:.2f})",
    ]
    psnr_gan = logs.curve(gan, logs.VAL_PSNR).iloc[-1]
    psnr_regression = logs.curve(regression, logs.VAL_PSNR).iloc[-1]
    assert psnr_regression > psnr_gan and "regression model's validation PSNR is higher" in answer
    quoted.append(f"({psnr_regression:.2f} dB against {psnr_gan:.2f} dB)")
    ssim = logs.curve(gan, logs.VAL_SSIM)
    quoted.append(f"best at epoch {int(ssim.idxmax()) + 1} ({ssim.max():.3f}), the last epoch "
                  f"scores {ssim.iloc[-1]:.3f}")
    for words in quoted:
        assert words in answer, f"Part 2's answer should say {words!r}"
    if trends["last tenth"][logs.G_GAN_FEAT] < trends["first tenth"][logs.G_GAN_FEAT]:
        assert "Feature matching falls here" in answer


@pytest.mark.skipif(not (ROOT / course.SHIPPED["GAN"]).is_file(),
                    reason="the shipped GAN is not in this checkout")
def test_part_2_names_the_shipped_gans_epoch():
    from pix2pixhd.checkpoint import load_checkpoint

    epoch = load_checkpoint(ROOT / course.SHIPPED["GAN"])["epoch"]
    assert f"The shipped GAN is its last epoch, {epoch}:" in markdown(
        "# **Answers.** The numbers are the shipped run's")


@pytest.mark.parametrize("name", sorted(course.SHIPPED))
def test_each_shipped_model_is_its_runs_last_epoch(name):
    """What a user trains with the documented command is what ships: no selected epoch. The
    GAN and the regression model it is compared with train under the `pretrained` preset
    itself; VisCy keeps its own crops and length (docs/results.md)."""
    from pix2pixhd.checkpoint import load_checkpoint

    path = ROOT / course.SHIPPED[name]
    if not path.is_file():
        pytest.skip(f"{course.SHIPPED[name]} is not in this checkout")
    state = load_checkpoint(path)
    trained, preset = configs.from_dict(state["config"]), configs.load_config("pretrained")
    assert state["epoch"] == trained.train.niter + trained.train.niter_decay
    if name == "VisCy":
        return
    for section, option in [("data", "crop_size"), ("data", "batch_size"), ("train", "niter"),
                            ("train", "niter_decay"), ("train", "seed")]:
        assert getattr(getattr(trained, section), option) == getattr(
            getattr(preset, section), option), f"{name}: {section}.{option}"
