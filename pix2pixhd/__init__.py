"""Virtual staining with Pix2PixHD.

The names a notebook or script needs are importable from here, each from the module that
defines it (loaded on first use, so `import pix2pixhd` stays light):

    from pix2pixhd import Course, Trainer, evaluate_predictions, plot_predictions
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

PUBLIC = {
    "course": ("SHIPPED", "Course", "choose_run", "show_tensorboard"),
    "config": ("apply_overrides", "load_config"),
    "checkpoint": ("CheckpointError", "load_checkpoint"),
    "bench": ("estimate_run_seconds",),
    "dataset": ("make_loaders",),
    "layout": ("MASKS", "image_path", "list_fovs", "read_dataset_json", "read_image",
               "read_mask", "write_image"),
    "normalisation": ("DatasetNormaliser",),
    "models": ("make_discriminator", "make_generator"),
    "networks": ("count_parameters",),
    "losses": ("discriminator_loss", "feature_matching_loss", "gan_loss", "l1_loss"),
    "train": ("Trainer",),
    "predict": ("load_predictor", "predict_folder", "predict_image", "predict_with_tta"),
    "robustness": ("perturb_phase", "robustness_table"),
    "runs": ("provenance_mismatch",),
    "sampling": ("read_nuclei_trust", "sample_folder", "sample_stains"),
    "segmentation": ("segment_nuclei",),
    "metrics": ("COURSE_INSTANCE_METRICS", "ERROR_CAUSES", "SPECTRAL_BANDS", "auroc",
                "band_power_ratio", "error_causes"),
    "evaluate": ("compare_models", "evaluate_predictions", "f1_per_threshold",
                 "find_predictions", "paired_files", "radial_spectra", "write_evaluation"),
    "logs": ("read_images", "read_scalars"),
    "uncertainty": ("reliability_bins", "sparsification_curve", "spearman_uncertainty_error",
                    "uncertainty_maps"),
    "tasks": ("check_crop_around", "check_f1_at_iou", "check_feature_matching",
              "check_gan_step", "check_stain_normalisation", "check_std_and_error_maps",
              "check_trust_threshold"),
    "viz": ("plot_dataset_examples", "plot_f1_vs_threshold", "plot_instance_errors",
            "plot_intensity_histograms", "plot_logged_images", "plot_mc_samples",
            "plot_metric_distributions", "plot_nuclei_trust", "plot_power_spectra",
            "plot_prediction_grid",
            "plot_predictions", "plot_reliability", "plot_robustness",
            "plot_segmentation_overlay", "plot_sparsification", "plot_stain_maps",
            "plot_training_crops", "plot_training_curves", "plot_uncertainty_maps"),
}
"""{module: the names it lends to `from pix2pixhd import ...`}."""

_HOME = {name: module for module, names in PUBLIC.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(f"pix2pixhd.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pix2pixhd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


# The table of model kinds hands `config.validate` each kind's checks when it is imported. It
# sits above `config` (it builds networks), so it is imported here, before any config is read;
# it loads torch only when it builds a network.
from pix2pixhd import models  # noqa: E402, F401
