"""DECaPS region cutouts over HTTP Range requests, against the full file and dustmaps 1.0.14.

A simulated published-layout map is served by a fake Dataverse on 127.0.0.1
(:mod:`tests.helpers.range_server`); cutouts read from it must answer exactly as the package's own
query classes and as dustmaps 1.0.14 on the full file, inside their regions.
"""

from __future__ import annotations

import itertools
import json

import astropy.units as u
import dustmaps.decaps as dm_decaps
import h5py
import healpy as hp
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from dustmaps_ext_build.simulated_decaps import write_simulated_decaps

import dustmaps_ext.decaps as dustmaps_ext_decaps
from dustmaps_ext import cli
from dustmaps_ext._io import download as dl
from dustmaps_ext._io import fetchers
from dustmaps_ext._io.cutout import (
    CUTOUT_ATTR,
    Region,
    fetch_cutout,
    index_path,
    region_pixels,
)
from dustmaps_ext._io.remote import (
    BULK_READ,
    METADATA_BLOCK,
    RangeReader,
    TransferBudgetError,
)
from dustmaps_ext.decaps import DECaPSQuery, DECaPSQueryLite, OutsideFetchedRegionError
from helpers.range_server import RangeServer
from helpers.reference import quiet

NSIDE = 128
CHUNK_PIXELS = 400  # 31 chunk rows of about 84 deg^2
REGION_A = (300.0, 2.0, 3.0)
REGION_B = (340.0, -4.0, 2.0)
REGION_A_NEAR = (301.5, 3.0, 2.0)  # overlaps REGION_A's chunk rows
FAST = dl.RetryPolicy(max_retries=3, backoff_base=0.0, backoff_max=0.0, timeout=(5.0, 5.0))
MODES = [("mean", None), ("median", None), ("samples", None), ("percentile", 30.0),
         ("percentile", [5, 50, 84.1])]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("release")
    path = write_simulated_decaps(folder / "decaps_mean_and_samples.h5", nside=NSIDE,
                                  chunk_pixels=CHUNK_PIXELS)
    return {"path": path, "content": path.read_bytes()}


@pytest.fixture(scope="module")
def server(release):
    with RangeServer(lifetime_s=900.0) as srv:
        file_id = srv.add_dataverse_file(fetchers.DECAPS_DOI, "decaps_mean_and_samples.h5",
                                         release["content"])
        srv.file_path = srv.store_path(file_id)
        srv.file_url = srv.url + srv.file_path
        yield srv


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch, server):
    monkeypatch.setattr(dl, "DEFAULT_RETRY", FAST)
    monkeypatch.setattr(dl, "_sleep", lambda s: None)
    server.reset_counts()
    server._faults.clear()
    server.latency_s = 0.0


@pytest.fixture(scope="module")
def full(release):
    return {"ours": DECaPSQuery(release["path"], progress=False),
            "dustmaps": quiet(dm_decaps.DECaPSQuery, str(release["path"]))}


def _fetch(server, dest, *regions, **kw):
    stats: dict = {}
    fetch_cutout(server.file_url, dest, regions, size=len(server._resources[server.file_path].content),
                 retry=FAST, progress=False, stats=stats, **kw)
    return stats


@pytest.fixture(scope="module")
def cutout_ab(server, tmp_path_factory):
    """A cutout holding REGION_A and REGION_B, fetched in two calls."""
    dest = tmp_path_factory.mktemp("cut") / "cutout.h5"
    _fetch(server, dest, REGION_A)
    _fetch(server, dest, REGION_B)
    return dest


