"""DECaPSQuery / DECaPSQueryLite against dustmaps 1.0.14 on the very same files."""

from __future__ import annotations

import threading
import warnings

import astropy.units as u
import h5py
import numpy as np
import pytest
from astropy.coordinates import Distance, SkyCoord

import dustmaps.decaps as dm_decaps
from dustmaps_ext_build.simulated_decaps import write_simulated_decaps
from dustmaps_ext._core.voxel import query_voxels
from helpers.reference import quiet
from helpers.sky import decaps_coords as _coords
from dustmaps_ext.decaps import (DECaPSQuery, DECaPSQueryLite, LayoutPerformanceWarning,
                                 MapFileError, default_map_path, repack)

MODES = [("mean", None), ("median", None), ("samples", None), ("percentile", 30.0),
         ("percentile", [5, 50, 84.1])]


_quiet = quiet


@pytest.fixture(scope="session")
def maps(tmp_path_factory):
    """A simulated published-layout map (several chunk rows), its repack and a mean-only file."""
    folder = tmp_path_factory.mktemp("decaps")
    published = write_simulated_decaps(folder / "sim.h5", nside=64, chunk_pixels=700)
    mean_only = write_simulated_decaps(folder / "sim_mean.h5", nside=64, chunk_pixels=700,
                                       mean_only=True)
    repacked = repack(published, folder / "sim_repacked.h5", progress=False)  # compact
    pixel_major = repack(published, folder / "sim_pixel_major.h5", progress=False, layout="pixel-major")
    return {"published": published, "repacked": repacked, "mean_only": mean_only,
            "pixel_major": pixel_major}


@pytest.fixture(scope="session")
def reference(maps):
    return _quiet(dm_decaps.DECaPSQuery, str(maps["published"]))


@pytest.fixture(scope="session")
def ours(maps):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayoutPerformanceWarning)
        lite_published = DECaPSQueryLite(maps["published"])
    return {"full/published": DECaPSQuery(maps["published"], progress=False),
            "full/repacked": DECaPSQuery(maps["repacked"], progress=False),
            "lite/repacked": DECaPSQueryLite(maps["repacked"]),
            "lite/published": lite_published,
            "full/pixel-major": DECaPSQuery(maps["pixel_major"], progress=False),
            "lite/pixel-major": DECaPSQueryLite(maps["pixel_major"])}


def assert_identical(mine, ref):
    mine, ref = np.asarray(mine), np.asarray(ref)
    assert mine.shape == ref.shape
    assert np.array_equal(mine, ref, equal_nan=True), np.argwhere(
        ~((mine == ref) | (np.isnan(mine) & np.isnan(ref))))[:5]


def assert_flags_match(mine, ref):
    assert mine.dtype.names == ref.dtype.names
    for name in ref.dtype.names:
        # dustmaps rounds the reliable distance moduli to float16; ours keep float32
        assert_identical(mine[name].astype(ref[name].dtype), ref[name])


@pytest.fixture(scope="session")
def reference_answers(reference):
    """dustmaps' answers, computed once per (mode, pct, with_distance)."""
    cache = {}

    def answer(coords, mode, pct, with_distance):
        key = (mode, str(pct), with_distance)
        if key not in cache:
            cache[key] = _quiet(reference.query, coords, mode=mode, pct=pct, return_flags=True)
        return cache[key]

    return answer


@pytest.mark.parametrize("which", ["full/published", "full/repacked", "lite/repacked", "lite/published",
                                   "full/pixel-major", "lite/pixel-major"])
@pytest.mark.parametrize("with_distance", [True, False])
@pytest.mark.parametrize("mode,pct", MODES)
def test_every_deterministic_mode_equals_dustmaps(ours, reference_answers, which, with_distance,
                                                  mode, pct):
    coords = _coords(1500 if with_distance else 300, seed=1, with_distance=with_distance)
    ref, ref_flags = reference_answers(coords, mode, pct, with_distance)
    mine, flags = ours[which].query(coords, mode=mode, pct=pct, return_flags=True)
    assert mine.dtype == ref.dtype
    assert_identical(mine, ref)
    assert_flags_match(flags, ref_flags)
    assert np.any(np.isfinite(mine)) and np.any(np.isnan(mine))  # both sides of the footprint edge


def test_samples_without_distance_are_samples_then_distances(ours, maps):
    coords = _coords(7, seed=2, with_distance=False)
    out = ours["full/repacked"](coords, mode="samples")
    assert out.shape == (7, 5, 120)
    with h5py.File(maps["published"]) as f:
        hp_idx = f["pixel_info/healpix_index"][()]
        import healpy as hp
        pix = hp.ang2pix(64, coords.l.deg, coords.b.deg, nest=True, lonlat=True)
        k = np.flatnonzero(np.isin(pix, hp_idx))[0]
        row = np.searchsorted(hp_idx, pix[k])
        assert_identical(out[k], f["samples"][row])


