"""The presets by name, as values over `Config`'s defaults: `config.load_config("quick")`.

Every preset starts from the recipe the ablations chose (`docs/recipe.md`, where each value's
measurements are): resize-convolutions and a fixed low-pass at the generator's output (no
checkerboard, no stripes two pixels apart), the asinh stain map (the brightest nuclei stay
within the tanh's reach), a light feature-matching weight (it blurs), and an L1 term on
blurred stains, in the stain's own units, that keeps the nuclei in place and frees their
texture. The model options for `kind: viscy` (`dims`, `encoder_blocks`) come along and are
used only when that kind is chosen.
"""

from __future__ import annotations

import copy
from typing import Any

Values = dict[str, dict[str, Any]]
"""{section: {option: value}}, as a YAML config file holds them."""


def merged(base: Values, changes: Values) -> Values:
    """`base` with `changes` laid over it, section by section; neither is changed."""
    result = copy.deepcopy(base)
    for section, options in changes.items():
        result.setdefault(section, {}).update(copy.deepcopy(options))
    return result


RECIPE: Values = {
    "data": {"stain_map": "asinh"},
    "model": {"upsample": "resize", "lowpass_output": True},
    "loss": {"lambda_feat": 1.0, "lambda_l1": 20.0, "l1_blur_sigma": 3.0, "l1_units": "stain"},
}
"""What the recipe ablation kept (`experiments/ablation.py`, `docs/recipe.md`)."""

QUICK = merged(RECIPE, {
    "data": {"crop_size": 256, "val_crop_size": 256, "batch_size": 1},
    "model": {"ngf": 16, "n_downsample_global": 3, "n_blocks_global": 6, "ndf": 16,
              "dims": [32, 64, 128, 256]},  # kind=viscy: about 3.6 M parameters, not 31 M
    "train": {"niter": 1, "niter_decay": 1, "save_every": 1},
})
"""Small enough for a laptop CPU: a few minutes from the shipped models' weights (Part 1).
Single 256 x 256 crops, as the shipped models trained: G's instance norms learn their
statistics on inputs of the crops' side, and it predicts in tiles of that side; on 128 crops
the GANs drew the brightest nuclei too bright on whole images (`docs/recipe.md`)."""

PRETRAINED = merged(QUICK, {
    "data": {"num_workers": 1},
    "loss": {"l1_blur_sigma": 1.0},
    "train": {"niter": 7, "niter_decay": 8},
})
"""The quick model trained for 15 epochs of 200 steps: the models shipped in git. A 1 px blur
for the GAN's L1 term drew the nuclei most faithfully; the regression and VisCy models have
no such term."""

COURSE = merged(RECIPE, {
    "data": {"crop_size": 512, "batch_size": 4, "num_workers": 8},
    "model": {"ngf": 64, "n_downsample_global": 4, "n_blocks_global": 9, "ndf": 32, "num_D": 3,
              "encoder_blocks": [3, 3, 9, 3],  # kind=viscy: VSCyto2D's sizes, about 31 M
              "dims": [96, 192, 384, 768]},
    "train": {"niter": 50, "niter_decay": 50},
})
"""The course's GPU configuration: the full-size global generator on 512 crops."""

PRESET_VALUES: dict[str, Values] = {"quick": QUICK, "pretrained": PRETRAINED, "course": COURSE}
"""Every preset by name."""
