"""Converters from posterior images / samples, the grid convention, and input checks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from dustmaps_ext_build.decaps import cli, convert, mock, partition, pipeline
from dustmaps_ext_build.decaps.inputs import N_DM, N_E, StarPosteriors


def _gaussian_images(rng, n):
    mu = rng.uniform(7.0, 14.0, n)
    e = rng.uniform(0.2, 2.0, n)
    x0, nx, y0, ny, off, data = mock.gaussian_mixture_boxes(mu, e, 0.3, 0.05)
    stars = StarPosteriors(np.full(n, 300.0), np.zeros(n), x0, nx, y0, ny, off, data)
    return np.stack([stars.image(k) for k in range(n)])


def test_samples_go_to_the_nearest_grid_point():
    # cell i is the point mu = 4 + 0.125 i (and E = 0.01 j): half a cell either side
    mu = np.array([[4.0 + 0.125 * 40, 4.0 + 0.125 * 40 + 0.06, 4.0 + 0.125 * 40 - 0.06,
                    4.0 + 0.125 * 40 + 0.07]])
    e = np.array([[0.50, 0.504, 0.496, 0.50]])
    stars = convert.posteriors_from_samples(mu, e, [300.0], [1.0])
    img = stars.image(0)
    assert img[40, 50] == pytest.approx(0.75)
    assert img[41, 50] == pytest.approx(0.25)
    assert img.sum() == pytest.approx(1.0)


def test_images_pass_through_and_hdf5_equals_array(tmp_path):
    rng = np.random.default_rng(1)
    images = _gaussian_images(rng, 7)
    images[3] *= 5.0  # any normalisation
    l, b = rng.uniform(300, 301, 7), rng.uniform(-1, 1, 7)
    a = convert.posteriors_from_images(images, l, b, threshold=0.0, chunk_stars=3)
    for k in range(7):
        np.testing.assert_allclose(a.image(k), images[k] / images[k].sum(), rtol=1e-5,
                                   atol=1e-9)
    path = tmp_path / "img.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("post", data=images, chunks=(1, N_DM, N_E))
    with h5py.File(path, "r") as f:
        h = convert.posteriors_from_images(f["post"], l, b, threshold=0.0, chunk_stars=3)
    for name in ("x0", "nx", "y0", "ny", "offsets", "data", "l", "b"):
        np.testing.assert_array_equal(getattr(a, name), getattr(h, name))


def test_bin_convention_images_are_moved_half_a_cell():
    rng = np.random.default_rng(2)
    mu = rng.normal(10.0, 0.3, (1, 200_000))
    e = rng.normal(1.0, 0.05, (1, 200_000))
    # images binned numpy-style: cell i is [4 + 0.125 i, 4 + 0.125 (i + 1))
    hist, _, _ = np.histogram2d(mu[0], e[0], bins=(4.0 + 0.125 * np.arange(N_DM + 1),
                                                   0.01 * np.arange(N_E + 1)))
    grid_mu = 4.0 + 0.125 * np.arange(N_DM)
    grid_e = 0.01 * np.arange(N_E)

    def means(stars):
        img = stars.image(0)
        return (img.sum(1) * grid_mu).sum(), (img.sum(0) * grid_e).sum()

    as_bins = convert.posteriors_from_images(hist[None], [300.0], [0.0], grid="bins")
    as_points = convert.posteriors_from_images(hist[None], [300.0], [0.0], grid="points")
    m_b, e_b = means(as_bins)
    m_p, e_p = means(as_points)
    assert abs(m_b - mu.mean()) < 0.01 and abs(e_b - e.mean()) < 0.001
    # read as points, the same image sits half a cell low (the baseline that loses)
    assert m_p - mu.mean() == pytest.approx(-0.0625, abs=0.01)
    assert e_p - e.mean() == pytest.approx(-0.005, abs=0.001)


def test_bad_inputs_are_named():
    images = _gaussian_images(np.random.default_rng(3), 3)
    with pytest.raises(ValueError, match="star 1: the image holds NaN"):
        bad = images.copy()
        bad[1, 5, 5] = np.nan
        convert.posteriors_from_images(bad, [1, 2, 3], [0, 0, 0])
    with pytest.raises(ValueError, match="star 2: the image holds negative"):
        bad = images.copy()
        bad[2, 5, 5] = -1
        convert.posteriors_from_images(bad, [1, 2, 3], [0, 0, 0])
    with pytest.raises(ValueError, match="star 0: the image is all zero"):
        bad = images.copy()
        bad[0] = 0
        convert.posteriors_from_images(bad, [1, 2, 3], [0, 0, 0])
    with pytest.raises(ValueError, match="NaN or infinite l or b"):
        convert.posteriors_from_images(images, [1, np.nan, 3], [0, 0, 0])
    with pytest.raises(ValueError, match="shape"):
        convert.posteriors_from_images(images[:, :100], [1, 2, 3], [0, 0, 0])
    with pytest.raises(ValueError, match="grid"):
        convert.posteriors_from_images(images, [1, 2, 3], [0, 0, 0], grid="edges")
    with pytest.raises(ValueError, match="no finite sample on the grid"):
        convert.posteriors_from_samples([[1.0, 2.0]], [[0.1, 0.2]], [1.0], [0.0])


def _raw_shard(path, stars, **override):
    """Write a shard bypassing StarPosteriors' checks (a corrupt or foreign file)."""
    arrays = {k: getattr(stars, k) for k in ("l", "b", "x0", "nx", "y0", "ny", "offsets",
                                             "data")}
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def test_star_posteriors_refuse_nan_positions_and_negative_offsets():
    stars = StarPosteriors(*(_small_catalogue().__dict__[k] for k in (
        "l", "b", "x0", "nx", "y0", "ny", "offsets", "data")))
    for field, value, msg in [("l", np.nan, "NaN or infinite l or b"),
                              ("b", np.inf, "NaN or infinite l or b"),
                              ("offsets", -4, "offsets must be non-negative")]:
        kw = {k: getattr(stars, k).copy() for k in ("l", "b", "x0", "nx", "y0", "ny",
                                                    "offsets", "data")}
        kw[field][1] = value
        with pytest.raises(ValueError, match=msg):
            StarPosteriors(**kw)