@pytest.mark.parametrize("shape", [(), (4,), (3, 5), (2, 3, 4)])
def test_shapes_follow_coordinates_any_frame(ours, reference, shape):
    rng = np.random.default_rng(3)
    gal = SkyCoord(rng.uniform(240, 359, shape) * u.deg, rng.uniform(-9, 9, shape) * u.deg,
                   distance=rng.uniform(0.1, 5, shape) * u.kpc, frame="galactic")
    icrs = gal.icrs
    for mode, extra in [("mean", ()), ("samples", (5,)), ("percentile", (2,))]:
        pct = [16, 84] if mode == "percentile" else None
        mine = ours["lite/repacked"](icrs, mode=mode, pct=pct)
        ref = _quiet(reference, gal, mode=mode, pct=pct)
        assert np.shape(mine) == shape + extra
        assert_identical(mine, ref)
    no_d = SkyCoord(gal.l, gal.b, frame="galactic").fk5
    mine, flags = ours["full/repacked"](no_d, return_flags=True)
    assert np.shape(mine) == shape + (120,)
    assert np.shape(flags) == shape


def test_max_samples_keeps_float16_and_matches_dustmaps(maps):
    ref = _quiet(dm_decaps.DECaPSQuery, str(maps["published"]), max_samples=3)
    mine = DECaPSQuery(maps["repacked"], max_samples=3, progress=False)
    assert mine._store.data.dtype == np.uint16 and mine.n_samples == 3
    for with_distance in (True, False):
        coords = _coords(500, seed=4, with_distance=with_distance)
        for mode, pct in [("samples", None), ("median", None), ("percentile", [10, 60])]:
            got = mine(coords, mode=mode, pct=pct)
            want = _quiet(ref, coords, mode=mode, pct=pct)
            want = np.asarray(want, dtype=np.float64)
            if mode != "percentile":
                assert got.dtype == np.float16  # dustmaps turns these into float64 arrays first
                assert_identical(got.astype(np.float64), want)
            elif with_distance:
                assert_identical(got, want)
            else:
                # with max_samples and no distances dustmaps interpolates percentiles between
                # samples in float64 (its float64 copy); we keep float16 samples as in every
                # other case, so the two differ by less than one float16 step
                with np.errstate(invalid="ignore"):
                    step = np.spacing(np.abs(want).astype(np.float16)).astype(np.float64)
                assert np.all((np.abs(got - want) <= step) | (np.isnan(got) & np.isnan(want)))


def test_even_sample_count_median_matches_numpy(maps):
    ref = _quiet(dm_decaps.DECaPSQuery, str(maps["published"]), max_samples=4)
    mine = DECaPSQuery(maps["published"], max_samples=4, progress=False)
    coords = _coords(800, seed=5)
    assert_identical(mine(coords, mode="median"), _quiet(ref, coords, mode="median").astype(np.float16))


def test_mean_only_file(maps):
    ref = _quiet(dm_decaps.DECaPSQuery, str(maps["mean_only"]), mean_only=True)
    for q in (DECaPSQuery(maps["mean_only"], mean_only=True, progress=False),
              DECaPSQueryLite(repack(maps["mean_only"], progress=False), mean_only=True)):
        coords = _coords(400, seed=6)
        assert_identical(q(coords), _quiet(ref, coords))
        with pytest.raises(ValueError, match="valid modes are: 'mean'"):
            q(coords, mode="median")
    with pytest.raises(MapFileError, match="mean map only"):
        DECaPSQuery(maps["mean_only"], progress=False)


def test_mean_only_view_of_a_full_map(ours, maps):
    q = DECaPSQuery(maps["repacked"], mean_only=True, progress=False)
    coords = _coords(300, seed=7)
    assert_identical(q(coords), ours["full/repacked"](coords))
    assert q._store.data.shape[1] == 1
    with pytest.raises(ValueError, match="not a valid mode"):
        q(coords, mode="samples")


@pytest.mark.parametrize("which", ["full/repacked", "lite/repacked", "lite/published"])
def test_random_modes_draw_from_the_samples(ours, which):
    q = ours[which]
    coords = _coords(2000, seed=8)
    samples = q(coords, mode="samples")
    draw = q(coords, mode="random_sample", rng=1)
    inside = np.isfinite(samples[:, 0])
    assert np.all(np.any(samples[inside] == draw[inside, None], axis=1))
    assert np.all(np.isnan(draw[~inside]))
    # several different samples get used
    which_sample = np.argmax(samples[inside] == draw[inside, None], axis=1)
    assert len(np.unique(which_sample)) == 5
    # reproducible with a seed
    assert_identical(q(coords, mode="random_sample", rng=1), draw)


