"""The exercise's setup: profile, device, folders and models, from the environment.

    course = Course.from_environment()   # PIX2PIXHD_PROFILE, _DATA, _RESULTS, _RUNS, ...
    print(course.describe())
    course.save_figure(fig, "data_examples")   # results/data_examples.png, and shown
    folder = course.predict_test_split("GAN")  # results/predictions/GAN/nuclei/*.tif

The notebook's Part 0 builds one `Course`; every later part reads its folders and models from
it, so a restarted kernel needs Part 0 alone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pix2pixhd import config as configs
from pix2pixhd import layout
from pix2pixhd.checkpoint import CheckpointError
from pix2pixhd.dataset import make_loaders
from pix2pixhd.evaluate import find_predictions
from pix2pixhd.predict import predict_folder
from pix2pixhd.train import starting_discriminator, starting_weights

log = logging.getLogger(__name__)

SIZES = {  # per profile: epochs of your training run (Part 1), test images degraded in Part 4,
    # MC-dropout samples and images (Part 5)
    "quick": {"epochs": 2, "robustness_images": 3, "mc_samples": 16, "mc_images": 4},
    "pretrained": {"epochs": 3, "robustness_images": 3, "mc_samples": 16, "mc_images": 8},
    "course": {"epochs": 10, "robustness_images": 10, "mc_samples": 64, "mc_images": 40},
}
SHIPPED = {  # the models that come with the exercise, trained on the built-in synthetic data
    "GAN": Path("checkpoints/pix2pixhd_nuclei/latest.pt"),
    "regression": Path("checkpoints/regression_nuclei/latest.pt"),
    "VisCy": Path("checkpoints/viscy_nuclei/latest.pt"),
}
PUBLISHED_VISCY = Path("checkpoints/VSCyto2D/epoch=399-step=23200.ckpt")


def choose_profile(device: torch.device, environ: dict | None = None) -> str:
    """PIX2PIXHD_PROFILE, else `course` on a GPU and `quick` on a CPU; an unknown name stops
    with the names there are."""
    environ = os.environ if environ is None else environ
    profile = environ.get("PIX2PIXHD_PROFILE", "course" if device.type == "cuda" else "quick")
    if profile not in SIZES:
        raise ValueError(f"PIX2PIXHD_PROFILE={profile!r} is not a profile; use one of "
                         f"{', '.join(SIZES)} (or leave it unset)")
    return profile


def show_progress_messages() -> None:
    """The package's INFO messages (what it wrote, skipped or chose) on stderr, once: a handler
    of the `pix2pixhd` logger alone, so that the root logger's handlers (Jupyter's, pytest's)
    are left as they are."""
    package = logging.getLogger("pix2pixhd")
    package.setLevel(logging.INFO)
    if not any(getattr(handler, "name", None) == "pix2pixhd" for handler in package.handlers):
        handler = logging.StreamHandler()
        handler.set_name("pix2pixhd")
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        package.addHandler(handler)


def choose_seed(environ: dict) -> int:
    """PIX2PIXHD_SEED (default 0): the seed of numpy, torch and Part 1's training run."""
    text = environ.get("PIX2PIXHD_SEED", "0")
    if not text.isdigit() or int(text) >= 2**32:
        raise ValueError(f"PIX2PIXHD_SEED={text!r} is not a whole number from 0 to 2**32 - 1; "
                         "set it to one, e.g. 1, or leave it unset for 0")
    return int(text)