def _coords_in(regions, n, seed, with_distance=True):
    """Random positions inside the cones (and distances from below the first edge to beyond
    the last)."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(regions), n)
    centre = np.array([Region.parse(r).as_list() for r in regions])[pick]
    sep = centre[:, 2] * np.sqrt(rng.random(n)) * 0.999
    angle = rng.uniform(0, 2 * np.pi, n)
    c = SkyCoord(centre[:, 0] * u.deg, centre[:, 1] * u.deg, frame="galactic")
    inside = c.directional_offset_by(angle * u.rad, sep * u.deg)
    if not with_distance:
        return inside
    d = 10.0 ** rng.uniform(-2.5, 2.2, n)
    return SkyCoord(inside.l, inside.b, distance=d * u.kpc, frame="galactic")


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("cls", [DECaPSQuery, DECaPSQueryLite])
@pytest.mark.parametrize("with_distance", [True, False])
@pytest.mark.parametrize("mode,pct", MODES)
def test_cutout_answers_equal_the_full_file(cutout_ab, full, cls, with_distance, mode, pct):
    kw = {"progress": False} if cls is DECaPSQuery else {}
    cut = cls(cutout_ab, **kw)
    coords = _coords_in([REGION_A, REGION_B], 800 if with_distance else 150, seed=3,
                        with_distance=with_distance)
    mine, flags = cut.query(coords, mode=mode, pct=pct, return_flags=True)
    ours, ours_flags = full["ours"].query(coords, mode=mode, pct=pct, return_flags=True)
    ref, ref_flags = quiet(full["dustmaps"].query, coords, mode=mode, pct=pct, return_flags=True)
    _same(mine, ours)
    _same(mine, ref)
    assert np.all(flags["fetched"])
    for name in ref_flags.dtype.names:
        _same(flags[name], ours_flags[name])
        _same(flags[name].astype(ref_flags[name].dtype), ref_flags[name])
    assert np.isfinite(mine).mean() > 0.9  # the regions lie in the map


def test_random_modes_draw_the_full_files_samples(cutout_ab, full):
    cut = DECaPSQuery(cutout_ab, progress=False)
    coords = _coords_in([REGION_A, REGION_B], 300, seed=4)
    samples = full["ours"].query(coords, mode="samples")
    for mode in ("random_sample", "random_sample_per_pix"):
        drawn = cut.query(coords, mode=mode, rng=7)
        finite = np.isfinite(drawn)
        np.testing.assert_array_equal(finite, np.isfinite(samples[:, 0]))
        assert np.all(np.any(samples[finite] == drawn[finite, None], axis=1))


def test_cutout_holds_exactly_the_region_pixels(cutout_ab, release):
    with h5py.File(release["path"], "r") as f:
        published = f["pixel_info/healpix_index"][()].astype(np.int64)
    wanted = region_pixels(NSIDE, [REGION_A, REGION_B])
    with h5py.File(cutout_ab, "r") as f:
        got = f["pixel_info/healpix_index"][()].astype(np.int64)
        regions = json.loads(f.attrs[CUTOUT_ATTR])
    np.testing.assert_array_equal(got, np.intersect1d(published, wanted))
    assert regions == [list(REGION_A), list(REGION_B)]
    # inclusive discs: every pixel whose centre lies in a cone is there
    assert got.size > 100 and np.all(np.isin(
        hp.query_disc(NSIDE, hp.ang2vec(300.0, 2.0, lonlat=True), np.radians(3.0), nest=True),
        got))


def test_outside_every_region_raises_naming_them(cutout_ab):
    cut = DECaPSQueryLite(cutout_ab)
    outside = SkyCoord([310.0, 300.0] * u.deg, [0.0, 2.0] * u.deg, distance=[1, 1] * u.kpc,
                       frame="galactic")
    with pytest.raises(OutsideFetchedRegionError, match=r"l=310.* b=0.*l=300, b=2, radius=3 deg"
                                                        r".*l=340, b=-4, radius=2 deg"):
        cut.query(outside)
    # out of the footprint: NaN, as on the full map, and no error
    far = SkyCoord([100.0] * u.deg, [40.0] * u.deg, distance=[1] * u.kpc, frame="galactic")
    assert np.isnan(cut.query(far)[0])


def test_outside_regions_nan_option_flags_fetched_false(cutout_ab, full):
    cut = DECaPSQuery(cutout_ab, progress=False, outside_regions="nan")
    coords = SkyCoord([310.0, 300.0, 100.0] * u.deg, [0.0, 2.0, 40.0] * u.deg,
                      distance=[1, 1, 1] * u.kpc, frame="galactic")
    values, flags = cut.query(coords, return_flags=True)
    assert np.isnan(values[0]) and np.isfinite(full["ours"].query(coords[:1]))[0]
    _same(values[1], full["ours"].query(coords[1:2])[0])
    np.testing.assert_array_equal(flags["fetched"], [False, True, False])
    assert np.isnan(cut.query(coords[0:1], mode="mean")[0])  # and no error
    with pytest.raises(ValueError, match="outside_regions"):
        DECaPSQuery(cutout_ab, progress=False, outside_regions="ignore")


def test_full_map_flags_have_no_fetched_field(full):
    coords = _coords_in([REGION_A], 5, seed=1)
    _, flags = full["ours"].query(coords, return_flags=True)
    assert "fetched" not in flags.dtype.names


def test_resume_after_drops_and_500s(server, tmp_path, full):
    clean = tmp_path / "clean.h5"
    _fetch(server, clean, REGION_A)
    clean_bytes = server.body_bytes[server.file_path]
    clean_requests = len(server.requests_for(server.file_path))

    server.reset_counts()
    faulty = tmp_path / "faulty.h5"
    # drops mid-range (half the body, then the connection closes) and 500s, between
    # requests that go through (None)
    server.inject(server.file_path, *(["drop", None, 500, None] * 30))
    _fetch(server, faulty, REGION_A)
    coords = _coords_in([REGION_A], 500, seed=5)
    _same(DECaPSQuery(faulty, progress=False).query(coords, mode="samples"),
          full["ours"].query(coords, mode="samples"))
    # a dropped range is resumed where it stopped: no byte is sent twice
    assert server.body_bytes[server.file_path] == clean_bytes
    ranges = server.ranges(server.file_path)
    assert len(ranges) > clean_requests
    # after a drop (half of [a, b] sent), the next request asks for the rest only
    resumed = [(r, s) for r, s in itertools.pairwise(ranges)
               if s == (r[0] + (r[1] - r[0] + 1) // 2, r[1])]
    assert len(resumed) >= 10


def test_chunk_index_and_metadata_read_once(server, tmp_path):
    dest = tmp_path / "cut.h5"
    first = _fetch(server, dest, REGION_A)
    first_ranges = set(server.ranges(server.file_path))
    assert index_path(dest).exists()

    server.reset_counts()
    second = _fetch(server, dest, REGION_A_NEAR)
    second_ranges = server.ranges(server.file_path)
    # no metadata block read the first time is asked again: the superblock, object
    # headers, B-tree nodes and row starts come from the local index
    metadata = {r for r in first_ranges if r[0] % METADATA_BLOCK == 0}
    assert len(metadata) > 20
    assert not metadata & set(second_ranges)
    assert any(b - a + 1 >= BULK_READ for a, b in second_ranges)  # the value chunks

    cold = tmp_path / "cold.h5"
    server.reset_counts()
    third = _fetch(server, cold, REGION_A_NEAR)
    assert second["requests"] < third["requests"] / 2
    assert second["requests"] == len(second_ranges)
    assert first["requests"] >= len(first_ranges)


def test_a_region_already_fetched_adds_no_pixels(server, tmp_path):
    dest = tmp_path / "cut.h5"
    _fetch(server, dest, REGION_A)
    with h5py.File(dest, "r") as f:
        before = f["pixel_info/healpix_index"][()]
    server.reset_counts()
    stats = _fetch(server, dest, (300.0, 2.0, 1.0))  # inside REGION_A
    with h5py.File(dest, "r") as f:
        np.testing.assert_array_equal(f["pixel_info/healpix_index"][()], before)
        assert len(json.loads(f.attrs[CUTOUT_ATTR])) == 2
    assert stats["bytes"] < 2 * 32768  # no value chunk read


def test_neighbouring_chunks_are_coalesced(server, tmp_path, release):
    dest = tmp_path / "cut.h5"
    _fetch(server, dest, REGION_A)
    server.reset_counts()
    server.latency_s = 0.02
    stats = _fetch(server, dest, REGION_B)
    with h5py.File(release["path"], "r") as f:
        published = f["pixel_info/healpix_index"][()].astype(np.int64)
    positions = np.flatnonzero(np.isin(published, region_pixels(NSIDE, [REGION_B])))
    rows = np.unique(positions // CHUNK_PIXELS).size
    # 6 x 120 value chunks per row, yet a handful of requests per row in all
    assert 1 <= rows <= 6
    assert stats["requests"] <= 12 * rows + 20
    assert stats["requests"] == len(server.requests_for(server.file_path))


def test_wrong_content_range_is_retried_then_refused(server):
    server.inject(server.file_path, "wrong_range")
    reader = RangeReader(server.file_url, retry=FAST)
    content = server._resources[server.file_path].content
    assert reader.fetch(100, 200) == content[100:200]  # the retry got the right bytes
    assert len(server.ranges(server.file_path)) == 2
    server.inject(server.file_path, *["wrong_range"] * 10)
    with pytest.raises(dl.DownloadError, match="Content-Range"):
        reader.fetch(1000, 2000)


def test_server_without_ranges_is_refused_clearly(server):
    server.inject(server.file_path, "ignore_range")
    with pytest.raises(dl.DownloadError, match="does not serve byte ranges"):
        RangeReader(server.file_url, retry=FAST).fetch(0, 10)


def test_file_of_another_size_is_refused(server):
    size = len(server._resources[server.file_path].content)
    with pytest.raises(dl.DownloadError, match="not the file expected"):
        RangeReader(server.file_url, size=size + 1, retry=FAST).fetch(0, 10)


def test_persistent_500s_fail_after_bounded_requests(server, tmp_path):
    server.inject(server.file_path, *[500] * 50)
    with pytest.raises(dl.DownloadError, match="HTTP 500"):
        _fetch(server, tmp_path / "cut.h5", REGION_A)
    assert len(server.requests_for(server.file_path)) == FAST.max_retries + 1
    assert not (tmp_path / "cut.h5").exists()


def test_request_budget_is_enforced(server):
    reader = RangeReader(server.file_url, retry=FAST, max_requests=2)
    server.inject(server.file_path, "drop", "drop", "drop")
    with pytest.raises(TransferBudgetError, match="2 HTTP requests"):
        reader.fetch(0, 100_000)


def test_bad_regions_are_refused(server, tmp_path):
    for bad, msg in [((300, 2, -1), "radius"), ((300, 95, 1), "latitude"),
                     ((300, np.nan, 1), "finite"), ((300, 2), "l_deg, b_deg, radius_deg")]:
        with pytest.raises(ValueError, match=msg):
            _fetch(server, tmp_path / "cut.h5", bad)


def test_fetch_region_and_cli(server, dustmaps_data_dir, full, capsys, monkeypatch):
    monkeypatch.setenv("DUSTMAPS_EXT_DATAVERSE_URL", server.url)
    path = fetchers.fetch_decaps(region=REGION_A, progress=False)
    assert path == dustmaps_data_dir / "decaps" / "decaps_mean_and_samples_cutout.h5"
    assert cli.main(["fetch", "decaps", "--region", *map(str, REGION_B), "--no-progress",
                     "--base-url", server.url]) == 0
    assert str(path) in capsys.readouterr().out
    cut = DECaPSQueryLite()  # the default file: the cutout, as nothing else is there
    assert cut.map_fname == path
    coords = _coords_in([REGION_A, REGION_B], 300, seed=9)
    _same(cut.query(coords, mode="median"), full["ours"].query(coords, mode="median"))
    fetchers.fetch_decaps(region=[REGION_B], clobber=True, progress=False)
    with h5py.File(path, "r") as f:
        assert json.loads(f.attrs[CUTOUT_ATTR]) == [list(REGION_B)]


def test_mean_only_cutout(tmp_path):
    published = write_simulated_decaps(tmp_path / "decaps_mean.h5", nside=64, chunk_pixels=300,
                                       mean_only=True)
    with RangeServer() as srv:
        url = srv.add_url("/decaps_mean.h5", published.read_bytes())
        dest = fetch_cutout(url, tmp_path / "cut.h5", [(330.0, 0.0, 4.0)], retry=FAST,
                            progress=False)
        fetch_cutout(url, dest, [(350.0, 5.0, 3.0)], retry=FAST, progress=False)
    with pytest.raises(dustmaps_ext_decaps.MapFileError, match="mean_only=True"):
        DECaPSQuery(dest, progress=False)
    cut = DECaPSQuery(dest, mean_only=True, progress=False)
    reference = quiet(dm_decaps.DECaPSQuery, str(published), mean_only=True)
    coords = _coords_in([(330.0, 0.0, 4.0), (350.0, 5.0, 3.0)], 400, seed=11)
    _same(cut.query(coords), quiet(reference.query, coords))
    with pytest.raises(OutsideFetchedRegionError):
        cut.query(SkyCoord(300 * u.deg, 0 * u.deg, frame="galactic"))


def test_no_server_fails_with_a_clear_error(tmp_path):
    with pytest.raises(dl.DownloadError, match="127.0.0.1:9"):
        fetch_cutout("http://127.0.0.1:9/decaps_mean_and_samples.h5", tmp_path / "cut.h5",
                     [REGION_A], retry=FAST, progress=False)
    assert not (tmp_path / "cut.h5").exists()
