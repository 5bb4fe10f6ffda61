"""The built-in dataset: synthetic fields of view of adherent cells, as a microscope sees them.

No download is needed to run the exercise: this module draws A549-like cells and images them
in three channels plus the nuclei masks,

    make_dataset("data")                      # 200 train, 40 val, 40 test FOVs of 512 x 512
    fov = simulate_fov(np.random.default_rng(0), 256, SyntheticParameters())

How a field of view is made (every number is a field of `SyntheticParameters`, with units):

1. Cells: irregular star-convex outlines (a radius that varies smoothly with angle), at a
   density that varies from FOV to FOV. Touching cells share the space: a pixel belongs to the
   cell for which it is relatively closest to the centre. Each cell holds one star-convex nucleus,
   off-centre, with 1-3 nucleoli; a few cells are in mitosis (rounded up, chromatin condensed).
2. Thickness per compartment: a thin cytoplasm dome, a thicker nucleus under a smooth top
   membrane, small spherical nucleoli.
3. Quantitative phase (radians): optical path length = sum of thickness x refractive-index
   difference to the medium, times 2 pi / wavelength. The nucleus's index differs only slightly
   from the cytoplasm's and varies from cell to cell, so the nucleus shows in phase mostly where it
   bulges above the cytoplasm: visible, but weak and variable. A mitotic cell's condensed
   chromatin is denser, so its plate shows as a bar. Vesicles make the cytoplasm granular; a
   slow background, the optics' blur and noise complete the image.
4. Hoechst (a.u. = camera counts): DNA content per cell (G1, S, G2, mitotic), spread over the
   nuclear volume with a chromatin texture, excluded from nucleoli; a widefield point-spread
   function, Poisson shot noise, Gaussian read noise and a camera offset.
5. Membrane (CellMask-like, a.u.): a thin band at every cell outline, a faint cell body and a few
   endocytic vesicles, imaged like the Hoechst channel.
6. Nuclei instance masks: uint16, 0 background, 1..N (mitotic chromatin included).

Everything is drawn from `numpy.random.Generator`s: each FOV has its own seed spawned from the
dataset seed, so FOV k of a split is the same whatever the number of FOVs, and the same seed
writes byte-identical files.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from tqdm.auto import tqdm

from pix2pixhd import layout
from pix2pixhd.files import folder_lock, folder_written_atomically
from pix2pixhd.normalisation import dataset_statistics

log = logging.getLogger(__name__)

_CELL_HARMONICS = 6
_NUCLEUS_HARMONICS = 3
_MAX_RADIUS_DEVIATION = 0.45
"""Largest relative deviation of a star-convex radius from its mean: keeps shapes convex-ish."""


@dataclass(frozen=True)
class SyntheticParameters:
    """Physical parameters of the synthetic cells and microscope. Ranges are (low, high) drawn
    uniformly per cell or per field of view."""

    pixel_size_um: float = 0.5
    """Side of one pixel in the sample plane, micrometres."""
    wavelength_um: float = 0.532
    """Illumination wavelength of the phase measurement, micrometres."""

    # --- cells ---
    cell_density_per_mm2: tuple[float, float] = (450.0, 1100.0)
    """Cells per mm^2, drawn per FOV (sparse to confluent)."""
    cell_radius_um: tuple[float, float] = (15.0, 24.0)
    """Mean radius of a spread cell, micrometres."""
    cell_aspect_ratio: tuple[float, float] = (1.0, 1.8)
    """Long over short axis of a cell's underlying ellipse."""
    cell_irregularity: tuple[float, float] = (0.1, 0.35)
    """Relative amplitude of the smooth radial wobble of a cell outline."""
    nucleus_radius_um: tuple[float, float] = (6.0, 8.5)
    """Mean radius of an interphase nucleus, micrometres (never more than half the cell's)."""
    nucleus_aspect_ratio: tuple[float, float] = (1.0, 1.5)
    nucleus_irregularity: tuple[float, float] = (0.02, 0.08)
    nucleus_offset_fraction: float = 0.18
    """Largest distance of the nucleus centre from the cell centre, as a fraction of cell radius."""
    nucleoli_per_nucleus: tuple[int, int] = (1, 3)
    nucleolus_radius_um: tuple[float, float] = (0.8, 1.6)

    # --- cell cycle ---
    s_phase_fraction: float = 0.30
    """Cells replicating DNA (content uniform between 1 and 2 G1 equivalents)."""
    g2_fraction: float = 0.15
    """Cells with doubled DNA content (2 G1 equivalents), not yet in mitosis."""
    mitotic_fraction: float = 0.05
    """Rounded-up cells with condensed chromatin (2 G1 equivalents in a small volume)."""
    mitotic_radius_um: tuple[float, float] = (8.0, 11.0)
    mitotic_height_um: tuple[float, float] = (7.0, 10.0)
    chromatin_radius_um: tuple[float, float] = (2.5, 4.0)
    """Mean radius of a mitotic cell's condensed chromatin, micrometres."""
    chromatin_aspect_ratio: tuple[float, float] = (1.0, 3.0)
    """1 is a prophase ball, about 3 a metaphase plate seen from above."""

    # --- thickness and refractive index ---
    cytoplasm_height_um: tuple[float, float] = (2.0, 4.0)
    """Peak height of the cytoplasm dome, micrometres."""
    cytoplasm_flatness: tuple[float, float] = (-0.2, 1.0)
    """c in the dome height x u (1 + c (1 - u)), u = 1 - (r / R)^2: 0 is a paraboloid,
    1 a flat top with steeper edges, below 0 a thinner periphery."""
    nucleus_height_um: tuple[float, float] = (2.5, 5.0)
    """Thickness of the nucleus at its centre, micrometres."""
    membrane_smoothing_um: float = 1.5
    """Gaussian smoothing of the cell's top surface over the nucleus, micrometres."""
    delta_n_cytoplasm: tuple[float, float] = (0.018, 0.028)
    """Refractive-index difference cytoplasm - medium."""
    nucleus_index_contrast: tuple[float, float] = (-0.12, 0.04)
    """Relative index difference nucleus vs cytoplasm of the same cell: (n_nuc - n_cyt) / dn_cyt."""
    chromatin_index_contrast: tuple[float, float] = (0.6, 1.2)
    """The same for a mitotic cell's condensed chromatin, the densest thing in a cell: its
    refractive index is about 0.01-0.03 above the cytoplasm's, so a metaphase plate shows in
    phase as a bar whose orientation a model can read."""
    delta_n_nucleolus: tuple[float, float] = (0.010, 0.025)
    """Extra refractive index of a nucleolus over its nucleus."""
    cytoplasm_texture: float = 0.12
    """Relative index fluctuation of the cytoplasm (smooth, a few pixels wide)."""
    vesicles_per_um2: float = 0.1
    """Granules (vesicles, lipid droplets) per um^2 of cytoplasm, denser where it is thicker."""
    vesicle_phase_rad: float = 0.6
    """Mean integrated phase of one vesicle, rad * pixel^2 before the optics' blur."""

    # --- phase imaging ---
    phase_background_rad: float = 0.05
    """Standard deviation of the slow phase background (2nd-order polynomial), radians."""
    phase_blur_um: float = 0.35
    """Gaussian sigma of the phase imaging optics, micrometres."""
    phase_noise_rad: float = 0.025
    """Standard deviation of additive phase noise, radians."""

    # --- fluorescence imaging ---
    hoechst_photons: float = 1200.0
    """Expected photons at the centre of an average G1 nucleus."""
    hoechst_cytoplasm_fraction: float = 0.02
    """Unspecific Hoechst signal in the cytoplasm, relative to hoechst_photons."""
    chromatin_texture: float = 0.3
    """Relative standard deviation of the chromatin density inside a nucleus."""
    nucleolus_dna_fraction: float = 0.25
    """DNA density inside a nucleolus relative to the surrounding nucleoplasm."""
    membrane_photons: float = 400.0
    """Expected photons on a cell outline."""
    membrane_body_fraction: float = 0.12
    """Signal of the flat top and bottom membranes relative to the outline."""
    membrane_puncta_per_um2: float = 0.01
    """Endocytic CellMask puncta per um^2 of cell."""
    background_photons: float = 25.0
    """Expected photons per pixel where there are no cells (autofluorescence, stray light)."""
    illumination_falloff: float = 0.15
    """Relative drop of the excitation from the centre to the corners of the FOV."""
    psf_sigma_um: float = 0.5
    """Gaussian sigma of the in-focus point-spread function, micrometres."""
    out_of_focus_fraction: float = 0.15
    """Fraction of the light spread as a broad out-of-focus haze (widefield)."""
    out_of_focus_sigma_um: float = 4.0
    read_noise_adu: float = 2.0
    """Standard deviation of the camera read noise, counts."""
    camera_offset_adu: float = 100.0
    """Constant added by the camera, counts."""
    gain_adu_per_photon: float = 1.0


