"""Draw the concept figures the notebook shows (imgs/*.svg), with matplotlib only.

    python scripts/make_figures.py              # write imgs/*.svg
    python scripts/make_figures.py --png DIR    # also write PNG copies to DIR, to look at them

Three figures: the conditional GAN for virtual staining, Pix2PixHD's coarse-to-fine generator
and its multi-scale discriminator with the feature-matching loss. Each axes is laid out in
inches (1 data unit = 1 inch), so font sizes and box sizes can be planned together. The image
tiles are stylised cells drawn from seeded Gaussian blobs, not data. Output is deterministic:
a fixed SVG hash salt and no date in the metadata, so rebuilding gives identical files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

from pix2pixhd.config import load_config
from pix2pixhd.files import output_path, write_atomically

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "imgs"

GENERATOR = "#3a6fb0"
"""Blue: everything that belongs to the generator."""
GENERATOR_LIGHT = "#dce8f6"
DISCRIMINATOR = "#7b4fa6"
"""Purple: everything that belongs to the discriminator."""
DISCRIMINATOR_LIGHT = "#ece2f5"
REAL = "#2e9a4a"
"""Green: real pairs and their scores."""
FAKE = "#e07b28"
"""Orange: generated (fake) pairs and their scores."""
INK = "#222222"
MUTED = "#666666"
LOSS_BACKGROUND = "#f6f6f6"

NUCLEI_CMAP = LinearSegmentedColormap.from_list("nuclei", ["black", "#d81bd8", "white"])
"""Hoechst-like display: black background, magenta nuclei, white where saturated."""
SCORE_CMAP = LinearSegmentedColormap.from_list("score", [FAKE, "#f7f7f7", REAL])
"""Discriminator score: 0 (fake) orange, 1 (real) green."""

TILE_PIXELS = 64
"""Side of the stylised image tiles in pixels; small keeps the embedded PNGs small."""


# --- stylised images --------------------------------------------------------------------------


def gaussian_blobs(
    centres: np.ndarray, sigmas: np.ndarray, amplitudes: np.ndarray, size: int
) -> np.ndarray:
    """Sum of isotropic Gaussians on a (size, size) grid; centres (N, 2) in pixels (row, col)."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.zeros((size, size))
    for (row, col), sigma, amplitude in zip(centres, sigmas, amplitudes, strict=True):
        image += amplitude * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * sigma**2))
    return image


def spread_centres(rng: np.random.Generator, n: int, size: int, min_distance: float) -> np.ndarray:
    """`n` points (row, col) inside a (size, size) tile, at least `min_distance` apart."""
    centres: list[np.ndarray] = []
    while len(centres) < n:
        candidate = rng.uniform(0.12 * size, 0.88 * size, 2)
        if all(np.hypot(*(candidate - c)) >= min_distance for c in centres):
            centres.append(candidate)
    return np.array(centres)


def make_tiles(seed: int = 5, size: int = TILE_PIXELS) -> dict[str, np.ndarray]:
    """Phase, real stain and a plausible generated stain of the same few stylised cells.

    Returns float arrays (size, size) in [0, 1]. The generated stain keeps most nuclei, changes
    their brightness, misses a dim one and adds a faint one, as a GAN might.
    """
    rng = np.random.default_rng(seed)
    n_cells = 6
    centres = spread_centres(rng, n_cells, size, min_distance=0.25 * size)
    cell_sigma = rng.uniform(0.085, 0.105, n_cells) * size
    nucleus_sigma = rng.uniform(0.035, 0.045, n_cells) * size
    nucleoli = centres + rng.normal(0, 0.015 * size, centres.shape)
    dna = rng.uniform(0.6, 1.0, n_cells)
    dna[1] = 0.35  # a dim nucleus, the one the "generator" misses

    # each cell body is three overlapping blobs around its nucleus: an irregular outline
    lobes = np.repeat(centres, 3, axis=0) + rng.normal(0, 0.055 * size, (3 * n_cells, 2))
    phase = gaussian_blobs(lobes, np.repeat(cell_sigma, 3) * 0.8, np.full(3 * n_cells, 0.2), size)
    phase += gaussian_blobs(centres, cell_sigma, np.full(n_cells, 0.2), size)
    phase += gaussian_blobs(centres, nucleus_sigma, np.full(n_cells, 0.12), size)
    phase += gaussian_blobs(nucleoli, np.full(n_cells, 0.012 * size), np.full(n_cells, 0.12), size)
    phase = 0.22 + phase  # no noise: smooth tiles keep the embedded PNGs small
    stain = gaussian_blobs(centres, nucleus_sigma, dna, size)

    fake_dna = np.clip(dna * rng.uniform(0.8, 1.25, n_cells), 0, 1)
    fake_dna[1] = 0.0
    extra = np.array([[0.1 * size, 0.9 * size]])
    generated = gaussian_blobs(centres + rng.normal(0, 0.6, centres.shape),
                               nucleus_sigma * 0.95, fake_dna, size)
    generated += gaussian_blobs(extra, np.array([0.035 * size]), np.array([0.4]), size)
    return {
        "phase": np.clip(phase, 0, 1),
        "stain": np.clip(stain, 0, 1),
        "generated": np.clip(generated, 0, 1),
    }