def models_for(source: str, my_run: Path, environ: dict | None = None
               ) -> tuple[dict[str, Path], dict[str, str]]:
    """({name: checkpoint}, {name: what trained it}) of the models Parts 3-5 score.

    On the synthetic data: the shipped models. On real images: models that saw real images,
    never the synthetic-trained ones (your Part 1 run, or checkpoints named by variables)."""
    environ = os.environ if environ is None else environ
    if source == "synthetic":
        return dict(SHIPPED), dict.fromkeys(SHIPPED, "shipped, trained on the built-in synthetic "
                                                     "data")
    checkpoints = {
        "GAN": Path(environ.get("PIX2PIXHD_GAN_CHECKPOINT", my_run / "latest.pt")),
        "regression": Path(environ.get("PIX2PIXHD_REGRESSION_CHECKPOINT", "absent")),
        "VisCy": Path(environ.get("PIX2PIXHD_VISCY_CHECKPOINT", PUBLISHED_VISCY)),
    }
    trained_on = {
        "GAN": ("named by PIX2PIXHD_GAN_CHECKPOINT" if "PIX2PIXHD_GAN_CHECKPOINT" in environ
                else "yours, trained in Part 1 on this data"),
        "regression": "named by PIX2PIXHD_REGRESSION_CHECKPOINT",
        "VisCy": "VisCy's published VSCyto2D, trained by VisCy on A549, HEK293T and BJ-5ta",
    }
    return checkpoints, trained_on


@dataclass
class Course:
    """Where this session's data, results and runs live, which device and profile it uses,
    and which models Parts 3-5 score."""

    device: torch.device
    profile: str
    data: Path
    results: Path
    runs: Path
    source: str
    pretrained: dict[str, Path]
    trained_on: dict[str, str]
    config: configs.Config = field(repr=False)

    @classmethod
    def from_environment(cls, environ: dict | None = None) -> Course:
        """Read PIX2PIXHD_PROFILE, _DATA (data), _RESULTS (results), _RUNS (runs), _SEED (0) and
        the checkpoint variables; check that the data set is there; seed numpy, torch and the
        training run; show the module's progress messages (logging at INFO)."""
        show_progress_messages()
        environ = os.environ if environ is None else environ
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        profile = choose_profile(device, environ)
        data = Path(environ.get("PIX2PIXHD_DATA", "data"))
        runs = Path(environ.get("PIX2PIXHD_RUNS", "runs"))
        source = layout.read_dataset_json(data).get("source", "unknown")  # names the fix if absent
        pretrained, trained_on = models_for(source, runs / "my_gan", environ)
        results = Path(environ.get("PIX2PIXHD_RESULTS", "results"))
        results.mkdir(parents=True, exist_ok=True)
        seed = choose_seed(environ)
        torch.manual_seed(seed)
        np.random.seed(seed)
        config = configs.apply_overrides(configs.load_config(profile), [
            f"data.root={data}", "data.num_workers=0", f"train.seed={seed}"])
        return cls(device, profile, data, results, runs, source, pretrained, trained_on, config)

    def part1_start(self, config: configs.Config) -> list[str]:
        """The overrides that start Part 1's GAN under `config`: G from the shipped regression
        model, and D from the shipped GAN's discriminator where its checkpoint keeps one, each
        only where it fits `config` (same shapes, same stains) on the built-in data; [] (random
        weights) elsewhere, e.g. for the `course` profile's larger networks or a membrane target.

        A few minutes of GAN training from scratch on a CPU learn where nuclei are, not what
        they look like. From the regression model's weights the adversarial loss only has to
        add the texture that the L1 loss averaged away, and a D that has judged a long run
        already knows that texture; with a fresh D a short run hardly adds it
        (`docs/recipe.md`)."""
        if self.source != "synthetic":
            return []
        starts = []
        for option, path, check in (
                ("train.init_generator", SHIPPED["regression"], starting_weights),
                ("train.init_discriminator", SHIPPED["GAN"], starting_discriminator)):
            try:  # the Trainer's own checks of a start
                check(configs.apply_overrides(config, [f"{option}={path}"]), torch.device("cpu"))
            except (configs.ConfigError, CheckpointError):  # also a missing file
                break  # D starts only beside a started G: a trained D would crush a random G
            starts.append(f"{option}={path}")
        return starts

    @property
    def sizes(self) -> dict[str, int]:
        """This profile's epochs (Part 1), degraded test images (Part 4), MC-dropout samples
        and images (Part 5)."""
        return SIZES[self.profile]

    def describe(self) -> str:
        """Device, profile, data and the models of Parts 3-5, one line each."""
        lines = [f"device {self.device}, profile {self.profile}, data {self.data.resolve()} "
                 f"({self.source})"]
        for name, path in self.pretrained.items():
            state = "" if path.is_file() else " (not there yet)"
            lines.append(f"{name} model for Parts 3-5: {path}{state}, {self.trained_on[name]}")
        return "\n".join(lines)

    # --- what the parts share ----------------------------------------------------------------

    def save_figure(self, figure, name: str) -> Path:
        """Keep the figure as results/<name>.png, show it, and close it."""
        import matplotlib.pyplot as plt

        from pix2pixhd import viz

        path = viz.save_figure(figure, self.results / f"{name}.png")
        plt.show()
        plt.close(figure)
        return path

    def training_batch(self) -> dict:
        """The first batch of this profile's training loader: {"input", "target", ...}."""
        return next(iter(make_loaders(self.config)[0]))

    def read_test_fov(self, fov: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One test field of view: phase (rad), real nuclei stain (a.u.), nuclei labels."""
        return (layout.read_image(layout.image_path(self.data, "test", "phase", fov)),
                layout.read_image(layout.image_path(self.data, "test", "nuclei", fov)),
                layout.read_mask(layout.image_path(self.data, "test", layout.MASKS, fov)))

    def predict_test_split(self, name: str) -> Path:
        """A model's stains for every test image, in results/predictions/<name>/nuclei/;
        predictions newer than the model are reused."""
        checkpoint = self.pretrained[name]
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"no {name} model at {checkpoint}: on real data, train yours in Part 1 or name "
                f"a checkpoint trained on this data with PIX2PIXHD_{name.upper()}_CHECKPOINT")
        folder = self.results / "predictions" / name
        fovs = layout.list_fovs(self.data, "test")
        done = find_predictions(folder) if (folder / "nuclei").is_dir() else {}
        if set(fovs) <= set(done) and min(done[fov].stat().st_mtime for fov in fovs) >= \
                checkpoint.stat().st_mtime:
            print(f"{name}: the {len(fovs)} predictions in {folder} are complete and newer than "
                  "the model; reusing them (delete the folder to predict again)")
            return folder
        predict_folder(checkpoint, self.data / "test", folder, device=self.device)
        return folder


def interactive() -> bool:
    """True in a Jupyter kernel with a person at it; False in scripts and headless runs."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return (shell is not None and "IPKernelApp" in shell.config
            and not os.environ.get("PIX2PIXHD_HEADLESS"))


