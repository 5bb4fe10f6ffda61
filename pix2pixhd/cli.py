"""Command line: `python -m pix2pixhd data|train|predict|evaluate|sample|bench ...`.

Each verb parses its options here and calls one function of the module that does the work, so
what the command line does is also one call in the notebook. Heavy imports (torch) happen
inside the verbs, which keeps `--help` fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from pix2pixhd.config import Config, ConfigError, apply_overrides, from_dict, load_config
from pix2pixhd.files import write_atomically
from pix2pixhd.layout import MATCH, DataError, check_output_folder, dataset_json_path, plain_name
from pix2pixhd.normalisation import NORMALISE

log = logging.getLogger("pix2pixhd")


def _data_synthetic(args: argparse.Namespace) -> int:
    from pix2pixhd.synthetic import make_dataset

    make_dataset(
        args.out,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        size=args.size,
        seed=args.seed,
    )
    return 0


def _data_download(args: argparse.Namespace) -> int:
    from pix2pixhd.download import DownloadError, download_dataset, download_viscy_model

    try:
        if args.viscy_model:
            path = download_viscy_model(args.model_dir, timeout=args.timeout)
            print(f"VisCy's VSCyto2D model is in {path}")
            return 0
        download_dataset(args.out, train_url=args.train_url, test_url=args.test_url,
                         timeout=args.timeout, val_fraction=args.val_fraction)
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from pix2pixhd.checks import check_dataset

    problems = check_dataset(args.root, crop_size=args.crop_size,
                             input_channel=args.input_channel)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        print(f"{args.root}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.root}: ok")
    return 0


def _data_statistics(args: argparse.Namespace) -> int:
    from pix2pixhd.normalisation import refresh_dataset_statistics

    print(f"wrote the statistics of {Path(args.root) / 'train'} to "
          f"{refresh_dataset_statistics(args.root)}")
    return 0


def _data_show(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    from pix2pixhd.viz import DPI, plot_dataset_examples

    out = Path(args.out) if args.out else Path(args.root) / "examples.png"
    check_figure_path(out)
    figure = plot_dataset_examples(args.root, split=args.split, n=args.n)
    write_atomically(out, lambda temporary: figure.savefig(
        temporary, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": SHOWN_BY}))
    plt.close(figure)
    print(f"wrote {out}")
    return 0


SHOWN_BY = "pix2pixhd data show"
"""The PNG 'Software' entry of `data show`'s figures: the only files it replaces."""


def check_figure_path(out: Path) -> None:
    """`data show` writes a new PNG, or replaces one it wrote, and never a file of a dataset
    (only ROOT/examples.png, its default, may lie in one)."""
    folder = out.parent.resolve()
    for parent in (folder, *folder.parents):
        if dataset_json_path(parent).is_file() and (parent, out.name) != (folder, "examples.png"):
            raise DataError(f"--out {out} lies inside the dataset {parent}; write the figure "
                            "outside it, or as its examples.png")
    if out.suffix.lower() != ".png":
        raise DataError(f"--out {out} does not end in .png; the examples are a PNG figure")
    if (out.exists() or out.is_symlink()) and _png_software(out) != SHOWN_BY:
        raise DataError(f"--out {out} exists and is not a figure of `data show`; choose "
                        "another path, or move that file away")


