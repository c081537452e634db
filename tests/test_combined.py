"""BayestarDECaPSQuery: coverage, values equal to each map queried alone, overlap rules, flags.

The reference for "which map has a pixel here" is healpy plus ``np.isin`` on the files'
pixel tables, independent of the package's pixel index.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import astropy.units as u
import h5py
import healpy as hp
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from dustmaps_ext_build.galaxy import default_galaxy
from dustmaps_ext_build.simulated_decaps import in_decaps_footprint, write_simulated_decaps
from dustmaps_ext_build.writers.bayestar import write_bayestar19, write_simulated_bayestar19
from dustmaps_ext.bayestar import Bayestar19Query
from dustmaps_ext.combined import BayestarDECaPSQuery
from dustmaps_ext.decaps import DECaPSQuery, DECaPSQueryLite, repack
from helpers.reference import quiet

DECAPS_NSIDE = 64
B19_NSIDES = (32, 64, 128)


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("combined")
    published = write_simulated_decaps(folder / "decaps.h5", nside=DECAPS_NSIDE, chunk_pixels=700)
    mean_only = write_simulated_decaps(folder / "decaps_mean.h5", nside=DECAPS_NSIDE,
                                       chunk_pixels=700, mean_only=True)
    return {"decaps": published,
            "decaps_repacked": repack(published, folder / "decaps_repacked.h5", progress=False),
            "decaps_mean": mean_only,
            "bayestar": write_simulated_bayestar19(folder / "bayestar2019.h5", nsides=B19_NSIDES,
                                                   n_samples=4)}


@pytest.fixture(scope="session")
def singles(files):
    return {"decaps": DECaPSQueryLite(files["decaps_repacked"]),
            "bayestar": Bayestar19Query(files["bayestar"], progress=False)}


@pytest.fixture(scope="session")
def combined(singles):
    return {p: BayestarDECaPSQuery(singles["decaps"], singles["bayestar"], prefer=p)
            for p in ("decaps", "bayestar", "reliable")}


def expected_coverage(files, l, b):
    """(has DECaPS pixel, has Bayestar19 pixel) from the files' tables, with healpy."""
    with h5py.File(files["decaps"]) as f:
        dec = f["pixel_info/healpix_index"][()].astype(np.int64)
    has_d = np.isin(hp.ang2pix(DECAPS_NSIDE, l, b, nest=True, lonlat=True), dec)
    with h5py.File(files["bayestar"]) as f:
        info = f["pixel_info"][()]
    has_b = np.zeros(l.size, bool)
    for n in np.unique(info["nside"]):
        table = info["healpix_index"][info["nside"] == n].astype(np.int64)
        has_b |= np.isin(hp.ang2pix(int(n), l, b, nest=True, lonlat=True), table)
    return has_d, has_b


def _disk_coords(n, seed, with_distance=True):
    rng = np.random.default_rng(seed)
    l = rng.uniform(0.0, 360.0, n)
    b = rng.uniform(-10.0, 10.0, n)
    if not with_distance:
        return SkyCoord(l * u.deg, b * u.deg, frame="galactic")
    d = 10.0 ** rng.uniform(-2.0, 1.8, n)
    return SkyCoord(l * u.deg, b * u.deg, distance=d * u.kpc, frame="galactic")


def to_ebv(bayestar_values, scale=0.884):
    """The documented conversion: in the answer's precision (float32 x float32(factor), or
    float64 x factor for percentiles), then float32."""
    v = np.asarray(bayestar_values)
    return (v * v.dtype.type(scale)).astype(np.float32)


def assert_identical(mine, ref):
    mine, ref = np.asarray(mine), np.asarray(ref)
    assert mine.shape == ref.shape, (mine.shape, ref.shape)
    assert np.array_equal(mine, ref, equal_nan=mine.dtype.kind in "fc" and ref.dtype.kind in "fc")


_quiet = quiet