def show_tensorboard(logdir: str | Path) -> None:
    """TensorBoard inside Jupyter; a hint elsewhere (scripts, headless runs)."""
    if not interactive():
        print(f"to watch the curves: tensorboard --logdir {logdir}")
        return
    from IPython import get_ipython

    shell = get_ipython()
    shell.run_line_magic("load_ext", "tensorboard")
    shell.run_line_magic("tensorboard", f"--logdir {logdir}")


def choose_run(run_dir: Path) -> tuple[Path, bool]:
    """(run folder, resume?): a folder that holds a run is resumed or left alone, never
    overwritten; a new name is asked for in Jupyter, and resuming is the default elsewhere."""
    if not (run_dir / "latest.pt").is_file():
        return run_dir, False
    if not interactive():
        print(f"{run_dir} holds a run already: resuming it (a finished run trains no further; "
              "run this cell in Jupyter to be offered a new name instead)")
        return run_dir, True
    while True:
        answer = input(f"{run_dir} holds a run. Press Enter to resume it, or type a new name "
                       "for a new run: ").strip()
        if not answer:
            return run_dir, True
        candidate = run_dir.parent / answer
        if candidate.name == answer and not (candidate / "latest.pt").exists():
            return candidate, False
        print(f"{answer!r} is taken or not a plain folder name; try another")