@dataclass
class Cells:
    """The cells of one FOV, one entry per cell. Positions in pixels (row, column)."""

    centre: np.ndarray  # (N, 2)
    radius_px: np.ndarray  # (N,) mean radius of the outline
    shape: np.ndarray  # (N, 2 + 2 * _CELL_HARMONICS): aspect, angle, harmonic amplitudes, phases
    mitotic: np.ndarray  # (N,) bool
    dna_content: np.ndarray  # (N,) in G1 equivalents
    cytoplasm_height_um: np.ndarray
    cytoplasm_flatness: np.ndarray  # shape of the dome, see SyntheticParameters
    delta_n_cytoplasm: np.ndarray
    nucleus_centre: np.ndarray  # (N, 2)
    nucleus_radius_px: np.ndarray
    nucleus_shape: np.ndarray  # (N, 2 + 2 * _NUCLEUS_HARMONICS)
    nucleus_height_um: np.ndarray
    delta_n_nucleus: np.ndarray
    nucleoli: list[np.ndarray]  # per cell (k, 4): row, column, radius px, delta n
    membrane_brightness: np.ndarray

    def __len__(self) -> int:
        return len(self.radius_px)


@dataclass
class Geometry:
    """What the cells are made of, pixel by pixel (all (H, W))."""

    cell_labels: np.ndarray  # int32, 0 where no cell
    nucleus_labels: np.ndarray  # int32, 0 outside nuclei
    cytoplasm_path_um: np.ndarray  # thickness of cytoplasm along the optical axis
    nucleus_thickness_um: np.ndarray
    nucleolus_thickness_um: np.ndarray
    delta_n_cytoplasm: np.ndarray
    delta_n_nucleus: np.ndarray
    delta_n_nucleolus: np.ndarray
    dna_density: np.ndarray  # Hoechst photons per um of nuclear thickness, before texture
    chromatin: np.ndarray  # zero-mean, unit-std texture field shared by phase and Hoechst