# --------------------------------------------------------------------------- coverage
def test_every_grid_point_of_the_disk_comes_from_the_right_map(files, combined):
    l, b = np.meshgrid(np.arange(0.0, 360.0, 0.5), np.arange(-9.75, 10.0, 0.5))
    l, b = l.ravel(), b.ravel()
    coords = SkyCoord(l * u.deg, b * u.deg, distance=np.full(l.size, 2.0) * u.kpc, frame="galactic")
    values, flags = combined["decaps"](coords, return_flags=True)
    has_d, has_b = expected_coverage(files, l, b)
    want = np.where(has_d, "decaps", np.where(has_b, "bayestar", "none"))
    assert_identical(flags["source"], want)
    assert np.all(np.isfinite(values[want != "none"])) and np.all(np.isnan(values[want == "none"]))
    # the geometry behind the tables
    dec = coords.icrs.dec.deg
    deep_in_decaps = in_decaps_footprint(l, b) & (np.abs(b) < 9) & ((l > 240.5) | (l < 4.5))
    assert np.all(flags["source"][deep_in_decaps] == "decaps")
    far_from_decaps = (l > 8.0) & (l < 237.0)
    north = far_from_decaps & (dec > -28.0)
    assert np.all(flags["source"][north] == "bayestar")
    south_gap = far_from_decaps & (dec < -32.0)
    assert np.all(flags["source"][south_gap] == "none")
    counts = {s: int(np.sum(flags["source"] == s)) for s in ("decaps", "bayestar", "none")}
    assert counts["decaps"] > 5000 and counts["bayestar"] > 10000 and counts["none"] > 0
    assert np.sum(has_d & has_b) > 100  # the overlap near l = 0-6 and 239-250 deg


def test_prefer_bayestar_and_reliable_keep_the_coverage(files, combined):
    coords = _disk_coords(20_000, seed=1)
    has_d, has_b = expected_coverage(files, coords.l.deg, coords.b.deg)
    _, fb = combined["bayestar"](coords, return_flags=True)
    assert_identical(fb["source"], np.where(has_b, "bayestar", np.where(has_d, "decaps", "none")))
    _, fr = combined["reliable"](coords, return_flags=True)
    only = has_d ^ has_b
    assert_identical(fr["source"][only], np.where(has_d, "decaps", "bayestar")[only])
    assert np.all(fr["source"][~has_d & ~has_b] == "none")


# --------------------------------------------------------------------------- values
MODES = [("mean", None), ("median", None), ("samples", None), ("percentile", 20.0),
         ("percentile", [16, 50, 84])]


@pytest.mark.parametrize("with_distance", [True, False])
@pytest.mark.parametrize("mode,pct", MODES)
def test_values_equal_each_map_queried_alone(combined, singles, with_distance, mode, pct):
    coords = _disk_coords(4000 if with_distance else 500, seed=2, with_distance=with_distance)
    values, flags = combined["decaps"](coords, mode=mode, pct=pct, return_flags=True)
    assert values.dtype == np.float32
    src = flags["source"]
    d_sel, b_sel = src == "decaps", src == "bayestar"
    want_d = singles["decaps"](coords[d_sel], mode=mode, pct=pct)
    want_b = singles["bayestar"](coords[b_sel], mode=mode, pct=pct)
    if mode == "samples":
        assert values.shape[1] == 4  # min(5 DECaPS samples, 4 Bayestar19 samples)
        want_d = want_d[:, :4]
    assert_identical(values[d_sel], np.asarray(want_d).astype(np.float32))
    assert_identical(values[b_sel], to_ebv(want_b))
    assert np.all(np.isnan(values[src == "none"]))
    assert np.isfinite(values[d_sel]).all() and np.isfinite(values[b_sel]).all()


