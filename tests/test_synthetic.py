import dataclasses
import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.measure import regionprops

from pix2pixhd import layout
from pix2pixhd.synthetic import (
    SyntheticParameters,
    draw_cells,
    make_dataset,
    render_geometry,
    render_hoechst,
    render_phase,
    simulate_fov,
)

PARAMS = SyntheticParameters()


def _fov(seed: int, size: int = 128, params: SyntheticParameters = PARAMS) -> dict:
    return simulate_fov(np.random.default_rng(seed), size, params)


def _cells_and_geometry(seed: int, size: int, params: SyntheticParameters):
    rng = np.random.default_rng(seed)
    cells = draw_cells(rng, size, params)
    return rng, cells, render_geometry(rng, cells, size, params)


def _background(labels: np.ndarray, distance_px: float) -> np.ndarray:
    """Pixels farther than `distance_px` from any labelled pixel."""
    return ndi.distance_transform_edt(labels == 0) > distance_px


# --- reproducibility ---------------------------------------------------------------------


def test_same_seed_gives_identical_fields_of_view():
    first, second = _fov(7), _fov(7)
    for key in ("phase", "nuclei", "membrane", "nuclei_masks"):
        np.testing.assert_array_equal(first[key], second[key])


def test_different_seeds_give_different_fields_of_view():
    first, second = _fov(1), _fov(2)
    for key in ("phase", "nuclei", "membrane"):
        assert not np.array_equal(first[key], second[key]), key


def test_same_seed_writes_byte_identical_files(tmp_path):
    roots = [make_dataset(tmp_path / name, n_train=2, n_val=1, n_test=1, size=64, seed=3)
             for name in ("a", "b")]
    files = sorted(p.relative_to(roots[0]) for p in roots[0].rglob("*") if p.is_file())
    assert len(files) == 4 * 4 + 1
    for relative in files:
        assert (roots[0] / relative).read_bytes() == (roots[1] / relative).read_bytes(), relative


def test_a_field_of_view_does_not_depend_on_how_many_are_written(tmp_path):
    small = make_dataset(tmp_path / "small", n_train=1, n_val=1, n_test=0, size=64, seed=5)
    large = make_dataset(tmp_path / "large", n_train=3, n_val=2, n_test=1, size=64, seed=5)
    for split in ("train", "val"):
        for channel in layout.CHANNELS:
            np.testing.assert_array_equal(
                layout.read_image(layout.image_path(small, split, channel, "fov_0000")),
                layout.read_image(layout.image_path(large, split, channel, "fov_0000")),
            )


# --- the files ---------------------------------------------------------------------------


def test_dataset_is_written_in_the_layout_with_counts_and_normalisation(tmp_path):
    root = make_dataset(tmp_path / "data", n_train=3, n_val=2, n_test=1, size=64, seed=11)
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        assert layout.list_fovs(root, split) == [f"fov_{k:04d}" for k in range(count)]
        for fov in layout.list_fovs(root, split):
            for channel in layout.CHANNELS:
                image = layout.read_image(layout.image_path(root, split, channel, fov))
                assert image.shape == (64, 64)
            mask_file = layout.image_path(root, split, layout.MASKS, fov)
            assert tifffile.imread(mask_file).dtype == np.uint16

    info = json.loads(layout.dataset_json_path(root).read_text())
    assert info["source"] == "synthetic"
    assert (info["seed"], info["size"]) == (11, 64)
    assert info["counts"] == {"train": 3, "val": 2, "test": 1}
    assert info["parameters"] == json.loads(json.dumps(dataclasses.asdict(PARAMS)))
    for channel in layout.CHANNELS:
        stats = info["normalisation"][channel]
        assert stats["p_low"] < stats["median"] < stats["p_high"]
        assert stats["iqr"] > 0


def test_rewriting_with_fewer_fovs_removes_the_extra_ones(tmp_path):
    root = make_dataset(tmp_path / "data", n_train=3, n_val=1, n_test=1, size=48, seed=0)
    make_dataset(root, n_train=1, n_val=1, n_test=1, size=48, seed=0)
    assert layout.list_fovs(root, "train") == ["fov_0000"]
    assert layout.list_fovs(root, "train", layout.MASKS) == ["fov_0000"]
    assert layout.read_dataset_json(root)["counts"]["train"] == 1