def simulate_fov(
    rng: np.random.Generator, size: int, params: SyntheticParameters | None = None
) -> dict[str, np.ndarray]:
    """One square field of view: phase (rad), nuclei and membrane (a.u.) float32 (size, size),
    nuclei_masks uint16 (size, size) with labels 1..N."""
    params = params or SyntheticParameters()
    if size < 16:
        raise ValueError(f"size={size} is too small for a field of view; use at least 16 pixels")
    cells = draw_cells(rng, size, params)
    geometry = render_geometry(rng, cells, size, params)
    return {
        "phase": render_phase(rng, geometry, params),
        "nuclei": render_hoechst(rng, geometry, params),
        "membrane": render_membrane(rng, cells, geometry, params),
        "nuclei_masks": _consecutive_labels(geometry.nucleus_labels),
    }


def make_dataset(
    out: str | Path,
    *,
    n_train: int = 200,
    n_val: int = 40,
    n_test: int = 40,
    size: int = 512,
    seed: int = 0,
    params: SyntheticParameters | None = None,
) -> Path:
    """Write a synthetic dataset in the layout of `pix2pixhd.layout` and return its folder.

    FOV k of a split is drawn from its own seed (spawned from `seed`), so it does not depend on
    how many FOVs are written. Re-running into the same folder replaces an earlier synthetic
    dataset as a whole: the new one is written beside it and renamed into place, dataset.json
    last, so an interrupted run leaves the old one intact. A folder holding anything else is
    refused, and so is a second run on the same folder while one is writing
    (`files.folder_lock`).
    """
    params = params or SyntheticParameters()
    out = Path(out)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if n_train < 1 or n_val < 0 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_val, n_test >= 0, got {counts}")
    with folder_lock(out, f"pix2pixhd data synthetic --out {out}"):
        _refuse_foreign_files(out)
        with folder_written_atomically(out) as building:
            _write_fovs(building, counts, size, seed, params)
            layout.write_dataset_json(building, {
                "source": "synthetic", "seed": seed, "size": size,
                "parameters": dataclasses.asdict(params), **dataset_statistics(building)})
    log.info("wrote %s synthetic FOVs of %d x %d px to %s", counts, size, size, out)
    return out


def _write_fovs(out: Path, counts: dict[str, int], size: int, seed: int,
                params: SyntheticParameters) -> None:
    """Every field of view of every split, with its masks, into `out`."""
    split_seeds = np.random.SeedSequence(seed).spawn(len(layout.SPLITS))
    jobs = [
        (split, k, fov_seed)
        for split, split_seed in zip(layout.SPLITS, split_seeds, strict=True)
        for k, fov_seed in enumerate(split_seed.spawn(counts[split]))
    ]
    for split, k, fov_seed in tqdm(jobs, desc="synthetic FOVs", unit="fov"):
        fov = simulate_fov(np.random.default_rng(fov_seed), size, params)
        name = f"fov_{k:04d}"
        for channel in layout.CHANNELS:
            layout.write_image(layout.image_path(out, split, channel, name), fov[channel])
        layout.write_mask(layout.image_path(out, split, layout.MASKS, name), fov["nuclei_masks"])


# --- cells ---------------------------------------------------------------------------------