def test_dustmaps_bayestar_object_gives_the_same_answers(files, singles, combined):
    from dustmaps.bayestar import BayestarQuery

    ref = _quiet(BayestarQuery, map_fname=str(files["bayestar"]), version="bayestar2019")
    via_dustmaps = BayestarDECaPSQuery(singles["decaps"], ref, prefer="reliable")
    for with_distance in (True, False):
        coords = _disk_coords(1500 if with_distance else 200, seed=3, with_distance=with_distance)
        for mode, pct in [("mean", None), ("median", None), ("samples", None), ("percentile", 40.0)]:
            got, got_flags = _quiet(via_dustmaps, coords, mode=mode, pct=pct, return_flags=True)
            want, want_flags = combined["reliable"](coords, mode=mode, pct=pct, return_flags=True)
            assert_identical(got, want)
            assert got_flags.dtype == want_flags.dtype
            for name in want_flags.dtype.names:
                assert_identical(got_flags[name], want_flags[name])
    # zero and NaN distances follow this package's rules, without warnings
    odd = SkyCoord([90.0, 90.0] * u.deg, [1.0, 1.0] * u.deg, distance=[0.0, np.nan] * u.kpc,
                   frame="galactic")
    with contextlib.redirect_stdout(io.StringIO()):
        got = via_dustmaps(odd, mode="median")
    assert got[0] == 0 and np.isnan(got[1])


def test_random_sample_is_a_sample_of_the_answering_map(combined, singles):
    coords = _disk_coords(3000, seed=4)
    draw, flags = combined["decaps"](coords, mode="random_sample", return_flags=True, rng=7)
    for name, scale in (("decaps", 1.0), ("bayestar", 0.884)):
        sel = flags["source"] == name
        samples = singles[name](coords[sel], mode="samples")
        samples = samples.astype(np.float32) if scale == 1.0 else to_ebv(samples)
        hit = samples == draw[sel, None]
        assert np.all(hit.any(axis=1))
        assert len(np.unique(np.argmax(hit, axis=1))) == samples.shape[1]
    assert_identical(combined["decaps"](coords, mode="random_sample", rng=7), draw)


def test_unit_conversion_against_the_galaxy_truth(files, singles):
    """Bayestar19 best fit x 0.884 is E(B-V) of the simulated galaxy: at a pixel centre and a
    distance-modulus edge, the combined answer is the truth (to float32 precision)."""
    best = BayestarDECaPSQuery(singles["decaps"], singles["bayestar"], bayestar_mean="best")
    with h5py.File(files["bayestar"]) as f:
        info = f["pixel_info"][()]
    rng = np.random.default_rng(5)
    rows = rng.choice(info.size, 300, replace=False)
    l, b = np.empty(300), np.empty(300)
    for n in np.unique(info["nside"][rows]):
        sel = info["nside"][rows] == n
        l[sel], b[sel] = hp.pix2ang(int(n), info["healpix_index"][rows][sel].astype(np.int64),
                                    nest=True, lonlat=True)
    k = rng.integers(0, 120, 300)
    dm = best.distmods.to_value(u.mag)[k].astype(np.float64)
    d = 10.0 ** (0.2 * dm - 2.0)
    values, flags = best(SkyCoord(l * u.deg, b * u.deg, distance=d * u.kpc, frame="galactic"),
                         return_flags=True)
    edges_kpc = 10.0 ** (0.2 * best.distmods.to_value(u.mag).astype(np.float64) - 2.0)
    truth = default_galaxy().cumulative_profile(l, b, edges_kpc)[np.arange(300), k]
    sel = flags["source"] == "bayestar"
    assert sel.sum() > 150
    np.testing.assert_allclose(values[sel], truth[sel], rtol=2e-6, atol=1e-7)
    other = BayestarDECaPSQuery(singles["decaps"], singles["bayestar"], bayestar_to_ebv=0.996,
                                bayestar_mean="best")
    v996 = other(SkyCoord(l * u.deg, b * u.deg, distance=d * u.kpc, frame="galactic"))
    np.testing.assert_allclose(v996[sel], truth[sel] * 0.996 / 0.884, rtol=2e-6, atol=1e-7)
    assert_identical(v996[~sel], values[~sel])  # DECaPS answers do not change


# --------------------------------------------------------------------------- overlap rules
def _overlap_coords(files, n, seed, with_distance=True):
    rng = np.random.default_rng(seed)
    l = np.concatenate([rng.uniform(-4.0, 8.0, 4 * n) % 360.0, rng.uniform(236.0, 252.0, 4 * n)])
    b = rng.uniform(-10.0, 10.0, l.size)
    has_d, has_b = expected_coverage(files, l, b)
    keep = np.flatnonzero(has_d & has_b)[:n]
    assert keep.size == n
    l, b = l[keep], b[keep]
    if not with_distance:
        return SkyCoord(l * u.deg, b * u.deg, frame="galactic")
    d = 10.0 ** rng.uniform(-1.5, 1.8, n)  # distance moduli 2.5 to 19
    return SkyCoord(l * u.deg, b * u.deg, distance=d * u.kpc, frame="galactic")