def test_random_sample_per_pix_is_consistent_within_a_pixel(ours):
    q = ours["lite/repacked"]
    rng = np.random.default_rng(9)
    centres_l = rng.uniform(250, 355, 60)
    centres_b = rng.uniform(-8, 8, 60)
    # 20 distances in each of 60 sightlines: same pixel, different distances
    l = np.repeat(centres_l, 20)
    b = np.repeat(centres_b, 20)
    d = np.tile(np.geomspace(0.2, 8, 20), 60)
    coords = SkyCoord(l * u.deg, b * u.deg, distance=d * u.kpc, frame="galactic")
    samples = q(coords, mode="samples").reshape(60, 20, 5)
    draw = q(coords, mode="random_sample_per_pix", rng=3).reshape(60, 20)
    used = []
    for s, v in zip(samples, draw):
        match = np.all(s == v[:, None], axis=0)  # which sample index fits all 20 distances
        assert match.any()
        used.append(np.argmax(match))
    assert len(set(used)) > 1
    no_d = SkyCoord(np.repeat(centres_l, 2) * u.deg, np.repeat(centres_b, 2) * u.deg, frame="galactic")
    prof = q(no_d, mode="random_sample_per_pix", rng=4).reshape(60, 2, 120)
    assert_identical(prof[:, 0], prof[:, 1])


def test_bad_positions_and_distances(ours, reference):
    q = ours["lite/repacked"]
    l = np.array([300.0, 300.0, 300.0, 300.0, 100.0, 300.0, np.nan, np.inf])
    b = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 30.0, 1.0, 1.0])
    d = np.array([1.0, np.nan, 0.0, np.inf, 1.0, 1.0, 1.0, 1.0])
    with np.errstate(invalid="ignore"):  # astropy's own warning when wrapping an infinite angle
        coords = SkyCoord(l * u.deg, b * u.deg, distance=d * u.kpc, frame="galactic")
    for mode in ("mean", "median", "random_sample"):
        out, flags = q(coords, mode=mode, return_flags=True, rng=0)
        assert np.isfinite(out[0]) and out[0] > 0
        assert np.isnan(out[1])  # NaN distance: NaN (dustmaps returns the farthest bin)
        assert out[2] == 0.0  # zero distance: zero reddening
        assert np.isfinite(out[3])  # infinite distance: the last bin
        assert np.all(np.isnan(out[4:]))  # outside the footprint, NaN/inf positions
        assert not flags["reliable_dist"][1] and not np.any(flags["reliable_dist"][4:])
        assert not np.any(flags["converged"][4:]) and not np.any(flags["infilled"][4:])
    ref = _quiet(reference, coords)
    assert np.isfinite(ref[1])  # the dustmaps behaviour we do not repeat
    # SkyCoord refuses negative distances; the array core below it returns NaN for them
    with pytest.raises(ValueError):
        SkyCoord([300.0] * u.deg, [1.0] * u.deg,
                 distance=Distance([-1.0], u.kpc, allow_negative=True), frame="galactic")
    out, flags = query_voxels(q._store, np.array([300.0, 300.0]), np.array([1.0, 1.0]),
                              np.array([-1.0, 1.0]), mode="mean", valid_modes=("mean",),
                              return_flags=True)
    assert np.isnan(out[0]) and not flags["reliable_dist"][0] and np.isfinite(out[1])


def test_reliable_dist_flag(ours, maps):
    q = ours["full/repacked"]
    coords = _coords(3000, seed=10)
    _, flags = q(coords, return_flags=True)
    _, flags_nd = q(SkyCoord(coords.l, coords.b, frame="galactic"), return_flags=True)
    dm = 5 * (np.log10(coords.distance.kpc) + 2)
    lo, hi = flags_nd["min_reliable_distmod"], flags_nd["max_reliable_distmod"]
    expected = (dm >= lo) & (dm <= hi) & np.isfinite(lo) & np.isfinite(hi)
    assert_identical(flags["reliable_dist"], expected)
    assert expected.any() and (~expected).any()
    assert flags_nd["min_reliable_distmod"].dtype == np.float32


@pytest.mark.parametrize("mode,pct,message", [
    ("best", None, "'best' is not a valid mode; valid modes are: 'random_sample'"),
    ("percentile", None, "needs pct"),
    ("percentile", 101, r"pct must be .* in \[0, 100\]"),
    ("percentile", [10, "x"], "pct must be"),
    ("percentile", np.nan, "pct must be"),
])
def test_invalid_mode_and_pct(ours, mode, pct, message):
    with pytest.raises(ValueError, match=message):
        ours["lite/repacked"](_coords(3, seed=0), mode=mode, pct=pct)


def test_not_a_skycoord(ours):
    with pytest.raises(TypeError, match="SkyCoord"):
        ours["full/repacked"].query([1.0, 2.0])


