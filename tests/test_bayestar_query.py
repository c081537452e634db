"""Bayestar19Query against dustmaps' BayestarQuery on the very same synthetic files,
the float32 kernels against numpy, and the synthetic writer against the galaxy's truth."""

from __future__ import annotations


import astropy.units as u
import h5py
import healpy as hp
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from dustmaps_ext_build.galaxy import default_galaxy
from dustmaps_ext_build.writers.bayestar import write_simulated_bayestar19
from dustmaps_ext_build.writers.decaps import DM_BIN_EDGES
from dustmaps_ext._core import los
from dustmaps_ext._core.pixels import PixelIndex
from helpers.reference import interpolate_like_dustmaps, quiet
from dustmaps_ext.bayestar import Bayestar19Query, MapFileError, default_map_path

MODES = [("mean", None), ("best", None), ("median", None), ("samples", None),
         ("percentile", 30.0), ("percentile", [5, 50, 84.1])]


_quiet = quiet


@pytest.fixture(scope="session")
def b19_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bayestar") / "bayestar2019.h5"
    return write_simulated_bayestar19(path, nsides=(32, 64, 128), n_samples=5)


@pytest.fixture(scope="session")
def b19_reference(b19_file):
    from dustmaps.bayestar import BayestarQuery

    return _quiet(BayestarQuery, map_fname=str(b19_file), version="bayestar2019")


@pytest.fixture(scope="session")
def b19(b19_file):
    return Bayestar19Query(b19_file, progress=False)


def _coords(n, seed, with_distance=True):
    rng = np.random.default_rng(seed)
    l = rng.uniform(0.0, 360.0, n)
    b = rng.uniform(-14.0, 14.0, n)  # in and out of the synthetic footprint (|b| < 12, dec > -30)
    if not with_distance:
        return SkyCoord(l * u.deg, b * u.deg, frame="galactic")
    d = 10.0 ** rng.uniform(-2.5, 2.2, n)
    return SkyCoord(l * u.deg, b * u.deg, distance=d * u.kpc, frame="galactic")


def assert_identical(mine, ref):
    mine, ref = np.asarray(mine), np.asarray(ref)
    assert mine.shape == ref.shape and mine.dtype == ref.dtype
    assert np.array_equal(mine, ref, equal_nan=True)