def _png_software(path: Path) -> str | None:
    """The 'Software' text of a PNG file, None for anything else."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.info.get("Software") if image.format == "PNG" else None
    except (OSError, ValueError):
        return None


def _train(args: argparse.Namespace) -> int:
    from pix2pixhd.checkpoint import CheckpointError
    from pix2pixhd.train import NonFiniteLossError, run_training

    try:
        config = training_config(args)
        metrics = run_training(config, resume=args.resume, overwrite=args.overwrite)
    except (CheckpointError, NonFiniteLossError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = ", ".join(f"{name} {value:.4g}" for name, value in metrics.items())
    print(f"trained {config.train.name}: {summary or 'nothing left to train'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pix2pixhd.files import folder_lock
    from pix2pixhd.runs import export_run

    with folder_lock(args.out):
        path = export_run(args.run_dir, args.out, keep_discriminator=args.keep_discriminator,
                          overwrite=args.overwrite, epoch=args.epoch)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) and its logs")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pix2pixhd.predict import predict_folder
    from pix2pixhd.train import resolve_device

    written = predict_folder(args.checkpoint, args.input, args.out,
                             device=resolve_device(args.device), tile_size=args.tile_size,
                             overlap=args.overlap, normalise=args.normalise,
                             dataset_root=args.dataset,
                             viscy_config=key_values(args.viscy_config, "--viscy-config"))
    print(f"wrote {len(written)} predictions under {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pix2pixhd.evaluate import SUMMARY_KEYS, evaluate_folder

    check_output_folder(args.out, [args.pred, args.data])
    summary = evaluate_folder(args.pred, args.data, args.out, channel=args.channel,
                              allow_missing=args.allow_missing, match=args.match,
                              pattern=args.name_pattern)
    shown = (*SUMMARY_KEYS, "n_images")
    print(json.dumps({k: summary[k] for k in shown if k in summary}, indent=2))
    print(f"per-image and summary tables in {args.out}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from pix2pixhd.sampling import sample_folder
    from pix2pixhd.train import resolve_device

    check_output_folder(args.out, [args.input, args.calibration])
    summary = sample_folder(args.checkpoint, args.input, args.out, n=args.n, seed=args.seed,
                            batch_size=args.batch_size, calibration=args.calibration,
                            max_images=args.max_images, device=resolve_device(args.device),
                            normalise=args.normalise)
    print(json.dumps(summary, indent=2) if summary else "no targets: maps written, no scores")
    print(f"mean and std maps, virtual nuclei and their trust (nuclei_trust.csv) in {args.out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from pix2pixhd.bench import run_benchmark

    config = apply_overrides(load_config(args.config), args.set)
    results = run_benchmark(config, batch=args.batch, size=args.size, warmup=args.warmup,
                            repeats=args.repeats)
    print(json.dumps(results, indent=2))
    return 0


MAX_BENCH_SIZE = 2048
"""Largest --size of `bench`: its batches are whole images, untiled (predict tiles any size)."""

NORMALISE_HELP = ("scale the phase images by the train split's median and IQR (dataset, as in "
                  "training) or by each image's own (image: for inputs in other units)")

def training_config(args: argparse.Namespace) -> Config:
    """The preset or YAML, or on --resume the run's own saved config; then the flags on top.

    On --resume the run continues in the folder given (or the config's default), never in the
    folder recorded in the checkpoint: a copied run must not advance its original.
    """
    if args.resume:
        from pix2pixhd.checkpoint import load_checkpoint

        defaults = load_config(args.config).train
        name = plain_name(args.name or defaults.name, "run name (--name)")
        folder = Path(args.checkpoints_dir or defaults.checkpoints_dir)
        config = from_dict(load_checkpoint(folder / name / "latest.pt")["config"])
        config.train.name, config.train.checkpoints_dir = name, str(folder)
    else:
        config = load_config(args.config)
    flags = [f"data.root={args.data}"] if args.data else []
    flags += [f"train.name={args.name}"] if args.name else []
    flags += [f"train.checkpoints_dir={args.checkpoints_dir}"] if args.checkpoints_dir else []
    if args.epochs is not None:  # half at the full learning rate, half decaying, as the presets
        flags += [f"train.niter={args.epochs - args.epochs // 2}",
                  f"train.niter_decay={args.epochs // 2}"]
    return apply_overrides(config, flags + args.set)


def key_values(pairs: list[str], option: str) -> dict[str, object]:
    """{"in_stack_depth": 1} from ["in_stack_depth=1"]; values read as YAML (numbers, lists)."""
    import yaml

    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: {option} {pair!r} is not KEY=VALUE")
        values[key.strip()] = yaml.safe_load(value)
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pix2pixhd", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", required=True)

    data = verbs.add_parser("data", help="make, download, check, measure or show a dataset")
    data_verbs = data.add_subparsers(dest="data_verb", required=True)

    synthetic = data_verbs.add_parser("synthetic", help="write the built-in synthetic dataset")
    synthetic.add_argument("--out", default="data")
    synthetic.add_argument("--n-train", type=at_least(1), default=200)
    synthetic.add_argument("--n-val", type=at_least(1), default=40)
    synthetic.add_argument("--n-test", type=at_least(1), default=40)
    synthetic.add_argument("--size", type=at_least(16), default=512,
                           help="side of each image, pixels")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.set_defaults(run=_data_synthetic)

    download = data_verbs.add_parser("download", help="fetch the real A549 dataset")
    download.add_argument("--out", default="data")
    download.add_argument("--timeout", type=positive_seconds, default=10.0,
                          help="seconds per request")
    download.add_argument("--val-fraction", type=float, default=0.15)
    download.add_argument("--train-url", default=None,
                          help="the training plate: http(s) or file:// URL or a path (default "
                          "$PIX2PIXHD_TRAIN_URL, else the published store)")
    download.add_argument("--test-url", default=None,
                          help="the test plate, likewise (default $PIX2PIXHD_TEST_URL)")
    download.add_argument("--viscy-model", action="store_true",
                          help="fetch VisCy's published VSCyto2D checkpoint instead of the data")
    download.add_argument("--model-dir", default=None,
                          help="where --viscy-model puts it (default checkpoints/VSCyto2D)")
    download.set_defaults(run=_data_download)

    check = data_verbs.add_parser("check", help="validate a dataset folder")
    check.add_argument("root", nargs="?", default="data")
    check.add_argument("--crop-size", type=at_least(1), default=None, help="fail on smaller images")
    check.add_argument("--input-channel", default=Config().data.input_channel,
                       help="the channel every field of view must have (data.input_channel)")
    check.set_defaults(run=_data_check)

    statistics = data_verbs.add_parser(
        "statistics", help="measure the train split's normalisation statistics again and write "
        "them into ROOT/dataset.json (for a file written before one of them existed)")
    statistics.add_argument("root", nargs="?", default="data")
    statistics.set_defaults(run=_data_statistics)

    show = data_verbs.add_parser("show", help="write a PNG of example images")
    show.add_argument("root", nargs="?", default="data")
    show.add_argument("--split", default="train")
    show.add_argument("--n", type=at_least(1), default=4, help="fields of view to show")
    show.add_argument("--out", default=None, help="PNG path (default ROOT/examples.png)")
    show.set_defaults(run=_data_show)

    train = verbs.add_parser("train", help="train the GAN or the regression baseline")
    train.add_argument("--config", default="quick",
                       help="preset (quick, pretrained, course) or YAML file (default quick)")
    train.add_argument("--data", help="dataset folder (data.root)")
    train.add_argument("--name", help="run name: checkpoints/<name>/ (train.name)")
    train.add_argument("--epochs", type=at_least(1),
                       help="total epochs, half constant and half decaying learning rate")
    train.add_argument("--checkpoints-dir", help="folder of the runs (train.checkpoints_dir)")
    train.add_argument("--resume", action="store_true",
                       help="continue checkpoints/<name>/latest.pt with its saved config")
    train.add_argument("--overwrite", action="store_true", help="start an existing run again")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="change one option, e.g. --set model.kind=regression (repeatable)")
    train.set_defaults(run=_train)

    export = verbs.add_parser("export", help="a trained run without optimiser states, to share")
    export.add_argument("--run", dest="run_dir", required=True,
                        help="checkpoints/<name> of `train`")
    export.add_argument("--out", required=True)
    export.add_argument("--epoch", type=at_least(1), default=None,
                        help="export the run's epoch_NNN.pt (e.g. one chosen on the validation "
                             "split) instead of latest.pt")
    export.add_argument("--keep-discriminator", action="store_true",
                        help="also keep D's weights (not needed to predict or sample)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace latest.pt, config.yaml and logs/ in a non-empty --out")
    export.set_defaults(run=_export)

    predict = verbs.add_parser("predict", help="virtual stains for phase images of any size")
    predict.add_argument("--checkpoint", required=True,
                         help="a latest.pt of `train`, or a VisCy .ckpt")
    predict.add_argument("--input", required=True,
                         help="a phase TIFF, a folder of them, or a split folder (data/test)")
    predict.add_argument("--out", required=True,
                         help="writes OUT/<channel>/<input's name> and OUT/units.json")
    predict.add_argument("--tile-size", type=at_least(16), default=None,
                         help="larger images go in overlapping tiles of this side (default: "
                         "the side of the model's training crops, the input size its instance "
                         "norms learnt on; for VisCy networks, whose normalisation sees the "
                         "whole input, one pass up to 2048)")
    predict.add_argument("--overlap", type=at_least(0), default=None,
                         help="pixels neighbouring tiles share (default: a quarter of the tile "
                         "side, at most 128)")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--normalise", choices=NORMALISE, default="dataset", help=NORMALISE_HELP)
    predict.add_argument("--dataset", default=None,
                         help="dataset folder whose dataset.json gives a VisCy .ckpt's outputs "
                         "stain units (default: the parent of a split folder)")
    predict.add_argument("--viscy-config", action="append", default=[], metavar="KEY=VALUE",
                         help="a VisCy .ckpt's model_config entry, where its file lacks it "
                         "(repeatable), e.g. in_stack_depth=1")
    predict.set_defaults(run=_predict)

    evaluate = verbs.add_parser("evaluate", help="pixel and nuclei metrics of predictions")
    evaluate.add_argument("--pred", required=True,
                          help="predictions: PRED/<channel>/<fov>.tif or PRED/**/<fov>.tif(f)")
    evaluate.add_argument("--data", required=True, help="the split they predict (data/test)")
    evaluate.add_argument("--out", required=True, help="per_image.csv, summary.csv/json")
    evaluate.add_argument("--channel", default="nuclei")
    evaluate.add_argument("--allow-missing", action="store_true",
                          help="evaluate the FOVs that have predictions, warn about the rest")
    evaluate.add_argument("--match", choices=MATCH, default="name",
                          help="pair predictions with fields of view by name, or by sorted "
                          "order (as the 2024 course notebook did)")
    evaluate.add_argument("--name-pattern", default=None, metavar="REGEX",
                          help="field of view from a prediction's name: the group named fov "
                          "(or the first group), e.g. 'pred_(?P<fov>.*)'")
    evaluate.set_defaults(run=_evaluate)

    sample = verbs.add_parser("sample", help="MC-dropout: many stains per image, uncertainty")
    sample.add_argument("--checkpoint", required=True)
    sample.add_argument("--input", required=True,
                        help="a phase TIFF, a folder, or a split folder (then also scores)")
    sample.add_argument("--n", type=at_least(2), default=16,
                        help="samples per image (at most sampling.MAX_SAMPLES)")
    sample.add_argument("--out", required=True)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--batch-size", type=at_least(1), default=None,
                        help="samples per pass (default 16 on a GPU, 4 on a CPU)")
    sample.add_argument("--calibration", default=None,
                        help="validation split to fit the std scale on (e.g. data/val)")
    sample.add_argument("--max-images", type=at_least(1), default=None)
    sample.add_argument("--device", default="auto")
    sample.add_argument("--normalise", choices=NORMALISE, default="dataset", help=NORMALISE_HELP)
    sample.set_defaults(run=_sample)

    bench = verbs.add_parser("bench", help="time training steps, inference, MC sampling (JSON)")
    bench.add_argument("--config", default="quick")
    bench.add_argument("--batch", type=at_least(1), default=4)
    bench.add_argument("--size", type=at_least(16, MAX_BENCH_SIZE), default=256,
                       help=f"side of the random images, pixels (at most {MAX_BENCH_SIZE})")
    bench.add_argument("--warmup", type=at_least(0), default=3)
    bench.add_argument("--repeats", type=at_least(1), default=10)
    bench.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    bench.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        with logging_redirect_tqdm():  # a warning gets its own line, not the end of a bar
            return args.run(args)
    except (DataError, ValueError, OSError) as error:
        if args.verbose:
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _one_line(error: Exception) -> str:
    """The message of a failed read or write names the file and what to check."""
    if isinstance(error, OSError) and error.filename is not None:
        return (f"cannot use {error.filename}: {error.strerror or error}; check that the path "
                "is a folder you can write to (or a file you can read) and that the disk has "
                "space")
    return str(error)


def at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than `minimum` (counts, sizes, overlaps), and
    no larger than `maximum` where one is given."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    return parse


def positive_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0 (a timeout)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