def test_overlap_prefer_decaps_and_bayestar(files, combined, singles):
    coords = _overlap_coords(files, 400, seed=6)
    vd, fd = combined["decaps"](coords, return_flags=True)
    vb, fb = combined["bayestar"](coords, return_flags=True)
    assert np.all(fd["source"] == "decaps") and np.all(fb["source"] == "bayestar")
    assert_identical(vd, singles["decaps"](coords).astype(np.float32))
    assert_identical(vb, to_ebv(singles["bayestar"](coords, mode="mean")))


def test_overlap_prefer_reliable_with_distances(files, combined, singles):
    coords = _overlap_coords(files, 600, seed=7)
    d_val, d_flags = singles["decaps"](coords, mode="median", return_flags=True)
    b_val, b_flags = singles["bayestar"](coords, mode="median", return_flags=True)
    use_b = ~d_flags["reliable_dist"] & b_flags["reliable_dist"]
    values, flags = combined["reliable"](coords, mode="median", return_flags=True)
    assert_identical(flags["source"], np.where(use_b, "bayestar", "decaps"))
    assert_identical(values, np.where(use_b, to_ebv(b_val), d_val.astype(np.float32)))
    assert 20 < use_b.sum() < use_b.size - 20
    # both or neither reliable: DECaPS
    neither = ~d_flags["reliable_dist"] & ~b_flags["reliable_dist"]
    assert neither.any() and np.all(flags["source"][neither] == "decaps")


@pytest.mark.parametrize("mode,pct", [("mean", None), ("samples", None), ("percentile", [10, 90])])
def test_overlap_prefer_reliable_without_distances_goes_bin_by_bin(files, combined, singles,
                                                                   mode, pct):
    coords = _overlap_coords(files, 300, seed=8, with_distance=False)
    d_val, d_flags = singles["decaps"](coords, mode=mode, pct=pct, return_flags=True)
    b_val, b_flags = singles["bayestar"](coords, mode=mode, pct=pct, return_flags=True)
    edges = combined["reliable"].distmods.to_value(u.mag)[None, :]

    def inside(fl):
        lo = fl["min_reliable_distmod"][:, None]
        hi = fl["max_reliable_distmod"][:, None]
        return (edges >= lo) & (edges <= hi) & np.isfinite(lo) & np.isfinite(hi)

    use_b = ~inside(d_flags) & inside(b_flags)  # (n, 120)
    values, flags = combined["reliable"](coords, mode=mode, pct=pct, return_flags=True)
    if mode == "samples":
        d_val, mask = d_val[:, :4], use_b[:, None, :]
    elif mode == "percentile":
        mask = use_b[:, :, None]
    else:
        mask = use_b
    assert_identical(values, np.where(mask, to_ebv(b_val), np.asarray(d_val).astype(np.float32)))
    assert_identical(flags["bin_source"], np.where(use_b, 2, 1).astype(np.uint8))
    n_b = use_b.sum(axis=1)
    want_source = np.where(n_b == 0, "decaps", np.where(n_b == 120, "bayestar", "mixed"))
    assert_identical(flags["source"], want_source)
    assert (want_source == "mixed").sum() > 50
    mixed = want_source == "mixed"  # a mixed profile carries DECaPS' flags
    assert_identical(flags["min_reliable_distmod"][mixed], d_flags["min_reliable_distmod"][mixed])
    assert_identical(flags["infilled"][mixed], d_flags["infilled"][mixed])