def draw_cells(rng: np.random.Generator, size: int, params: SyntheticParameters) -> Cells:
    """Place cells by dart throwing (no two centres closer than 0.65 x the sum of their radii,
    which keeps nuclei apart), with a margin so that cells are cut by the image border."""
    px = params.pixel_size_um
    radius_lo, radius_hi = (r / px for r in params.cell_radius_um)
    margin = radius_lo
    extent_mm = (size + 2 * margin) * px / 1000
    expected = rng.uniform(*params.cell_density_per_mm2) * extent_mm**2
    n_tries = max(4 * int(np.ceil(expected)), 8)
    candidates = rng.uniform(-margin, size + margin, (n_tries, 2))
    candidate_radii = rng.uniform(radius_lo, radius_hi, n_tries)
    wanted = rng.poisson(expected)
    keep: list[int] = []
    for i in range(n_tries):
        if len(keep) >= wanted:
            break
        if keep:
            distance = np.hypot(*(candidates[keep] - candidates[i]).T)
            if np.any(distance < 0.65 * (candidate_radii[keep] + candidate_radii[i])):
                continue
        keep.append(i)
    centre, radius = candidates[keep], candidate_radii[keep]
    n = len(keep)
    # drawn after placement so that the fraction of mitotic cells does not depend on packing
    mitotic = rng.random(n) < params.mitotic_fraction
    phase_draw = rng.random(n)
    s_phase = phase_draw < params.s_phase_fraction
    g2 = (phase_draw >= params.s_phase_fraction) & (
        phase_draw < params.s_phase_fraction + params.g2_fraction
    )
    dna = np.where(s_phase, 1 + rng.random(n), 1.0)
    dna = np.where(g2 | mitotic, 2.0, dna)

    cell_shape = _draw_shapes(rng, n, params.cell_aspect_ratio, params.cell_irregularity,
                              _CELL_HARMONICS)
    radius = np.where(mitotic, rng.uniform(*params.mitotic_radius_um, n) / px, radius)
    cell_shape[mitotic, 0] = 1 + 0.1 * rng.random(mitotic.sum())  # rounded up
    cell_shape[mitotic, 2:] *= 0.3
    height = np.where(mitotic, rng.uniform(*params.mitotic_height_um, n),
                      rng.uniform(*params.cytoplasm_height_um, n))
    flatness = rng.uniform(*params.cytoplasm_flatness, n)
    delta_n_cytoplasm = rng.uniform(*params.delta_n_cytoplasm, n)

    nucleus_radius = rng.uniform(*params.nucleus_radius_um, n) / px
    nucleus_radius = np.minimum(nucleus_radius, 0.5 * radius)
    nucleus_shape = _draw_shapes(rng, n, params.nucleus_aspect_ratio, params.nucleus_irregularity,
                                 _NUCLEUS_HARMONICS)
    nucleus_height = rng.uniform(*params.nucleus_height_um, n)
    offset_angle = rng.uniform(0, 2 * np.pi, n)
    offset = params.nucleus_offset_fraction * radius * np.sqrt(rng.random(n))
    chromatin_radius = rng.uniform(*params.chromatin_radius_um, n) / px
    chromatin_aspect = rng.uniform(*params.chromatin_aspect_ratio, n)
    nucleus_radius = np.where(mitotic, chromatin_radius, nucleus_radius)
    nucleus_shape[mitotic, 0] = chromatin_aspect[mitotic]
    offset = np.where(mitotic, 0.0, offset)
    nucleus_height = np.where(mitotic, 2 * chromatin_radius * px / np.sqrt(chromatin_aspect),
                              nucleus_height)
    nucleus_centre = centre + offset[:, None] * np.stack(
        [np.sin(offset_angle), np.cos(offset_angle)], axis=1
    )
    draw = rng.random(n)  # one draw per cell, mapped to its range: other draws stay the same
    contrast = np.where(mitotic, _in_range(draw, params.chromatin_index_contrast),
                        _in_range(draw, params.nucleus_index_contrast))
    delta_n_nucleus = delta_n_cytoplasm * (1 + contrast)

    nucleoli = [
        _draw_nucleoli(rng, nucleus_centre[i], nucleus_radius[i], params) if not mitotic[i]
        else np.zeros((0, 4))
        for i in range(n)
    ]
    return Cells(
        centre=centre,
        radius_px=radius,
        shape=cell_shape,
        mitotic=mitotic,
        dna_content=dna,
        cytoplasm_height_um=height,
        cytoplasm_flatness=flatness,
        delta_n_cytoplasm=delta_n_cytoplasm,
        nucleus_centre=nucleus_centre,
        nucleus_radius_px=nucleus_radius,
        nucleus_shape=nucleus_shape,
        nucleus_height_um=nucleus_height,
        delta_n_nucleus=delta_n_nucleus,
        nucleoli=nucleoli,
        membrane_brightness=rng.uniform(0.6, 1.4, n),
    )


def _draw_shapes(
    rng: np.random.Generator,
    n: int,
    aspect_range: tuple[float, float],
    irregularity: tuple[float, float],
    harmonics: int,
) -> np.ndarray:
    """Per shape: aspect ratio, orientation (rad), `harmonics` amplitudes and phases (N, 2+2K).

    Amplitudes fall as 1/k^1.2 so outlines are smooth; their sum is capped so that radii
    stay positive."""
    aspect = rng.uniform(*aspect_range, n)
    angle = rng.uniform(0, np.pi, n)
    k = np.arange(2, harmonics + 2)
    amplitude = rng.uniform(*irregularity, (n, 1)) * rng.standard_normal((n, harmonics)) / k**1.2
    total = np.abs(amplitude).sum(axis=1, keepdims=True)
    amplitude *= np.minimum(1.0, _MAX_RADIUS_DEVIATION / np.maximum(total, 1e-12))
    phase = rng.uniform(0, 2 * np.pi, (n, harmonics))
    return np.concatenate([aspect[:, None], angle[:, None], amplitude, phase], axis=1)