def patch_scores(rng: np.random.Generator, n: int, mean: float, spread: float) -> np.ndarray:
    """A (n, n) grid of discriminator scores around `mean`, clipped to [0, 1]."""
    return np.clip(rng.normal(mean, spread, (n, n)), 0, 1)


# --- drawing primitives -----------------------------------------------------------------------


def new_canvas(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure whose single axes spans it, in inches: (0, width) x (0, height)."""
    figure = plt.figure(figsize=(width, height))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, width)
    axes.set_ylim(0, height)
    axes.set_aspect("equal")
    axes.axis("off")
    return figure, axes


def tile(
    axes: Axes,
    image: np.ndarray,
    x: float,
    y: float,
    size: float,
    cmap: str | LinearSegmentedColormap,
    edge: str = INK,
    linewidth: float = 1.0,
    interpolation: str = "bilinear",
) -> None:
    """Show `image` as a square tile, lower-left corner (x, y), side `size` inches.

    interpolation "nearest" keeps pixels as blocks (patch scores); the SVG then embeds the
    array unresampled, which is also the smallest file.
    """
    axes.imshow(image, cmap=cmap, vmin=0, vmax=1, extent=(x, x + size, y, y + size),
                interpolation=interpolation, zorder=3)
    axes.add_patch(Rectangle((x, y), size, size, fill=False, edgecolor=edge,
                             linewidth=linewidth, zorder=4))


def box(
    axes: Axes,
    x: float,
    y: float,
    width: float,
    height: float,
    text: str = "",
    *,
    face: str = "white",
    edge: str = INK,
    color: str = INK,
    fontsize: float = 10,
    weight: str = "normal",
    linewidth: float = 1.2,
    linestyle: str = "-",
    rounding: float = 0.08,
    zorder: float = 2,
) -> None:
    """A rounded box with centred text; (x, y) is the lower-left corner, sizes in inches."""
    axes.add_patch(FancyBboxPatch(
        (x, y), width, height, boxstyle=f"round,pad=0,rounding_size={rounding}",
        facecolor=face, edgecolor=edge, linewidth=linewidth, linestyle=linestyle, zorder=zorder))
    if text:
        axes.text(x + width / 2, y + height / 2, text, ha="center", va="center",
                  fontsize=fontsize, color=color, weight=weight, zorder=zorder + 0.5)


def arrow(
    axes: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    *,
    color: str = INK,
    linewidth: float = 1.4,
    style: str = "-|>",
    connection: str = "arc3",
    linestyle: str = "-",
    zorder: float = 5,
) -> None:
    """An arrow from `start` to `end` (inches), tip at `end`."""
    axes.add_patch(FancyArrowPatch(
        start, end, arrowstyle=style, mutation_scale=12, color=color, linewidth=linewidth,
        connectionstyle=connection, linestyle=linestyle, shrinkA=0, shrinkB=0, zorder=zorder))


def label(axes: Axes, x: float, y: float, text: str, **kwargs: object) -> None:
    """Text in the figure's ink colour; keyword arguments go to `Axes.text`."""
    options: dict[str, object] = {"ha": "center", "va": "center", "fontsize": 10, "color": INK}
    options.update(kwargs)
    axes.text(x, y, text, **options)


def feature_map(
    axes: Axes,
    x: float,
    y_centre: float,
    width: float,
    height: float,
    *,
    face: str,
    edge: str,
    depth: float = 0.08,
    zorder: float = 3,
) -> None:
    """A feature map as a slab: a front rectangle with a hint of depth (channels)."""
    back = Rectangle((x + depth, y_centre - height / 2 + depth), width, height,
                     facecolor=face, edgecolor=edge, linewidth=0.8, zorder=zorder, alpha=0.6)
    front = Rectangle((x, y_centre - height / 2), width, height,
                      facecolor=face, edgecolor=edge, linewidth=1.0, zorder=zorder + 0.1)
    axes.add_patch(back)
    axes.add_patch(front)


# --- figure 1: the conditional GAN ------------------------------------------------------------


def conditional_gan_figure() -> Figure:
    """Generator, discriminator on (input, stain) pairs, patch scores and the two LSGAN losses."""
    tiles = make_tiles()
    figure, axes = new_canvas(12.4, 6.55)
    big, small = 1.45, 0.95
    top_y, bottom_y = 4.6, 2.2  # lower edge of the fake and the real row
    top_mid, bottom_mid = top_y + big / 2, bottom_y + big / 2

    # inputs and generator
    tile(axes, tiles["phase"], 0.35, top_y, big, "gray")
    label(axes, 0.35 + big / 2, top_y + big + 0.22, "phase image $x$", fontsize=11)
    tile(axes, tiles["stain"], 0.35, bottom_y, big, NUCLEI_CMAP, edge=REAL, linewidth=2)
    label(axes, 0.35, bottom_y + big + 0.22, "real stain $y$ (microscope)", fontsize=11,
          color=REAL, ha="left")
    box(axes, 2.35, top_mid - 0.5, 1.6, 1.0, "Generator\n$G$", face=GENERATOR_LIGHT,
        edge=GENERATOR, color=GENERATOR, fontsize=12, weight="bold")
    arrow(axes, (0.35 + big + 0.05, top_mid), (2.35, top_mid))
    tile(axes, tiles["generated"], 4.5, top_y, big, NUCLEI_CMAP, edge=FAKE, linewidth=2)
    label(axes, 4.5 + big / 2, top_y + big + 0.22, "virtual stain $G(x)$", fontsize=11,
          color=FAKE)
    arrow(axes, (3.95, top_mid), (4.45, top_mid), color=GENERATOR)

    # the two pairs the discriminator sees: x and a stain stacked as two channels
    pair_x, pair_w, pair_h = 6.55, 2.35, 1.35
    for mid, stain, colour, name in (
        (top_mid, tiles["generated"], FAKE, "fake pair $(x,\\ G(x))$"),
        (bottom_mid, tiles["stain"], REAL, "real pair $(x,\\ y)$"),
    ):
        frame_y = mid - pair_h / 2
        box(axes, pair_x, frame_y, pair_w, pair_h, edge=colour, linewidth=2.2, rounding=0.1)
        tile(axes, tiles["phase"], pair_x + 0.15, frame_y + 0.2, small, "gray")
        label(axes, pair_x + pair_w / 2, mid, "+", fontsize=13, weight="bold")
        tile(axes, stain, pair_x + pair_w - 0.15 - small, frame_y + 0.2, small, NUCLEI_CMAP)
        label(axes, pair_x + pair_w / 2, frame_y + pair_h + 0.2, name, fontsize=11,
              color=colour, weight="bold")
    label(axes, pair_x + pair_w / 2, top_mid - pair_h / 2 - 0.2,
          "$x$ and a stain, stacked as 2 channels", fontsize=9, color=MUTED, style="italic")
    arrow(axes, (4.5 + big + 0.05, top_mid), (pair_x, top_mid), color=FAKE)
    arrow(axes, (0.35 + big + 0.05, bottom_mid), (pair_x, bottom_mid), color=REAL)

    # discriminator: one network, applied to both pairs
    d_x, d_w, d_h = 9.3, 1.55, 1.5
    d_y = (top_mid + bottom_mid) / 2 - d_h / 2
    box(axes, d_x, d_y, d_w, d_h, "Discriminator\n$D$", face=DISCRIMINATOR_LIGHT,
        edge=DISCRIMINATOR, color=DISCRIMINATOR, fontsize=11.5, weight="bold")
    arrow(axes, (pair_x + pair_w, top_mid), (d_x, d_y + d_h - 0.3), color=FAKE)
    arrow(axes, (pair_x + pair_w, bottom_mid), (d_x, d_y + 0.3), color=REAL)

    # patch maps of scores
    rng = np.random.default_rng(7)
    map_x, map_size = 11.3, 0.9
    for mid, scores, colour, name in (
        (top_mid, patch_scores(rng, 6, 0.3, 0.18), FAKE, "$D(x, G(x))$"),
        (bottom_mid, patch_scores(rng, 6, 0.82, 0.12), REAL, "$D(x, y)$"),
    ):
        map_y = mid - map_size / 2
        tile(axes, scores, map_x, map_y, map_size, SCORE_CMAP, edge=colour, linewidth=2,
             interpolation="nearest")
        label(axes, map_x + map_size / 2, map_y + map_size + 0.2, name, fontsize=11,
              color=colour)
    arrow(axes, (d_x + d_w, d_y + d_h - 0.3), (map_x - 0.03, top_mid), color=DISCRIMINATOR)
    arrow(axes, (d_x + d_w, d_y + 0.3), (map_x - 0.03, bottom_mid), color=DISCRIMINATOR)
    middle = (top_mid + bottom_mid) / 2
    label(axes, map_x + map_size / 2, middle + 0.3, "a score per patch", fontsize=9,
          color=MUTED, style="italic")
    gradient = np.linspace(0, 1, 32)[None, :]
    axes.imshow(gradient, cmap=SCORE_CMAP, extent=(map_x - 0.1, map_x + map_size + 0.1,
                middle - 0.02, middle + 0.12), aspect="auto", interpolation="nearest", zorder=3)
    label(axes, map_x - 0.1, middle - 0.2, "0 fake", fontsize=9, color=FAKE, ha="left")
    label(axes, map_x + map_size + 0.1, middle - 0.2, "1 real", fontsize=9, color=REAL,
          ha="right")

    # the losses, with the weights of the exercise's profiles
    loss = load_config("quick").loss
    loss_y, loss_h, loss_w = 0.45, 1.55, 5.85
    for x, edge, title, formula, note in (
        (0.35, DISCRIMINATOR, "Train $D$: tell real from fake",
         r"$\mathcal{L}_D = \dfrac{1}{2}\,[\,\overline{(D(x,y)-1)^2}"
         r" + \overline{D(x,G(x))^2}\,]$",
         "real patches $\\to$ 1, fake patches $\\to$ 0   ($G(x)$ detached)\n "),
        (6.4, GENERATOR, "Train $G$: fool $D$, match its features, and the blurred stain",
         r"$\mathcal{L}_G = \overline{(D(x,G(x))-1)^2}"
         r" + \lambda_{\mathrm{feat}}\,\mathcal{L}_{\mathrm{FM}}"
         r" + \lambda_{\mathrm{L1}}\,\overline{|\,b_\sigma * G(x) - b_\sigma * y\,|}$",
         f"here $\\lambda_{{\\mathrm{{feat}}}}$ = {loss.lambda_feat:g} (paper: 10), "
         f"$\\lambda_{{\\mathrm{{L1}}}}$ = {loss.lambda_l1:g}, "
         f"$b_\\sigma$: Gaussian blur, $\\sigma$ = {loss.l1_blur_sigma:g} px; "
         "(+ $\\lambda_{\\mathrm{VGG}}\\,\\mathcal{L}_{\\mathrm{VGG}}$ if given)\n"
         "fake patches $\\to$ 1, match $D$'s features of real pairs ($D$ not updated)"),
    ):
        box(axes, x, loss_y, loss_w, loss_h, face=LOSS_BACKGROUND, edge=edge, linewidth=1.6)
        label(axes, x + 0.2, loss_y + loss_h - 0.25, title, ha="left", fontsize=11,
              color=edge, weight="bold")
        label(axes, x + 0.2, loss_y + 0.9, formula, ha="left", fontsize=11)
        label(axes, x + 0.2, loss_y + 0.32, note, ha="left", fontsize=9, color=MUTED,
              linespacing=1.5)
    label(axes, 0.35, 0.18,
          "LSGAN: squared errors; a bar is the mean over patches; each term is summed over "
          "$D$'s 3 scales.   $\\mathcal{L}_{\\mathrm{FM}}$: feature matching "
          "(multi-scale discriminator figure).", ha="left", fontsize=9, color=MUTED,
          style="italic")
    return figure


# --- figure 2: the coarse-to-fine generator ---------------------------------------------------


def slab_height(resolution: int) -> float:
    """Drawn height (inches) of a feature map with this side length: shrinks by 1/sqrt(2) per /2."""
    return 1.9 * (resolution / 512) ** 0.5


def slab_width(channels: int) -> float:
    """Drawn width (inches) of a feature map with this many channels: grows with log2."""
    return 0.12 + 0.07 * np.log2(channels / 16 + 1)


Layer = tuple[int, int, str, str]
"""(channels, side length, kind: "conv" or "res", caption under the slab)."""


def draw_layers(axes: Axes, x: float, row: float, layers: list[Layer], face: str,
                gap: float = 0.3) -> list[tuple[float, float, float]]:
    """Draw feature maps left to right from `x`, joined by arrows, each annotated with its
    channels (above), side length (inside) and operation (below). Returns (left, right, height)
    of each slab."""
    placed = []
    for channels, side, kind, caption in layers:
        width, height = slab_width(channels), slab_height(side)
        if kind == "res":
            width *= 2.4
        feature_map(axes, x, row, width, height, face=face, edge=GENERATOR)
        centre = x + width / 2
        label(axes, centre, row + height / 2 + 0.2, f"{channels}", fontsize=9.5,
              color=GENERATOR, weight="bold")
        label(axes, centre, row, f"{side}", fontsize=9, rotation=90, zorder=6)
        label(axes, centre, row - height / 2 - 0.32, caption, fontsize=9.5)
        if placed:
            arrow(axes, (placed[-1][1] + 0.03, row), (x - 0.02, row), linewidth=1.0)
        placed.append((x, x + width, height))
        x += width + gap
    return placed


def coarse_to_fine_figure() -> Figure:
    """G1 at half resolution, G2 at full resolution, joined by an element-wise sum."""
    tiles = make_tiles()
    figure, axes = new_canvas(12.0, 8.0)
    g1_row, g2_row = 5.55, 2.05  # vertical centres of the two rows

    # panels
    box(axes, 1.6, 4.2, 10.25, 3.05, face=GENERATOR_LIGHT, edge=GENERATOR, linewidth=1.0,
        rounding=0.15, zorder=0)
    label(axes, 1.8, 6.98, "$G_1$   global generator:  half resolution,  2·ngf channels",
          ha="left", fontsize=11, color=GENERATOR, weight="bold")
    box(axes, 1.6, 0.5, 10.25, 3.3, face="#f1f5fb", edge=GENERATOR, linewidth=1.0,
        linestyle="--", rounding=0.15, zorder=0)
    label(axes, 1.8, 3.53, "$G_2$   local enhancer:  full resolution,  ngf channels",
          ha="left", fontsize=11, color=GENERATOR, weight="bold")

    # input, and its half-resolution copy for G1
    input_size = 1.15
    centre_x = 0.2 + input_size / 2
    tile(axes, tiles["phase"], 0.2, g2_row - input_size / 2, input_size, "gray")
    label(axes, centre_x, g2_row - input_size / 2 - 0.35, "input $x$\n512 × 512", fontsize=10)
    half = input_size * 0.62
    tile(axes, tiles["phase"][::2, ::2], centre_x - half / 2, g1_row - half / 2, half, "gray")
    label(axes, centre_x, g1_row - half / 2 - 0.22, "256 × 256", fontsize=10)
    arrow(axes, (centre_x, g2_row + input_size / 2 + 0.05), (centre_x, g1_row - half / 2 - 0.42),
          color=MUTED)
    label(axes, centre_x + 0.1, (g1_row + g2_row) / 2 - 0.1, "avg-pool\n÷2", fontsize=9,
          color=MUTED, ha="left")

    # G1: 7x7 conv at 256 (64 ch), three stride-2 convs, 9 residual blocks, three transposed convs
    g1 = draw_layers(axes, 2.05, g1_row, [
        (64, 256, "conv", "7×7\nconv"), (128, 128, "conv", "3×3\n↓2"),
        (256, 64, "conv", "3×3\n↓2"), (512, 32, "conv", "3×3\n↓2"),
        (512, 32, "res", "9 residual\nblocks"), (256, 64, "conv", "3×3\n↑2"),
        (128, 128, "conv", "3×3\n↑2"), (64, 256, "conv", "3×3\n↑2"),
    ], "#9fbfe5")
    arrow(axes, (centre_x + half / 2 + 0.05, g1_row), (g1[0][0] - 0.02, g1_row))
    g1_left, g1_right, g1_height = g1[-1]
    label(axes, g1_right + 0.2, g1_row + 0.2,
          "last feature map\n64 ch, 256 × 256\n($G_1$'s own 7×7 conv\n+ tanh is dropped)",
          ha="left", fontsize=9.5, color=MUTED)

    # G2: front end at full resolution, the sum with G1, residual blocks, up to the output
    g2_front = draw_layers(axes, 2.05, g2_row, [
        (32, 512, "conv", "7×7\nconv"), (64, 256, "conv", "3×3\n↓2")], "#c9dcf2")
    arrow(axes, (0.2 + input_size + 0.05, g2_row), (g2_front[0][0] - 0.02, g2_row))

    sum_x, radius = (g1_left + g1_right) / 2, 0.2
    axes.add_patch(Circle((sum_x, g2_row), radius, facecolor="white", edgecolor=INK,
                              linewidth=1.4, zorder=6))
    label(axes, sum_x, g2_row + 0.01, "+", fontsize=15, weight="bold", zorder=7)
    arrow(axes, (g2_front[1][1] + 0.03, g2_row), (sum_x - radius, g2_row))
    arrow(axes, (sum_x, g1_row - g1_height / 2 - 0.55), (sum_x, g2_row + radius),
          color=GENERATOR, linewidth=1.8)
    label(axes, sum_x, g2_row - radius - 0.35, "element-wise\nsum", fontsize=9, color=INK)

    g2_back = draw_layers(axes, sum_x + radius + 0.35, g2_row, [
        (64, 256, "res", "3 residual\nblocks"), (32, 512, "conv", "3×3\n↑2"),
        (1, 512, "conv", "7×7 conv\n+ tanh")], "#c9dcf2", gap=0.45)
    arrow(axes, (sum_x + radius, g2_row), (g2_back[0][0] - 0.02, g2_row))

    output_x = g2_back[-1][1] + 0.35
    tile(axes, tiles["generated"], output_x, g2_row - input_size / 2, input_size, NUCLEI_CMAP)
    arrow(axes, (g2_back[-1][1] + 0.03, g2_row), (output_x - 0.02, g2_row))
    label(axes, output_x + input_size / 2, g2_row - input_size / 2 - 0.35,
          "$G(x)$\n512 × 512", fontsize=10)

    label(axes, 0.2, 0.05,
          "Example: 512 × 512 input, ngf = 32 ($G_1$ uses 2·ngf = 64), n_downsample_global = 3,"
          " n_blocks_global = 9, n_blocks_local = 3.\n"
          "Above a slab: channels; inside: side in pixels.  ↓2: stride-2 conv, ↑2: transposed"
          " conv (+ norm, ReLU).  Residual block: 3×3 conv, (dropout), 3×3 conv, + skip.",
          ha="left", fontsize=9, color=MUTED,
          va="bottom", linespacing=1.4)
    label(axes, 0.2, 7.62,
          'netG = "global" (the default here): $G_1$ alone, on the full-resolution input, '
          "ending in its own 7×7 conv + tanh.", ha="left", fontsize=10.5, va="bottom")
    label(axes, 0.2, 7.35,
          'netG = "local": add the local enhancer $G_2$ as drawn; $G_1$ then sees the input at'
          " half resolution and hands its features to $G_2$.", ha="left", fontsize=10.5,
          va="bottom")
    return figure


# --- figure 3: the multi-scale discriminator and feature matching ------------------------------


def multiscale_figure() -> Figure:
    """D1, D2, D3 on the pair at 1, 1/2, 1/4 resolution; feature matching below."""
    tiles = make_tiles()
    figure, axes = new_canvas(12.0, 9.0)
    rng = np.random.default_rng(11)

    # --- top: three scales
    label(axes, 0.3, 8.7, "input pair, 2 channels", ha="left", fontsize=10.5, weight="bold")
    label(axes, 0.3, 8.42, "$(x, y)$ or $(x, G(x))$;  dashed: what one score sees", ha="left",
          fontsize=9, color=MUTED)
    d_x, d_w = 3.25, 1.7
    label(axes, d_x + d_w / 2, 8.56, "same architecture,\nseparate weights", fontsize=10,
          color=DISCRIMINATOR)
    map_x, map_size = 5.55, 0.75
    label(axes, map_x, 8.7, "patch scores (last layer)", ha="left", fontsize=10.5,
          weight="bold")
    label(axes, map_x, 8.42, "LSGAN loss on each map, summed over the 3 scales", ha="left",
          fontsize=9, color=MUTED)
    rows = [7.45, 6.0, 4.85]  # vertical centres
    sizes = [1.1, 0.72, 0.48]  # drawn input sizes for 512, 256, 128
    column = 0.45 + 0.55  # centre of the largest tile
    offset = 0.12
    # (name, input side, score-map side, receptive field in full-resolution pixels: 70 for the
    # 3-layer PatchGAN, then (r - 1) * 2 + 3 through each 3x3 stride-2 average pool, ...)
    scales = [
        ("$D_1$", 512, 67, 70, "fine texture and sharp edges", 12),
        ("$D_2$", 256, 35, 141, "nucleus shapes", 7),
        ("$D_3$", 128, 19, 283, "layout of nuclei and cells", 4),
    ]
    for index, (row, size) in enumerate(zip(rows, sizes, strict=True)):
        name, side, grid, field, judges, shown = scales[index]
        left = column - size / 2 - offset / 2
        bottom = row - size / 2 - offset / 2
        tile(axes, tiles["generated"], left + offset, bottom + offset, size, NUCLEI_CMAP)
        tile(axes, tiles["phase"], left, bottom, size, "gray")
        # what one score sees, as a fraction of the full image the tile stands for
        seen = size * field / 512
        axes.add_patch(Rectangle((left + size * 0.3, bottom + size * 0.35), seen, seen,
                                 fill=False, edgecolor="#ffd21f", linewidth=1.4,
                                 linestyle=(0, (3, 2)), zorder=6))
        start = column + 0.55 + offset
        arrow(axes, (start, row), (d_x, row))
        label(axes, (start + d_x) / 2, row + 0.17, f"{side} × {side}", fontsize=9.5)
        box(axes, d_x, row - 0.35, d_w, 0.7, f"{name}  PatchGAN", face=DISCRIMINATOR_LIGHT,
            edge=DISCRIMINATOR, color=DISCRIMINATOR, fontsize=10.5, weight="bold")
        tile(axes, patch_scores(rng, shown, 0.55, 0.2), map_x, row - map_size / 2, map_size,
             SCORE_CMAP, edge=DISCRIMINATOR, interpolation="nearest")
        arrow(axes, (d_x + d_w, row), (map_x - 0.03, row), color=DISCRIMINATOR)
        label(axes, map_x + map_size + 0.2, row + 0.14,
              f"{grid} × {grid} scores; one score sees ≈ {field} × {field} px"
              " of the full image", ha="left", fontsize=10)
        label(axes, map_x + map_size + 0.2, row - 0.16, f"judges {judges}", ha="left",
              fontsize=9.5, color=MUTED, style="italic")
        if index < 2:
            next_top = rows[index + 1] + sizes[index + 1] / 2 + offset / 2
            arrow(axes, (column, bottom - 0.05), (column, next_top + 0.06), color=MUTED)
            label(axes, column + 0.1, (bottom + next_top) / 2, "avg-pool ÷2", fontsize=9,
                  color=MUTED, ha="left")

    # --- bottom: feature matching at one scale
    panel_top = 4.3
    axes.plot([0.3, 11.7], [panel_top, panel_top], color="#bbbbbb", linewidth=1.0)
    label(axes, 0.3, panel_top - 0.3, "Feature matching at each scale $k$: $D_k$'s "
          "intermediate features on the real and on the fake pair", ha="left", fontsize=11,
          weight="bold")
    real_row, fake_row = 2.7, 1.05
    layers = [  # (operation, channels and side for D_1 on a 512 x 512 input, height, width)
        ("1: 4×4 ↓2", "ndf, 257²", 1.0, 0.14),
        ("2: 4×4 ↓2", "2·ndf, 129²", 0.78, 0.2),
        ("3: 4×4 ↓2", "4·ndf, 65²", 0.6, 0.26),
        ("4: 4×4 /1", "8·ndf, 66²", 0.6, 0.32),
        ("5: 4×4 /1", "1, 67²", 0.6, 0.1),
    ]
    pair_size, first_x, step = 0.72, 1.75, 0.95
    for row, stain, colour, name in ((real_row, tiles["stain"], REAL, "real $(x, y)$"),
                                     (fake_row, tiles["generated"], FAKE, "fake $(x, G(x))$")):
        tile(axes, stain, 0.4 + 0.1, row - pair_size / 2 + 0.1, pair_size, NUCLEI_CMAP,
             edge=colour, linewidth=1.5)
        tile(axes, tiles["phase"], 0.4, row - pair_size / 2, pair_size, "gray", edge=colour,
             linewidth=1.5)
        label(axes, 0.4 + pair_size / 2 + 0.05, row - pair_size / 2 - 0.2, name, fontsize=10,
              color=colour)
        previous = 0.4 + pair_size + 0.15
        for index, (_, _, height, width) in enumerate(layers):
            x = first_x + index * step
            is_score = index == len(layers) - 1
            feature_map(axes, x, row, width, height,
                        face="#dddddd" if is_score else DISCRIMINATOR_LIGHT,
                        edge=MUTED if is_score else colour, depth=0.06)
            arrow(axes, (previous + 0.02, row), (x - 0.03, row), linewidth=1.0,
                  color=DISCRIMINATOR)
            previous = x + width + 0.06
    for index, (operation, shape, height, width) in enumerate(layers):
        centre = first_x + index * step + width / 2
        is_score = index == len(layers) - 1
        label(axes, centre, real_row + 0.5 + 0.32, f"{operation}\n{shape}", fontsize=9.5,
              color=MUTED if is_score else INK)
        if is_score:
            label(axes, centre - 0.15, (real_row + fake_row) / 2, "patch scores:\nGAN loss\nonly",
                  fontsize=9.5, color=MUTED, ha="left")
            continue
        arrow(axes, (centre, real_row - height / 2 - 0.04), (centre, fake_row + height / 2 + 0.1),
              style="<|-|>", color=INK, linewidth=1.0)
        label(axes, centre + 0.08, (real_row + fake_row) / 2 + 0.03, "L1", fontsize=9.5,
              ha="left", color=INK)

    formula_x, formula_w = 6.95, 4.85
    box(axes, formula_x, 0.45, formula_w, 3.15, face=LOSS_BACKGROUND, edge=GENERATOR,
        linewidth=1.4)
    label(axes, formula_x + 0.2, 3.3, "Feature-matching loss (trains $G$ only)", ha="left",
          fontsize=10.5, color=GENERATOR, weight="bold")
    label(axes, formula_x + 0.2, 2.6,
          r"$\mathcal{L}_{\mathrm{FM}} = \sum_{k=1}^{N_D}\,\dfrac{1}{N_D}\,\sum_{i=1}^{T}"
          r"\,\dfrac{4}{T}\;\overline{|F^{(i)}_{k}(x,y) - F^{(i)}_{k}(x,G(x))|}$",
          ha="left", fontsize=12.5)
    label(axes, formula_x + 0.2, 1.4,
          "$F^{(i)}_k$: output of layer $i$ of $D_k$\n"
          "bar: mean over channels and pixels\n"
          "$N_D$ = num_D = 3,   $T$ = n_layers_D + 1 = 4\n"
          "$\\to$ weight 1/3 per scale, 4/4 = 1 per layer\n"
          "real features are the targets (no gradient)\n"
          "added to $\\mathcal{L}_G$ as $\\lambda_{\\mathrm{feat}}\\,\\mathcal{L}_{\\mathrm{FM}}$,"
          f"  $\\lambda_{{\\mathrm{{feat}}}}$ = {load_config('quick').loss.lambda_feat:g} "
          "here (10 in the paper)",
          ha="left", fontsize=10.5, color=INK, linespacing=1.55)
    return figure


# --- output -----------------------------------------------------------------------------------


FIGURES = {
    "conditional_gan": conditional_gan_figure,
    "coarse_to_fine_generator": coarse_to_fine_figure,
    "multiscale_discriminator": multiscale_figure,
}


def save(figure: Figure, path: Path) -> Path:
    """Write SVG (or PNG) without a date, so a rebuild gives the same bytes; atomically, and a
    link at `path` is replaced, never written through (`files.write_atomically`)."""
    if path.suffix == ".svg":
        # images are rasterised at this dpi inside the SVG; 72 keeps the file small
        return write_atomically(path, lambda temporary: figure.savefig(
            temporary, format="svg", dpi=72, metadata={"Date": None}))
    return write_atomically(path, lambda temporary: figure.savefig(
        temporary, format="png", dpi=110, metadata={"Software": None}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT,
                        help="folder of the SVG files (default: the repository's imgs)")
    parser.add_argument("--png", type=Path, default=None,
                        help="also write PNG copies here, to look at them")
    args = parser.parse_args()
    matplotlib.rcParams["svg.hashsalt"] = "pix2pixhd-figures"
    matplotlib.rcParams["font.family"] = "DejaVu Sans"
    matplotlib.rcParams["mathtext.fontset"] = "dejavusans"
    for name, draw in FIGURES.items():
        figure = draw()
        svg = save(figure, output_path(args.out, f"{name}.svg"))
        if args.png is not None:
            save(figure, output_path(args.png, f"{name}.png"))
        plt.close(figure)
        print(f"wrote {svg} ({svg.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