# --------------------------------------------------------------------------- flags
def test_flags_are_those_of_the_answering_map(combined, singles):
    for with_distance in (True, False):
        coords = _disk_coords(3000, seed=9, with_distance=with_distance)
        _, flags = combined["decaps"](coords, return_flags=True)
        names = ("source", "converged", "infilled")
        names += ("reliable_dist",) if with_distance else ("min_reliable_distmod", "max_reliable_distmod")
        assert flags.dtype.names == names
        d_sel, b_sel, none = (flags["source"] == s for s in ("decaps", "bayestar", "none"))
        _, fd = singles["decaps"](coords[d_sel], return_flags=True)
        _, fb = singles["bayestar"](coords[b_sel], mode="mean", return_flags=True)
        for name in fd.dtype.names:
            assert_identical(flags[name][d_sel], fd[name])
        for name in fb.dtype.names:
            assert_identical(flags[name][b_sel], fb[name])
        assert not flags["infilled"][b_sel].any() and flags["infilled"][d_sel].any()
        assert not flags["converged"][none].any()
        if with_distance:
            assert not flags["reliable_dist"][none].any()
            assert flags["reliable_dist"][d_sel].any() and flags["reliable_dist"][b_sel].any()
        else:
            assert np.all(np.isnan(flags["min_reliable_distmod"][none]))
            # a NaN range of Bayestar19 reads +inf / -inf, as in dustmaps
            assert np.isinf(flags["min_reliable_distmod"][b_sel]).any()


# --------------------------------------------------------------------------- shapes, input
def test_shapes_frames_and_grid(combined, singles):
    rng = np.random.default_rng(10)
    q = combined["decaps"]
    for shape in [(), (3, 4)]:
        gal = SkyCoord(rng.uniform(0, 360, shape) * u.deg, rng.uniform(-9, 9, shape) * u.deg,
                       distance=rng.uniform(0.1, 5, shape) * u.kpc, frame="galactic")
        assert np.shape(q(gal.icrs)) == shape
        assert np.shape(q(gal, mode="samples")) == shape + (4,)
        assert np.shape(q(gal, mode="percentile", pct=[5, 95])) == shape + (2,)
        no_d = SkyCoord(gal.l, gal.b, frame="galactic")
        assert np.shape(q(no_d)) == shape + (120,)
        assert np.shape(q(no_d, mode="samples")) == shape + (4, 120)
        v, f = q(no_d, return_flags=True)
        assert np.shape(f) == shape
    assert_identical(q.distmods, singles["decaps"].distmods)
    np.testing.assert_allclose(q.distances.to_value(u.kpc), singles["bayestar"].distances.to_value(u.kpc))


@pytest.mark.parametrize("mode,pct,message", [
    ("best", None, "'best' is not a valid mode; valid modes are: 'mean'"),
    ("random_sample_per_pix", None, "not a valid mode"),
    ("percentile", None, "needs pct"),
    ("percentile", 101, r"pct must be .* in \[0, 100\]"),
    ("percentile", [10, "x"], "pct must be"),
])
def test_invalid_mode_and_pct(combined, mode, pct, message):
    with pytest.raises(ValueError, match=message):
        combined["decaps"](_disk_coords(3, seed=0), mode=mode, pct=pct)


def test_bad_construction(files, singles, tmp_path):
    dq, bq = singles["decaps"], singles["bayestar"]
    with pytest.raises(ValueError, match="prefer must be one of"):
        BayestarDECaPSQuery(dq, bq, prefer="best")
    for bad in (0, -0.884, np.nan, np.inf):
        with pytest.raises(ValueError, match="bayestar_to_ebv must be a positive finite"):
            BayestarDECaPSQuery(dq, bq, bayestar_to_ebv=bad)
    with pytest.raises(TypeError, match="bayestar_to_ebv must be a number"):
        BayestarDECaPSQuery(dq, bq, bayestar_to_ebv="0.884")
    with pytest.raises(ValueError, match="bayestar_mean"):
        BayestarDECaPSQuery(dq, bq, bayestar_mean="median")
    with pytest.raises(TypeError, match="decaps must be a file name"):
        BayestarDECaPSQuery(bq, bq)
    with pytest.raises(TypeError, match="bayestar must be a file name"):
        BayestarDECaPSQuery(dq, dq)
    other = write_bayestar19(tmp_path / "other_edges.h5", nside=1, healpix_index=np.arange(12),
                             samples=np.zeros((12, 2, 120)), best_fit=np.zeros((12, 120)),
                             dm_reliable_min=np.full(12, 5.0), dm_reliable_max=np.full(12, 15.0),
                             converged=np.ones(12, bool),
                             dm_bin_edges=(3.0 + 0.125 * np.arange(120)).astype(np.float32))
    with pytest.raises(ValueError, match="different distance-modulus edges"):
        BayestarDECaPSQuery(dq, other)