def test_synthetic_file_has_the_real_structure(b19_file):
    with h5py.File(b19_file) as f:
        info = f["pixel_info"]
        assert info.dtype.names == ("nside", "healpix_index", "DM_reliable_min",
                                    "DM_reliable_max", "converged")
        pix = info[()]
        assert set(np.unique(pix["nside"])) == {32, 64, 128}
        assert f["samples"].dtype == np.float32 and f["best_fit"].dtype == np.float32
        assert f["samples"].shape == (pix.size, 5, 120)
        assert np.array_equal(info.attrs["DM_bin_edges"], DM_BIN_EDGES)
        assert np.isnan(pix["DM_reliable_min"]).any() and np.isnan(pix["DM_reliable_max"]).any()
        # pixels are listed nside by nside, so the table is not in sky order
        starts = pix["healpix_index"].astype(np.int64) * (128 // pix["nside"].astype(np.int64)) ** 2
        assert np.any(np.diff(starts) < 0)
        # the footprint: dec > -30 deg at every pixel centre
        for n in (32, 64, 128):
            sel = pix["nside"] == n
            l, b = hp.pix2ang(n, pix["healpix_index"][sel].astype(np.int64), nest=True, lonlat=True)
            assert np.all(SkyCoord(l * u.deg, b * u.deg, frame="galactic").icrs.dec.deg > -30)


def test_best_fit_times_0884_is_the_galaxy_truth(b19_file):
    with h5py.File(b19_file) as f:
        pix = f["pixel_info"][()]
        rows = np.arange(0, pix.size, 97)
        best = f["best_fit"][()][rows]
    l, b = np.empty(rows.size), np.empty(rows.size)
    for n in np.unique(pix["nside"][rows]):
        sel = pix["nside"][rows] == n
        l[sel], b[sel] = hp.pix2ang(int(n), pix["healpix_index"][rows][sel].astype(np.int64),
                                    nest=True, lonlat=True)
    d = 10.0 ** (0.2 * DM_BIN_EDGES.astype(np.float64) - 2.0)
    truth = default_galaxy().cumulative_profile(l, b, d)
    np.testing.assert_allclose(best.astype(np.float64) * 0.884, truth, rtol=1e-6, atol=1e-9)
    assert truth[:, -1].max() > 0.5  # real dust along some sightlines


@pytest.mark.parametrize("with_distance", [True, False])
@pytest.mark.parametrize("mode,pct", MODES)
def test_every_deterministic_mode_equals_dustmaps(b19, b19_reference, with_distance, mode, pct):
    coords = _coords(3000 if with_distance else 400, seed=1, with_distance=with_distance)
    ref, ref_flags = _quiet(b19_reference.query, coords, mode=mode, pct=pct, return_flags=True)
    mine, flags = b19.query(coords, mode=mode, pct=pct, return_flags=True)
    if mode == "percentile" and ref.dtype != mine.dtype:
        # numpy's nanpercentile of float32 with a list of percentiles answers float32 when an
        # all-NaN row (a coordinate outside the map) is present, float64 otherwise; ours are
        # always float64 and round to dustmaps' float32 exactly
        assert ref.dtype == np.float32 and mine.dtype == np.float64
        mine = mine.astype(np.float32)
    assert_identical(mine, ref)
    assert flags.dtype == ref_flags.dtype
    for name in ref_flags.dtype.names:
        assert_identical(flags[name], ref_flags[name])
    inside = np.isfinite(mine.reshape(mine.shape[0], -1)).all(axis=1)
    assert inside.any() and (~inside).any()


def test_max_samples_equals_dustmaps(b19_file):
    from dustmaps.bayestar import BayestarQuery

    ref = _quiet(BayestarQuery, map_fname=str(b19_file), max_samples=2, version="bayestar2019")
    mine = Bayestar19Query(b19_file, max_samples=2, progress=False)
    assert mine.n_samples == 2
    for with_distance in (True, False):
        coords = _coords(500, seed=2, with_distance=with_distance)
        for mode in ("mean", "median", "samples", "best"):
            assert_identical(mine(coords, mode=mode), _quiet(ref, coords, mode=mode))


def test_random_modes_draw_from_the_samples(b19):
    coords = _coords(2000, seed=3)
    samples = b19(coords, mode="samples")
    draw = b19(coords, mode="random_sample", rng=5)
    inside = np.isfinite(samples[:, 0])
    assert np.all(np.any(samples[inside] == draw[inside, None], axis=1))
    assert np.all(np.isnan(draw[~inside]))
    assert len(np.unique(np.argmax(samples[inside] == draw[inside, None], axis=1))) == 5
    assert_identical(b19(coords, mode="random_sample", rng=5), draw)
    # per pixel: the same sample for every distance along a sightline
    l = np.repeat([10.0, 100.0, 200.0], 10)
    b = np.repeat([1.0, -2.0, 3.0], 10)
    d = np.tile(np.geomspace(0.3, 6.0, 10), 3)
    c = SkyCoord(l * u.deg, b * u.deg, distance=d * u.kpc, frame="galactic")
    s = b19(c, mode="samples").reshape(3, 10, 5)
    v = b19(c, mode="random_sample_per_pix", rng=2).reshape(3, 10)
    for si, vi in zip(s, v):
        assert np.all(si == vi[:, None], axis=0).any()


def test_shapes_and_frames_follow_dustmaps(b19, b19_reference):
    rng = np.random.default_rng(4)
    for shape in [(), (3, 4)]:
        gal = SkyCoord(rng.uniform(20, 200, shape) * u.deg, rng.uniform(-8, 8, shape) * u.deg,
                       distance=rng.uniform(0.1, 5, shape) * u.kpc, frame="galactic")
        mine = b19(gal.icrs, mode="samples")
        assert np.shape(mine) == shape + (5,)
        assert_identical(mine, _quiet(b19_reference, gal, mode="samples"))
    assert np.array_equal(b19.distmods.to_value(u.mag), b19_reference.distmods.to_value(u.mag))


@pytest.mark.parametrize("mode,pct,message", [
    ("typo", None, "'typo' is not a valid mode; valid modes are: 'random_sample'"),
    ("percentile", None, "needs pct"),
    ("percentile", -1, r"pct must be .* in \[0, 100\]"),
])
def test_invalid_mode_and_pct(b19, mode, pct, message):
    with pytest.raises(ValueError, match=message):
        b19(_coords(3, seed=0), mode=mode, pct=pct)


def test_bad_inputs(b19, b19_file, tmp_path, dustmaps_data_dir):
    with pytest.raises(TypeError, match="SkyCoord"):
        b19.query([1.0, 2.0])
    with pytest.raises(ValueError, match="max_samples must be between 1 and 5"):
        Bayestar19Query(b19_file, max_samples=6, progress=False)
    with pytest.raises(TypeError, match="max_samples must be an integer"):
        Bayestar19Query(b19_file, max_samples=2.5, progress=False)
    with pytest.raises(FileNotFoundError, match="dustmaps-ext fetch bayestar2019"):
        Bayestar19Query()
    with pytest.raises(FileNotFoundError):
        default_map_path()
    text = tmp_path / "text.h5"
    text.write_text("<html>not found</html>")
    with pytest.raises(MapFileError, match="text.h5 is not a readable HDF5"):
        Bayestar19Query(text)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(b19_file.read_bytes()[:-20000])
    with pytest.raises(MapFileError, match="truncated.h5"):
        Bayestar19Query(truncated, progress=False)
    partial = tmp_path / "partial.h5"
    with h5py.File(b19_file) as src, h5py.File(partial, "w") as f:
        src.copy("pixel_info", f)
        src.copy("samples", f)
    with pytest.raises(MapFileError, match="missing: dataset best_fit"):
        Bayestar19Query(partial)
    decaps_like = tmp_path / "decaps_like.h5"
    with h5py.File(decaps_like, "w") as f:
        f.create_group("pixel_info")
    with pytest.raises(MapFileError, match="not a Bayestar19 map"):
        Bayestar19Query(decaps_like)
    # positions that are not on the sky, NaN distances: NaN and False flags
    with np.errstate(invalid="ignore"):
        c = SkyCoord([10.0, np.nan, 10.0] * u.deg, [1.0, 1.0, 1.0] * u.deg,
                     distance=[1.0, 1.0, np.nan] * u.kpc, frame="galactic")
    out, flags = b19(c, mode="mean", return_flags=True)
    assert np.isfinite(out[0]) and np.all(np.isnan(out[1:]))
    assert not flags["reliable_dist"][1:].any() and not flags["converged"][1]


def test_default_path_is_where_dustmaps_looks(b19_file, dustmaps_data_dir):
    folder = dustmaps_data_dir / "bayestar"
    folder.mkdir()
    (folder / "bayestar2019.h5").write_bytes(b19_file.read_bytes())
    assert Bayestar19Query(progress=False).map_fname == folder / "bayestar2019.h5"


# --------------------------------------------------------------------------- shared pieces
def test_float32_interpolation_equals_dustmaps_formula():
    rng = np.random.default_rng(1)
    edges = DM_BIN_EDGES
    data = np.sort(rng.uniform(0, 3, (50, 4, 120)), axis=2).astype(np.float32)
    rows = rng.integers(-1, 50, 4000)
    dm = rng.uniform(0.0, 22.0, 4000)
    dm[::50] = edges[rng.integers(0, 120, 80)]
    got = los.values_at_distmod(data, rows, dm, edges, slot_first=1, n_slots=3)
    # dustmaps' order of operations, into a float32 array
    want = interpolate_like_dustmaps(data[:, 1:4].astype(np.float64), rows, dm, edges, np.float32)
    assert np.array_equal(got, want.astype(np.float64), equal_nan=True)


@pytest.mark.parametrize("n", [1, 2, 5, 6])
def test_float32_median_equals_numpy(n):
    rng = np.random.default_rng(n)
    vals = rng.lognormal(0, 1.5, (4000, n)).astype(np.float32)
    vals[::97, 0] = np.nan
    got = los.median_of_values(vals.astype(np.float64), np.float32).astype(np.float32)
    assert np.array_equal(got, np.median(vals, axis=1), equal_nan=True)
    prof = los.median_of_profiles(vals[:, :, None].repeat(3, axis=2), np.arange(-1, 3999), 0, n)
    assert prof.dtype == np.float32
    assert np.array_equal(prof[1:, 0], np.median(vals[:3999], axis=1), equal_nan=True)
    assert np.all(np.isnan(prof[0]))


def test_unsupported_value_type_is_refused():
    with pytest.raises(TypeError, match="float16 bit patterns .* or float32"):
        los.profiles(np.zeros((2, 1, 3)), np.array([0]))


def test_pixel_index_on_an_unsorted_table():
    rng = np.random.default_rng(3)
    nsides, pixels = [], []
    for parent in range(12 * 8 ** 2):
        level = rng.integers(0, 3)
        n = 8 << level
        nsides.append(np.full(4 ** level, n))
        pixels.append(parent * 4 ** level + np.arange(4 ** level))
    nsides, pixels = np.concatenate(nsides), np.concatenate(pixels)
    order = np.lexsort((pixels, nsides))  # nside by nside, as Bayestar19 files list them
    nsides, pixels = nsides[order], pixels[order]
    with pytest.raises(ValueError, match="must be sorted"):
        PixelIndex(pixels, nsides)
    idx = PixelIndex(pixels, nsides, sort=True)
    l = rng.uniform(0, 360, 20_000)
    b = np.degrees(np.arcsin(rng.uniform(-1, 1, 20_000)))
    want = np.full(l.size, -1)
    for n in np.unique(nsides):
        p = hp.ang2pix(int(n), l, b, nest=True, lonlat=True)
        rows_n = np.flatnonzero(nsides == n)
        lookup = dict(zip(pixels[rows_n].tolist(), rows_n.tolist()))
        want = np.where(want >= 0, want, [lookup.get(x, -1) for x in p.tolist()])
    assert np.array_equal(idx.rows(l, b), want)
    assert np.all(want >= 0)