def test_missing_default_file_says_how_to_fetch(dustmaps_data_dir):
    with pytest.raises(FileNotFoundError, match=r"dustmaps_ext\.decaps\.fetch\(\)"):
        DECaPSQueryLite()
    with pytest.raises(FileNotFoundError, match=r"fetch\(mean_only=True\)"):
        DECaPSQuery(mean_only=True)


def test_default_file_prefers_the_repacked_layout(dustmaps_data_dir, maps):
    folder = dustmaps_data_dir / "decaps"
    folder.mkdir()
    (folder / "decaps_mean_and_samples.h5").write_bytes(maps["published"].read_bytes())
    assert default_map_path() == folder / "decaps_mean_and_samples.h5"
    repack(folder / "decaps_mean_and_samples.h5", progress=False)
    assert default_map_path() == folder / "decaps_mean_and_samples_repacked.h5"
    assert DECaPSQueryLite().map_fname == folder / "decaps_mean_and_samples_repacked.h5"
    assert default_map_path(mean_only=True) == folder / "decaps_mean_and_samples_repacked.h5"


def test_truncated_and_foreign_files(tmp_path, maps):
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(maps["repacked"].read_bytes()[:-5000])
    with pytest.raises(MapFileError, match="truncated.h5.*truncated"):
        DECaPSQueryLite(truncated)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(maps["published"].read_bytes()[:2000])
    with pytest.raises(MapFileError, match="cut.h5 is not a readable HDF5 file"):
        DECaPSQuery(cut)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["pixel_info"] = np.zeros(3)
    with pytest.raises(MapFileError, match="foreign.h5 is not a DECaPS map"):
        DECaPSQuery(foreign)
    partial = tmp_path / "partial.h5"
    with h5py.File(maps["published"]) as src, h5py.File(partial, "w") as f:
        src.copy("pixel_info", f)
        del f["pixel_info/converged"]
    with pytest.raises(MapFileError, match="missing: dataset pixel_info/converged, dataset mean"):
        DECaPSQueryLite(partial)
    text = tmp_path / "text.h5"
    text.write_text("<html>not found</html>")
    with pytest.raises(MapFileError, match="text.h5 is not a readable HDF5"):
        DECaPSQueryLite(text)


def test_lite_on_published_layout_warns(maps):
    with pytest.warns(LayoutPerformanceWarning, match="repack"):
        DECaPSQueryLite(maps["published"])


def test_distances_and_distmods_as_dustmaps(ours, reference):
    for q in ours.values():
        assert np.array_equal(q.distmods.to_value(u.mag), reference.distmods.to_value(u.mag))
        assert np.allclose(q.distances.to_value(u.kpc), reference.distances.to_value(u.kpc),
                           rtol=1e-6)


def test_threads_on_one_lite_object_agree_with_serial(ours):
    q = ours["lite/repacked"]
    batches = [_coords(3000, seed=100 + k) for k in range(8)]
    serial = [q(c, mode=m) for c, m in zip(batches, ["mean", "median", "samples", "mean"] * 2)]
    results = [None] * 8
    barrier = threading.Barrier(8)

    def work(k):
        barrier.wait()
        for _ in range(3):
            results[k] = q(batches[k], mode=["mean", "median", "samples", "mean"][k % 4])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        assert_identical(got, want)


def test_small_chunks_give_the_same_answers(maps, ours):
    small = DECaPSQueryLite(maps["repacked"], chunk_coords=7)
    coords = _coords(500, seed=11)
    for mode in ("mean", "samples", "median"):
        assert_identical(small(coords, mode=mode), ours["lite/repacked"](coords, mode=mode))


@pytest.mark.parametrize("which", ["full/repacked", "lite/repacked"])
def test_threaded_chunks_give_the_same_answers(ours, which, monkeypatch):
    from dustmaps_ext._core import threads, voxel
    from dustmaps_ext._io.decaps_compact import CompactStore

    q = ours[which]
    coords = _coords(3000, seed=12)
    no_d = SkyCoord(coords.l, coords.b, frame="galactic")
    serial = {(m, c is coords): q(c, mode=m, pct=[20, 70], return_flags=True)
              for m in ("mean", "samples", "median", "percentile") for c in (coords, no_d)}
    monkeypatch.setattr(voxel, "PARALLEL_MIN_COORDS", 100)
    monkeypatch.setattr(CompactStore, "parallel_min_coords", 100)  # "lite/repacked" is compact
    monkeypatch.setattr(threads, "MAX_THREADS", 4)
    assert isinstance(q.store, CompactStore) == (which == "lite/repacked")
    for (m, with_d), (values, flags) in serial.items():
        got, got_flags = q(coords if with_d else no_d, mode=m, pct=[20, 70], return_flags=True)
        assert_identical(got, values)
        for name in flags.dtype.names:
            assert_identical(got_flags[name], flags[name])