def test_file_names_and_defaults(files, combined, dustmaps_data_dir):
    with pytest.raises(FileNotFoundError, match=r"dustmaps_ext\.decaps\.fetch\(\)"):
        BayestarDECaPSQuery()
    (dustmaps_data_dir / "decaps").mkdir()
    (dustmaps_data_dir / "decaps" / "decaps_mean_and_samples_repacked.h5").write_bytes(
        files["decaps_repacked"].read_bytes())
    with pytest.raises(FileNotFoundError, match="dustmaps-ext fetch bayestar2019"):
        BayestarDECaPSQuery()
    (dustmaps_data_dir / "bayestar").mkdir()
    (dustmaps_data_dir / "bayestar" / "bayestar2019.h5").write_bytes(files["bayestar"].read_bytes())
    coords = _disk_coords(2000, seed=11)
    by_default = BayestarDECaPSQuery(progress=False)
    assert isinstance(by_default._decaps_query, DECaPSQueryLite)
    assert_identical(by_default(coords, mode="median"), combined["decaps"](coords, mode="median"))
    by_name = BayestarDECaPSQuery(str(files["decaps"]), files["bayestar"], progress=False)
    assert isinstance(by_name._decaps_query, DECaPSQuery)  # the published layout: in RAM
    assert_identical(by_name(coords, mode="median"), combined["decaps"](coords, mode="median"))


def test_mean_only_decaps_allows_the_mean_only(files, singles, combined):
    q = BayestarDECaPSQuery(DECaPSQuery(files["decaps_mean"], mean_only=True, progress=False),
                            singles["bayestar"])
    coords = _disk_coords(1000, seed=12)
    assert_identical(q(coords), combined["decaps"](coords))
    with pytest.raises(ValueError, match="valid modes are: 'mean'$"):
        q(coords, mode="median")


def test_bad_positions_and_distances(combined):
    l = np.array([300.0, 300.0, 300.0, 90.0, 90.0, np.nan, 300.0])
    b = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 45.0])
    d = np.array([1.0, np.nan, 0.0, np.nan, 0.0, 1.0, 1.0])
    coords = SkyCoord(l * u.deg, b * u.deg, distance=d * u.kpc, frame="galactic")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values, flags = combined["reliable"](coords, mode="median", return_flags=True)
    assert np.isfinite(values[0]) and values[0] > 0
    assert np.isnan(values[1]) and np.isnan(values[3])  # NaN distance: NaN, from either map
    assert values[2] == 0 and values[4] == 0  # zero distance: zero reddening
    assert np.all(np.isnan(values[5:]))
    assert list(flags["source"]) == ["decaps", "decaps", "decaps", "bayestar", "bayestar", "none", "none"]
    assert not flags["reliable_dist"][[1, 3, 5, 6]].any()
    with pytest.raises(TypeError, match="SkyCoord"):
        combined["decaps"].query(np.zeros(3))


# --------------------------------------------------------------------------- plots, CLI
def test_density_integrates_back_to_the_cumulative_reddening(combined):
    from dustmaps_ext.plot_disk import density_at

    q = combined["decaps"]
    edges = q.distmods.to_value(u.mag).astype(np.float64)
    d_edges = 10.0 ** (0.2 * edges - 2.0)
    l = np.array([300.0, 330.0, 30.0, 120.0])  # two DECaPS, two Bayestar19 sightlines
    b = np.array([1.0, -1.5, 2.0, 3.0])
    mid = 10.0 ** (0.2 * np.concatenate([[edges[0] - 0.5], 0.5 * (edges[1:] + edges[:-1])]) - 2.0)
    rho, src = density_at(q, np.repeat(l, 120), np.repeat(b, 120), np.tile(mid, 4))
    assert list(src.reshape(4, 120)[:, 0]) == ["decaps", "decaps", "bayestar", "bayestar"]
    width = np.diff(np.concatenate([[0.0], d_edges]))
    total = (rho.reshape(4, 120) * width).sum(axis=1)
    far = q(SkyCoord(l * u.deg, b * u.deg, distance=d_edges[-1] * u.kpc, frame="galactic"))
    np.testing.assert_allclose(total, far, rtol=1e-5)
    assert np.all(far > 0.05)