def test_refuses_to_write_into_a_folder_holding_another_dataset(tmp_path):
    layout.dataset_json_path(tmp_path).write_text(json.dumps({"source": "vscyto2d"}))
    with pytest.raises(layout.DataError, match="vscyto2d.*another folder"):
        make_dataset(tmp_path, n_train=1, n_val=0, n_test=0, size=32)


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_folder_without_dataset_json_keeps_the_users_files(tmp_path):
    mine = tmp_path / "mine"
    for k in (0, 5):
        layout.write_image(layout.image_path(mine, "train", "phase", f"fov_{k:04d}"),
                           np.full((8, 8), k, np.float32))
    before = _files(mine)
    with pytest.raises(layout.DataError, match="holds no dataset.json.*new or empty folder"):
        make_dataset(mine, n_train=2, n_val=1, n_test=1, size=16)
    assert _files(mine) == before
    (tmp_path / "notes").write_text("mine")
    with pytest.raises(layout.DataError, match="notes is a file; choose a folder"):
        make_dataset(tmp_path / "notes", n_train=1, n_val=1, n_test=1, size=16)
    assert (tmp_path / "notes").read_text() == "mine"


def test_a_synthetic_dataset_with_other_files_in_it_is_not_rewritten(tmp_path):
    root = make_dataset(tmp_path / "data", n_train=1, n_val=1, n_test=1, size=16)
    (root / "test" / "predictions").mkdir()
    (root / "test" / "predictions" / "fov_0000.tif").write_bytes(b"mine")
    with pytest.raises(layout.DataError, match=r"holds files .*test/predictions"):
        make_dataset(root, n_train=1, n_val=1, n_test=1, size=16, seed=1)
    assert (root / "test" / "predictions" / "fov_0000.tif").read_bytes() == b"mine"