def _small_catalogue():
    from dustmaps_ext_build.galaxy import default_galaxy

    stars, _ = mock.mock_catalogue(default_galaxy(), 60, np.random.default_rng(0),
                                   l_range_deg=(329.9, 330.1), b_range_deg=(-1.6, -1.4))
    return stars


def test_build_checks_inputs_before_any_work(tmp_path, capsys):
    stars = _small_catalogue()
    opts = ["--nside", "1024", "--nside-block", "256", "--rounds", "20", "--sweeps", "2",
            "--scheduler", "synchronous", "--no-progress"]
    work = tmp_path / "work"
    cases = {
        "nan_l": (_raw_shard(tmp_path / "nan.npz", stars, l=np.where(
            np.arange(stars.n_star) == 4, np.nan, stars.l)), "NaN or infinite l or b"),
        "neg_offset": (_raw_shard(tmp_path / "neg.npz", stars, offsets=np.where(
            np.arange(stars.n_star) == 2, -10, stars.offsets)), "negative posterior offsets"),
        # the default footprint is DECaPS's (l 239..366): (330, -1.5) is in it, so move away
        "outside": (_raw_shard(tmp_path / "out.npz", stars, l=stars.l - 200.0),
                    "change --l-range/--b-range"),
    }
    for name, (path, msg) in cases.items():
        argv = [str(path), str(tmp_path / f"{name}.h5"), "--work-dir", str(work)] + opts
        assert cli.build_decaps_main(argv) == 2, name
        err = capsys.readouterr().err
        assert msg in err, (name, err)
        assert not work.exists(), name  # nothing was started
    # the Python entry point checks the same, also for catalogues in memory
    cfg = pipeline.DecapsBuildConfig(nside=1024, nside_block=256, l_range_deg=(10.0, 20.0))
    with pytest.raises(ValueError, match="--l-range/--b-range"):
        pipeline.build_decaps(stars, tmp_path / "m.h5", work, cfg, scheduler="synchronous")
    assert not work.exists()
    assert partition.check_footprint(stars.l, stars.b, pipeline.DecapsBuildConfig()) == \
        stars.n_star


def test_optional_metadata_and_cuts_skipped_with_a_warning(tmp_path, caplog):
    from dustmaps_ext_build.decaps import filters

    full = _small_catalogue()
    bare = StarPosteriors(full.l, full.b, full.x0, full.nx, full.y0, full.ny, full.offsets,
                          full.data)
    assert np.isnan(bare.chi2_best).all() and (bare.n_bands == 0).all()
    path = _raw_shard(tmp_path / "bare.npz", bare)  # only the required fields
    back = StarPosteriors.load(path)
    assert np.isnan(back.m_init_median).all()
    with caplog.at_level("WARNING"):
        masks = filters.quality_mask(back)
    assert masks["keep"].all()
    text = caplog.text
    for cut in ("chi2", "m_dwarf", "distance", "unphysical"):
        assert cut in text
    # with the metadata, the cuts do remove stars (the mock holds contaminants)
    assert not filters.quality_mask(full)["keep"].all()