def test_topdown_columns_split_by_map(combined):
    from dustmaps_ext.plot_disk import density_at, topdown_columns

    q = combined["decaps"]
    cols = topdown_columns(q, extent_kpc=3.0, n_xy=24, n_z=3)
    xx, yy = np.meshgrid(cols["x"], cols["y"], indexing="ij")
    l = np.degrees(np.arctan2(yy, xx)) % 360.0
    has_d, has_b = np.isfinite(cols["decaps"]), np.isfinite(cols["bayestar"])
    assert has_d.sum() > 50 and has_b.sum() > 150
    assert np.all(in_decaps_footprint(l[has_d], 0.0) | (np.hypot(xx, yy)[has_d] < 0.6))
    far_from_decaps = (l > 12.0) & (l < 233.0)
    assert not has_d[far_from_decaps].any() and has_b[far_from_decaps].all()
    # one column by hand: density at the slab's midpoints times dz
    i, j = np.argwhere(has_b & ~has_d & (np.hypot(xx, yy) > 1.0))[0]
    z = np.array([-2 / 30, 0.0, 2 / 30])
    r = np.hypot(xx[i, j], yy[i, j])
    rho, _ = density_at(q, np.full(3, l[i, j]), np.degrees(np.arctan2(z, r)), np.hypot(r, z))
    np.testing.assert_allclose(cols["bayestar"][i, j], rho.sum() * 0.2 / 3, rtol=1e-6)


def test_strip_is_the_combined_query_on_a_grid(combined):
    from dustmaps_ext.plot_disk import strip_ebv

    q = combined["decaps"]
    s = strip_ebv(q, 2.0, l_range_deg=(230.0, 380.0), step_deg=1.0)
    assert s["ebv"].shape == (20, 150) and s["l"][-1] == 379.5
    ll, bb = np.meshgrid(s["l"] % 360.0, s["b"])
    want, flags = q(SkyCoord(ll * u.deg, bb * u.deg, distance=np.full(ll.shape, 2.0) * u.kpc,
                             frame="galactic"), return_flags=True)
    assert_identical(s["ebv"], want)
    assert_identical(s["source"], flags["source"])
    assert set(np.unique(s["source"])) >= {"decaps", "bayestar"}
    with pytest.raises(ValueError, match="distance_kpc must be a positive"):
        strip_ebv(q, -1.0)


def test_cli_plot_disk(files, tmp_path, capsys):
    from dustmaps_ext import cli

    common = ["--decaps", str(files["decaps_repacked"]), "--bayestar", str(files["bayestar"]),
              "--no-progress"]
    top = tmp_path / "top.png"
    assert cli.main(["plot", "topdown", *common, "--n-xy", "16", "--n-z", "2",
                     "--extent", "2", "-o", str(top)]) == 0
    strip = tmp_path / "strip.png"
    assert cli.main(["plot", "strip", *common, "--distance", "3", "--step", "2",
                     "-o", str(strip), "--prefer", "reliable"]) == 0
    for png in (top, strip):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "written" in capsys.readouterr().out
    assert cli.main(["plot", "strip", *common, "--distance", "-1", "-o", str(strip)]) == 2
    assert "distance_kpc must be a positive" in capsys.readouterr().err


def test_demo_runs_on_tiny_maps(tmp_path, capsys):
    from dustmaps_ext_build import demo_combined

    assert demo_combined.main(["--output-dir", str(tmp_path), "--decaps-nside", "32",
                               "--n-xy", "12"]) == 0
    assert (tmp_path / "combined_topdown.png").stat().st_size > 5000
    assert (tmp_path / "combined_strip.png").stat().st_size > 5000
    assert "dustmaps-ext plot topdown" in capsys.readouterr().out