def test_an_interrupted_rewrite_leaves_the_old_dataset_whole(tmp_path, monkeypatch):
    from pix2pixhd import synthetic
    from pix2pixhd.checks import check_dataset

    root = make_dataset(tmp_path / "data", n_train=3, n_val=1, n_test=1, size=32, seed=0)
    before = _files(root)
    drawn = []

    def fails_at_the_third(rng, size, params=None):
        drawn.append(size)
        if len(drawn) == 3:
            raise KeyboardInterrupt
        return simulate_fov(rng, size, params)

    monkeypatch.setattr(synthetic, "simulate_fov", fails_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        make_dataset(root, n_train=3, n_val=1, n_test=1, size=32, seed=1)
    assert _files(root) == before and check_dataset(root) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing left beside it


def test_a_rewrite_through_a_linked_folder_keeps_the_link(tmp_path):
    target = make_dataset(tmp_path / "scratch", n_train=1, n_val=1, n_test=1, size=16, seed=0)
    (tmp_path / "data").symlink_to(target)
    make_dataset(tmp_path / "data", n_train=1, n_val=1, n_test=1, size=16, seed=1)
    assert (tmp_path / "data").is_symlink()
    assert layout.read_dataset_json(target)["seed"] == 1


def test_bad_sizes_and_counts_are_refused_by_name():
    with pytest.raises(ValueError, match="size=8"):
        _fov(0, size=8)
    with pytest.raises(ValueError, match="n_train"):
        make_dataset("unused", n_train=0)


# --- what the images show ----------------------------------------------------------------


def test_outputs_are_float32_images_and_consecutive_uint16_labels():
    fov = _fov(4, size=192)
    for key in ("phase", "nuclei", "membrane"):
        assert fov[key].dtype == np.float32 and fov[key].shape == (192, 192)
        assert np.isfinite(fov[key]).all()
    masks = fov["nuclei_masks"]
    assert masks.dtype == np.uint16
    labels = np.unique(masks)
    assert labels[0] == 0 and len(labels) > 2
    np.testing.assert_array_equal(labels, np.arange(len(labels)))


def test_masks_mark_where_the_hoechst_signal_is():
    for seed in range(3):
        fov = _fov(seed, size=192)
        masks, hoechst = fov["nuclei_masks"], fov["nuclei"]
        offset = PARAMS.camera_offset_adu
        inside = hoechst[masks > 0].mean() - offset
        outside = hoechst[_background(masks, 6)].mean() - offset
        assert inside > 10 * outside
        for label in range(1, masks.max() + 1):  # every nucleus, one by one
            assert hoechst[masks == label].mean() - offset > 5 * outside


def test_every_nucleus_lies_inside_its_cell():
    for seed in range(5):
        _, _, geometry = _cells_and_geometry(seed, 256, PARAMS)
        nuclei = geometry.nucleus_labels > 0
        assert nuclei.any()
        np.testing.assert_array_equal(
            geometry.cell_labels[nuclei], geometry.nucleus_labels[nuclei]
        )


def test_phase_is_raised_wherever_there_is_a_nucleus():
    params = dataclasses.replace(PARAMS, phase_background_rad=0.0)
    for seed in range(3):
        rng, _, geometry = _cells_and_geometry(seed, 192, params)
        phase = render_phase(rng, geometry, params)
        no_cell = _background(geometry.cell_labels, 4)
        assert abs(np.median(phase[no_cell])) < params.phase_noise_rad
        labels = np.unique(geometry.nucleus_labels)[1:]
        assert len(labels) > 2
        for label in labels:
            nucleus = geometry.nucleus_labels == label
            assert np.median(phase[nucleus]) > 10 * params.phase_noise_rad


def test_phase_is_optical_path_times_two_pi_over_wavelength():
    quiet = dataclasses.replace(PARAMS, phase_background_rad=0.0, phase_noise_rad=0.0)
    red = dataclasses.replace(quiet, wavelength_um=2 * quiet.wavelength_um)
    # the vesicles are given in radians, not optical path: leave them out for this check
    quiet, red = (dataclasses.replace(p, vesicles_per_um2=0.0) for p in (quiet, red))
    green_phase, red_phase = (_fov(9, size=128, params=p)["phase"] for p in (quiet, red))
    assert green_phase.max() > 0.3
    np.testing.assert_allclose(red_phase, green_phase / 2, rtol=1e-5, atol=1e-6)
    # and never more than the thickest cell with the densest cytoplasm allows
    highest = max(quiet.mitotic_height_um[1], quiet.cytoplasm_height_um[1],
                  quiet.nucleus_height_um[1] + 0.6)
    densest = quiet.delta_n_cytoplasm[1] * (1 + 5 * quiet.cytoplasm_texture)
    densest += quiet.delta_n_nucleolus[1]
    assert green_phase.max() < 2 * np.pi / quiet.wavelength_um * highest * densest


def test_nuclear_contrast_in_phase_is_weak_and_varies_between_cells():
    ratios = []
    for seed in range(3):
        rng, cells, geometry = _cells_and_geometry(seed, 256, PARAMS)
        phase = render_phase(rng, geometry, PARAMS)
        for label in np.unique(geometry.nucleus_labels)[1:]:
            nucleus = geometry.nucleus_labels == label
            ring = ndi.binary_dilation(nucleus, iterations=6) & ~ndi.binary_dilation(
                nucleus, iterations=2) & (geometry.cell_labels == label)
            if cells.mitotic[label - 1] or ring.sum() < 50:
                continue
            ratios.append(phase[nucleus].mean() / phase[ring].mean())
    ratios = np.array(ratios)
    assert len(ratios) > 20
    assert 1.0 < np.median(ratios) < 2.0  # brighter than the cytoplasm around, not by much
    assert np.percentile(ratios, 90) - np.percentile(ratios, 10) > 0.2


def _plate_along_minus_across(params: SyntheticParameters) -> np.ndarray:
    """Per elongated mitotic chromatin: mean phase at two points on its long axis minus two on
    its short axis, all at 0.35 x its length from the centre (inside along, outside across)."""
    differences = []
    for seed in range(3):
        rng, cells, geometry = _cells_and_geometry(seed, 256, params)
        phase = ndi.gaussian_filter(render_phase(rng, geometry, params), 1.0)
        for region in regionprops(geometry.nucleus_labels):
            if (not cells.mitotic[region.label - 1]
                    or region.axis_major_length < 1.6 * region.axis_minor_length):
                continue
            angle, centre = region.orientation, np.array(region.centroid)
            reach = 0.35 * region.axis_major_length
            along = np.array([np.cos(angle), np.sin(angle)])
            across = np.array([-np.sin(angle), np.cos(angle)])
            differences.append(_mean_phase_either_side(phase, centre, reach * along)
                               - _mean_phase_either_side(phase, centre, reach * across))
    return np.array(differences)


def _mean_phase_either_side(phase: np.ndarray, centre: np.ndarray, step: np.ndarray) -> float:
    points = np.stack([centre + step, centre - step]).T
    return float(ndi.map_coordinates(phase, points, order=1).mean())


def test_a_metaphase_plate_shows_in_phase_along_its_own_axis():
    # condensed chromatin is denser than cytoplasm: the phase says which way a plate lies, which
    # a model needs to draw it (a plate drawn round at a random angle misses at IoU 0.5)
    params = dataclasses.replace(PARAMS, mitotic_fraction=0.3)
    plates = _plate_along_minus_across(params)
    invisible = _plate_along_minus_across(
        dataclasses.replace(params, chromatin_index_contrast=(0.0, 0.0)))
    assert len(plates) >= 5
    assert np.all(plates > 0)
    assert np.median(plates) > 10 * params.phase_noise_rad
    assert np.median(plates) > 4 * np.median(invisible)


def test_the_chromatin_contrast_changes_only_the_phase_of_mitotic_cells():
    brighter = dataclasses.replace(PARAMS, mitotic_fraction=0.3, chromatin_index_contrast=(2, 3))
    usual = dataclasses.replace(PARAMS, mitotic_fraction=0.3)
    first, second = _fov(4, 192, usual), _fov(4, 192, brighter)
    np.testing.assert_array_equal(first["nuclei"], second["nuclei"])
    np.testing.assert_array_equal(first["nuclei_masks"], second["nuclei_masks"])
    changed = np.abs(first["phase"] - second["phase"]) > 1e-6
    rng, cells, geometry = _cells_and_geometry(4, 192, usual)
    mitotic_cells = np.isin(geometry.cell_labels, np.flatnonzero(cells.mitotic) + 1)
    assert changed.any()
    # the optics' blur spreads a change a few pixels past the cell's edge, no farther
    assert not (changed & (ndi.distance_transform_edt(~mitotic_cells) > 4)).any()


def test_hoechst_noise_variance_grows_with_the_mean_as_poisson_predicts():
    for background in (10.0, 300.0):
        params = dataclasses.replace(PARAMS, background_photons=background,
                                     hoechst_cytoplasm_fraction=0.0)
        rng, _, geometry = _cells_and_geometry(0, 192, params)
        hoechst = render_hoechst(rng, geometry, params)
        far = _background(geometry.nucleus_labels, 15)
        assert far.sum() > 5000
        # differences of neighbours cancel the slow illumination and haze, keep the noise
        pairs = far[:, 1:] & far[:, :-1]
        variance = np.diff(hoechst, axis=1)[pairs].var() / 2
        mean_photons = (hoechst[far].mean() - params.camera_offset_adu)
        expected = params.gain_adu_per_photon * mean_photons + params.read_noise_adu**2
        assert variance == pytest.approx(expected, rel=0.1)


def test_integrated_hoechst_is_proportional_to_dna_content():
    params = dataclasses.replace(PARAMS, hoechst_cytoplasm_fraction=0.0)
    totals, contents = [], []
    for seed in range(3):
        rng, cells, geometry = _cells_and_geometry(seed, 256, params)
        hoechst = render_hoechst(rng, geometry, params)
        background = np.median(hoechst[_background(geometry.nucleus_labels, 15)])
        near_a_nucleus = ~_background(geometry.nucleus_labels, 5)
        for label in np.unique(geometry.nucleus_labels)[1:]:
            nucleus = geometry.nucleus_labels == label
            rows, cols = np.nonzero(nucleus)
            cut = min(rows.min(), cols.min()) < 8 or max(rows.max(), cols.max()) > 247
            if cut or cells.mitotic[label - 1]:
                continue
            region = ndi.binary_dilation(nucleus, iterations=5) & near_a_nucleus
            totals.append((hoechst[region] - background).sum())
            contents.append(cells.dna_content[label - 1])
    totals, contents = np.array(totals), np.array(contents)
    assert len(totals) > 10 and contents.max() > 1.5 * contents.min()
    assert np.corrcoef(totals, contents)[0, 1] > 0.9


@pytest.mark.parametrize("fraction", [0.05, 0.3])
def test_mitotic_fraction_follows_the_parameter(fraction):
    params = dataclasses.replace(PARAMS, mitotic_fraction=fraction)
    mitotic = np.concatenate(
        [draw_cells(np.random.default_rng(seed), 512, params).mitotic for seed in range(40)]
    )
    assert len(mitotic) > 1000
    standard_error = np.sqrt(fraction * (1 - fraction) / len(mitotic))
    assert abs(mitotic.mean() - fraction) < 4 * standard_error


def test_mitotic_nuclei_are_small_bright_and_in_the_masks():
    params = dataclasses.replace(PARAMS, mitotic_fraction=0.3)
    mitotic_means, interphase_means, mitotic_areas, interphase_areas = [], [], [], []
    for seed in range(2):
        rng, cells, geometry = _cells_and_geometry(seed, 256, params)
        hoechst = render_hoechst(rng, geometry, params) - params.camera_offset_adu
        for label in np.unique(geometry.nucleus_labels)[1:]:
            nucleus = geometry.nucleus_labels == label
            is_mitotic = cells.mitotic[label - 1]
            (mitotic_means if is_mitotic else interphase_means).append(hoechst[nucleus].mean())
            (mitotic_areas if is_mitotic else interphase_areas).append(nucleus.sum())
    assert len(mitotic_means) >= 3
    assert np.median(mitotic_means) > 2 * np.median(interphase_means)
    assert np.median(mitotic_areas) < 0.5 * np.median(interphase_areas)