def _in_range(unit: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """Numbers uniform in [0, 1) mapped linearly onto [low, high)."""
    low, high = bounds
    return low + (high - low) * unit


def _draw_nucleoli(
    rng: np.random.Generator, centre: np.ndarray, radius_px: float, params: SyntheticParameters
) -> np.ndarray:
    """1-3 nucleoli (row, column, radius px, extra delta n), well inside the nucleus."""
    low, high = params.nucleoli_per_nucleus
    count = int(rng.integers(low, high + 1))
    angle = rng.uniform(0, 2 * np.pi, count)
    distance = 0.5 * radius_px * np.sqrt(rng.random(count))
    rows = centre[0] + distance * np.sin(angle)
    cols = centre[1] + distance * np.cos(angle)
    radii = rng.uniform(*params.nucleolus_radius_um, count) / params.pixel_size_um
    delta_n = rng.uniform(*params.delta_n_nucleolus, count)
    return np.stack([rows, cols, radii, delta_n], axis=1)


_ANGLES = np.linspace(-np.pi, np.pi, 1025)
"""Angles at which outlines are tabulated (the first and last are the same direction)."""


def _outline_tables(mean_radius: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Radii (px) of N star-convex outlines at `_ANGLES`, float32 (N, len(_ANGLES)): an ellipse
    of the shape's aspect ratio (area-preserving) times a smooth wobble
    1 + sum_k a_k cos(k theta + phi_k). Pixels look their outline's radius up in this table."""
    aspect, angle = shape[:, :1], shape[:, 1:2]
    harmonics = (shape.shape[1] - 2) // 2
    amplitudes, phases = shape[:, 2 : 2 + harmonics], shape[:, 2 + harmonics :]
    # 1 / r_ellipse^2 = cos^2 / A^2 + sin^2 / B^2 with A = sqrt(aspect), B = 1 / A
    mean_term = (1 / aspect + aspect) / 2
    cos_term = (1 / aspect - aspect) / 2
    ellipse = 1 / np.sqrt(mean_term + cos_term * np.cos(2 * (_ANGLES[None, :] - angle)))
    # the wobble is a trigonometric polynomial: one inverse real FFT evaluates it at all angles
    n = len(_ANGLES) - 1
    k = np.arange(2, harmonics + 2)
    spectrum = np.zeros((len(shape), n // 2 + 1), complex)
    spectrum[:, k] = (n / 2) * amplitudes * np.exp(1j * (phases - k * np.pi))
    wobble = 1 + np.fft.irfft(spectrum, n=n, axis=1)
    wobble = np.concatenate([wobble, wobble[:, :1]], axis=1)  # theta = pi is theta = -pi
    return (mean_radius[:, None] * ellipse * wobble).astype(np.float32)


def _star_area(table: np.ndarray) -> float:
    """Area enclosed by a tabulated outline, pixels^2 (1/2 integral of R(theta)^2 dtheta)."""
    return float(np.pi * np.mean(table[:-1].astype(np.float64) ** 2))


def _window(centre: np.ndarray, reach: float, size: int) -> tuple[slice, slice] | None:
    """The bounding box of a disc of radius `reach`, clipped to the image; None if outside."""
    top, left = (max(int(np.floor(c - reach)), 0) for c in centre)
    bottom, right = (min(int(np.ceil(c + reach)) + 1, size) for c in centre)
    if top >= bottom or left >= right:
        return None
    return slice(top, bottom), slice(left, right)


def _relative_radius(
    window: tuple[slice, slice], centre: np.ndarray, table: np.ndarray
) -> np.ndarray:
    """Distance to `centre` divided by the outline's radius in that direction (1 on the outline)."""
    rows = np.arange(window[0].start, window[0].stop, dtype=np.float32)[:, None] - centre[0]
    cols = np.arange(window[1].start, window[1].stop, dtype=np.float32)[None, :] - centre[1]
    theta = np.arctan2(rows, cols)
    index = np.rint((theta + np.pi) * ((len(_ANGLES) - 1) / (2 * np.pi))).astype(np.intp)
    return np.hypot(rows, cols) / table[index]


# --- geometry ------------------------------------------------------------------------------


def render_geometry(
    rng: np.random.Generator, cells: Cells, size: int, params: SyntheticParameters
) -> Geometry:
    """Label maps, compartment thicknesses and refractive indices of the cells on the pixel grid."""
    shape2d = (size, size)
    cell_labels = np.zeros(shape2d, np.int32)
    best = np.full(shape2d, np.inf, np.float32)
    claimed: list[tuple[tuple[slice, slice], np.ndarray] | None] = []
    cell_tables = _outline_tables(cells.radius_px, cells.shape)
    nucleus_tables = _outline_tables(cells.nucleus_radius_px, cells.nucleus_shape)
    for i, table in enumerate(cell_tables):
        window = _window(cells.centre[i], float(table.max()) + 1, size)
        if window is None:
            claimed.append(None)
            continue
        rho = _relative_radius(window, cells.centre[i], table)
        # touching cells share the space: the pixel goes to the cell it is relatively closest to
        claim = (rho < 1) & (rho < best[window])
        np.copyto(best[window], rho, where=claim)
        np.copyto(cell_labels[window], i + 1, where=claim)
        claimed.append((window, rho))

    nucleus_labels = np.zeros(shape2d, np.int32)
    cytoplasm_height = np.zeros(shape2d, np.float32)
    nucleus_thickness = np.zeros(shape2d, np.float32)
    nucleolus_thickness = np.zeros(shape2d, np.float32)
    nucleolus_delta_n = np.zeros(shape2d, np.float32)
    delta_n_cytoplasm = np.zeros(shape2d, np.float32)
    delta_n_nucleus = np.zeros(shape2d, np.float32)
    dna_density = np.zeros(shape2d, np.float32)
    px = params.pixel_size_um
    reference_radius = np.mean(params.nucleus_radius_um) / px
    reference_height = float(np.mean(params.nucleus_height_um))
    # Hoechst photons per um of thickness that give an average G1 nucleus `hoechst_photons` at
    # its centre; each nucleus spreads its own DNA content over its own volume
    reference_volume = 2 / 3 * np.pi * reference_radius**2 * reference_height
    for i, entry in enumerate(claimed):
        if entry is None:
            continue
        window, rho = entry
        own = cell_labels[window] == i + 1
        u = np.clip(1 - rho**2, 0, None)
        # a rounded-up mitotic cell is a spherical cap; a spread cell a flatter dome
        dome = np.sqrt(u) if cells.mitotic[i] else u * (1 + cells.cytoplasm_flatness[i] * (1 - u))
        np.copyto(cytoplasm_height[window], cells.cytoplasm_height_um[i] * dome, where=own)
        np.copyto(delta_n_cytoplasm[window], cells.delta_n_cytoplasm[i], where=own)

        table = nucleus_tables[i]
        nucleus_window = _window(cells.nucleus_centre[i], float(table.max()) + 1, size)
        if nucleus_window is None:
            continue
        rho_n = _relative_radius(nucleus_window, cells.nucleus_centre[i], table)
        inside = (rho_n < 1) & (cell_labels[nucleus_window] == i + 1)
        if not inside.any():
            continue
        thickness = cells.nucleus_height_um[i] * np.sqrt(np.clip(1 - rho_n**2, 0, None))
        np.copyto(nucleus_thickness[nucleus_window], thickness, where=inside)
        np.copyto(nucleus_labels[nucleus_window], i + 1, where=inside)
        np.copyto(delta_n_nucleus[nucleus_window], cells.delta_n_nucleus[i], where=inside)
        volume = 2 / 3 * _star_area(table) * cells.nucleus_height_um[i]
        density = params.hoechst_photons / reference_height * reference_volume / volume
        np.copyto(dna_density[nucleus_window], density * cells.dna_content[i], where=inside)
        for row, col, radius, delta_n in cells.nucleoli[i]:
            _add_nucleolus(nucleolus_thickness[nucleus_window], nucleolus_delta_n[nucleus_window],
                           inside, nucleus_window, row, col, radius, px, delta_n)

    # the top membrane drapes smoothly over the nucleus; cytoplasm fills what is left
    cover_um = 0.3
    top = _smooth_maximum(cytoplasm_height, np.where(nucleus_labels > 0,
                                                     nucleus_thickness + cover_um, 0))
    bulge = _gaussian_blur(top - cytoplasm_height, params.membrane_smoothing_um / px)
    top = cytoplasm_height + np.where(cell_labels > 0, bulge, 0)
    cytoplasm_path = np.clip(top - nucleus_thickness, 0, None)
    nucleolus_thickness = np.minimum(nucleolus_thickness, nucleus_thickness)

    chromatin = _texture(rng, shape2d, sigma_px=1.0)
    return Geometry(
        cell_labels=cell_labels,
        nucleus_labels=nucleus_labels,
        cytoplasm_path_um=cytoplasm_path.astype(np.float32),
        nucleus_thickness_um=nucleus_thickness,
        nucleolus_thickness_um=nucleolus_thickness,
        delta_n_cytoplasm=delta_n_cytoplasm,
        delta_n_nucleus=delta_n_nucleus,
        delta_n_nucleolus=nucleolus_delta_n,
        dna_density=dna_density,
        chromatin=chromatin,
    )


def _add_nucleolus(
    thickness: np.ndarray,
    delta_n_map: np.ndarray,
    nucleus: np.ndarray,
    window: tuple[slice, slice],
    row: float,
    col: float,
    radius_px: float,
    pixel_size_um: float,
    delta_n: float,
) -> None:
    """A sphere, thickness 2 sqrt(r^2 - d^2) um, where it lies inside its nucleus.

    `thickness`, `delta_n_map` and `nucleus` are views of the nucleus's `window`."""
    rows = np.arange(window[0].start, window[0].stop, dtype=np.float32)[:, None] - row
    cols = np.arange(window[1].start, window[1].stop, dtype=np.float32)[None, :] - col
    d2 = (rows**2 + cols**2) / radius_px**2
    inside = (d2 < 1) & nucleus
    sphere = 2 * radius_px * pixel_size_um * np.sqrt(np.clip(1 - d2, 0, None))
    np.copyto(thickness, np.maximum(thickness, sphere), where=inside)
    np.copyto(delta_n_map, delta_n, where=inside)


def _smooth_maximum(a: np.ndarray, b: np.ndarray, softness: float = 0.3) -> np.ndarray:
    """max(a, b) with the corner rounded over `softness` (same units as a and b)."""
    return np.maximum(a, b) + softness * np.log1p(np.exp(-np.abs(a - b) / softness))


def _texture(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian random field with correlation length `sigma_px`, zero mean and unit std."""
    field = _gaussian_blur(rng.standard_normal(shape, dtype=np.float32), sigma_px)
    return field / max(float(field.std()), 1e-6)


def _gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian filter cut at 3 sigma (the tail beyond holds 0.3 % of the weight), edges
    continued by their nearest pixel."""
    return ndi.gaussian_filter(image, sigma_px, mode="nearest", truncate=3.0)


def _consecutive_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel to 1..N in order of first appearance of the cell index (uint16, 0 kept)."""
    present = np.unique(labels)
    present = present[present > 0]
    lookup = np.zeros(labels.max(initial=0) + 1, np.uint16)
    lookup[present] = np.arange(1, len(present) + 1, dtype=np.uint16)
    return lookup[labels]


# --- phase ---------------------------------------------------------------------------------


def render_phase(
    rng: np.random.Generator, geometry: Geometry, params: SyntheticParameters
) -> np.ndarray:
    """Quantitative phase, radians (H, W) float32: 2 pi / lambda x optical path difference."""
    size = geometry.cell_labels.shape[0]
    cytoplasm_index = geometry.delta_n_cytoplasm * (
        1 + params.cytoplasm_texture * _texture(rng, (size, size), sigma_px=2.5)
    )
    # chromatin density modulates the nuclear index a little: a weak, honest texture cue
    nucleus_index = geometry.delta_n_nucleus * (1 + 0.03 * geometry.chromatin)
    optical_path = (
        cytoplasm_index * geometry.cytoplasm_path_um
        + nucleus_index * (geometry.nucleus_thickness_um - geometry.nucleolus_thickness_um)
        + (geometry.delta_n_nucleus + geometry.delta_n_nucleolus)
        * geometry.nucleolus_thickness_um
    )
    phase = (2 * np.pi / params.wavelength_um) * optical_path
    phase += _vesicles(rng, geometry, params)
    phase = _gaussian_blur(phase, params.phase_blur_um / params.pixel_size_um)
    phase += _slow_background(rng, size, params.phase_background_rad)
    phase += params.phase_noise_rad * rng.standard_normal((size, size), dtype=np.float32)
    return phase.astype(np.float32)


def _vesicles(
    rng: np.random.Generator, geometry: Geometry, params: SyntheticParameters
) -> np.ndarray:
    """Point-like granules in the cytoplasm, more where it is thick (around the nucleus), rad."""
    size = geometry.cell_labels.shape[0]
    area_um2 = (size * params.pixel_size_um) ** 2
    n = rng.poisson(params.vesicles_per_um2 * area_um2 * 2)
    rows, cols = rng.integers(0, size, (2, n))
    path = geometry.cytoplasm_path_um[rows, cols]
    scale = max(float(geometry.cytoplasm_path_um.max()), 1e-6)
    keep = (rng.random(n) < path / scale) & (geometry.nucleus_labels[rows, cols] == 0)
    amplitude = rng.exponential(params.vesicle_phase_rad, n)
    granules = np.zeros((size, size), np.float32)
    # smaller than the resolution: the optics' blur gives each its shape
    np.add.at(granules, (rows[keep], cols[keep]), amplitude[keep])
    return granules


def _slow_background(rng: np.random.Generator, size: int, amplitude: float) -> np.ndarray:
    """A random 2nd-order polynomial over the FOV (residual tilt and curvature), std ~ amplitude."""
    x = np.linspace(-1, 1, size, dtype=np.float32)[None, :]
    y = x.T
    a = rng.normal(0, amplitude, 5).astype(np.float32)
    return a[0] * x + a[1] * y + a[2] * (x**2 - 1 / 3) + a[3] * (y**2 - 1 / 3) + a[4] * x * y


# --- fluorescence --------------------------------------------------------------------------


def render_hoechst(
    rng: np.random.Generator, geometry: Geometry, params: SyntheticParameters
) -> np.ndarray:
    """Hoechst (DNA) widefield image, camera counts (H, W) float32."""
    texture = np.clip(1 + params.chromatin_texture * geometry.chromatin, 0.1, None)
    dna_thickness = geometry.nucleus_thickness_um - (
        (1 - params.nucleolus_dna_fraction) * geometry.nucleolus_thickness_um
    )
    photons = geometry.dna_density * dna_thickness * texture
    unspecific = params.hoechst_photons * params.hoechst_cytoplasm_fraction
    photons += unspecific * (geometry.cytoplasm_path_um > 0)
    return _widefield_camera(rng, photons, params)


def render_membrane(
    rng: np.random.Generator, cells: Cells, geometry: Geometry, params: SyntheticParameters
) -> np.ndarray:
    """CellMask-like plasma-membrane image, camera counts (H, W) float32."""
    labels = geometry.cell_labels
    brightness = np.concatenate([[0.0], cells.membrane_brightness]).astype(np.float32)[labels]
    outline = _outlines(labels)
    photons = params.membrane_photons * brightness * (
        outline + params.membrane_body_fraction * (labels > 0)
    )
    size = labels.shape[0]
    area_um2 = (size * params.pixel_size_um) ** 2
    n = rng.poisson(params.membrane_puncta_per_um2 * area_um2)
    rows, cols = rng.integers(0, size, (2, n))
    keep = labels[rows, cols] > 0
    amplitude = params.membrane_photons * rng.exponential(0.8, n)
    np.add.at(photons, (rows[keep], cols[keep]), amplitude[keep])
    return _widefield_camera(rng, photons, params)


def _outlines(labels: np.ndarray) -> np.ndarray:
    """1 on cell pixels that touch another label (a neighbour cell or background), else 0."""
    edge = np.zeros(labels.shape, bool)
    vertical = labels[1:] != labels[:-1]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return (edge & (labels > 0)).astype(np.float32)


def _widefield_camera(
    rng: np.random.Generator, photons: np.ndarray, params: SyntheticParameters
) -> np.ndarray:
    """Expected photons -> blurred by the PSF (sharp core + out-of-focus haze), excitation
    fall-off, Poisson shot noise, Gaussian read noise, gain and offset. Counts, float32."""
    px = params.pixel_size_um
    core = _gaussian_blur(photons, params.psf_sigma_um / px)
    haze = _broad_blur(photons, params.out_of_focus_sigma_um / px)
    expected = (1 - params.out_of_focus_fraction) * core + params.out_of_focus_fraction * haze
    illumination = _illumination(photons.shape[0], params.illumination_falloff)
    expected = (expected + params.background_photons) * illumination
    detected = rng.poisson(np.clip(expected, 0, None)).astype(np.float32)
    read = params.read_noise_adu * rng.standard_normal(photons.shape, dtype=np.float32)
    return params.gain_adu_per_photon * detected + read + np.float32(params.camera_offset_adu)


def _broad_blur(image: np.ndarray, sigma_px: float, factor: int = 4) -> np.ndarray:
    """Gaussian blur for a wide sigma, computed on a `factor`-times coarser grid (the result has
    no detail finer than sigma anyway) and interpolated back linearly, one axis at a time."""
    size = image.shape[0]
    padded = -(-size // factor) * factor
    small = np.pad(image, ((0, padded - size), (0, padded - size)), mode="edge")
    small = small.reshape(padded // factor, factor, padded // factor, factor).mean(axis=(1, 3))
    small = _gaussian_blur(small, sigma_px / factor)
    below, above, weight = _interpolation_weights(size, padded // factor, factor)
    rows = (1 - weight)[:, None] * small[below] + weight[:, None] * small[above]
    return (1 - weight)[None, :] * rows[:, below] + weight[None, :] * rows[:, above]


@functools.lru_cache(maxsize=8)
def _interpolation_weights(
    size: int, coarse: int, factor: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbouring coarse cells and linear weights for each of `size` fine pixels."""
    # block centres sit at (factor - 1) / 2 in fine pixel coordinates
    position = np.clip((np.arange(size) - (factor - 1) / 2) / factor, 0, coarse - 1)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, coarse - 1)
    return below, above, (position - below).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _illumination(size: int, falloff: float) -> np.ndarray:
    """Relative excitation (size, size): 1 at the centre, 1 - falloff in the corners (quadratic).
    Cached and shared: read only."""
    x2 = np.linspace(-1, 1, size, dtype=np.float32)[None, :] ** 2
    field = 1 - np.float32(falloff / 2) * (x2 + x2.T)
    field.flags.writeable = False
    return field


SYNTHETIC_FILES = re.compile(
    rf"dataset\.json|examples\.png|({'|'.join(layout.SPLITS)})"
    rf"(/({'|'.join((*layout.CHANNELS, layout.MASKS))})(/fov_[0-9]{{4,}}\.tif)?)?"
    r"|(.+/)?\.[^/]+\.part")
"""Paths (relative, '/'-separated) a synthetic dataset folder holds, with the leftovers of
killed writes: what a re-run replaces."""


def _refuse_foreign_files(out: Path) -> None:
    """Replace only a synthetic dataset this package wrote (plus `data show`'s examples.png);
    a folder with another dataset, or with anything else, is refused before anything is done."""
    if not out.is_dir():
        return
    if layout.dataset_json_path(out).is_file():
        source = layout.read_dataset_json(out).get("source")
        if source != "synthetic":
            raise layout.DataError(
                f"{out} already holds a '{source}' dataset; write the synthetic one to another "
                "folder (--out) or delete this one first")
    elif any(out.iterdir()):
        raise layout.DataError(
            f"{out} is not empty and holds no dataset.json, so it is not a dataset that "
            "`data synthetic` wrote; choose a new or empty folder (--out)")
    foreign = sorted(str(path.relative_to(out)) for path in out.rglob("*")
                     if not SYNTHETIC_FILES.fullmatch(path.relative_to(out).as_posix())
                     or path.is_symlink())
    if foreign:
        raise layout.DataError(
            f"{out} holds files a synthetic dataset does not ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}); re-writing it would delete them: move "
            "them, or choose another folder (--out)")
