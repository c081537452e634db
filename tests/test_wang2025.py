"""Wang2025Query end to end against dustmaps3d 2.2.13 run on the same generated table.

The table has the release's shape (12,582,912 float32 rows, one per nside-1024 RING pixel,
because dustmaps3d indexes rows by pixel), is written once per session by
``dustmaps_ext_build.writers.parametric`` and read by both packages.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings

import astropy.units as u
import numpy as np

with warnings.catch_warnings():
    # dustmaps warns on import when the user has no ~/.dustmapsrc (as on CI machines)
    warnings.simplefilter("ignore")
    import dustmaps.map_base  # noqa: F401
import pytest
from astropy.coordinates import SkyCoord

from dustmaps_ext_build.writers.parametric import RELEASE_NROWS, write_parametric_table
from dustmaps_ext._core.parametric import AUX_FIELDS, EBV_FIELDS
from helpers.parametric_cases import assert_agrees, random_columns

pytestmark = pytest.mark.slow  # one full-size (12.6 M rows, 1 GB) table per session: ~45 s


@pytest.fixture(scope="session")
def release_like(tmp_path_factory):
    """(FITS path, converted path, columns) of a generated full-size float32 table.

    1,000,003 random sightlines (hard cases included) repeated over the 12,582,912 rows,
    as the release repeats its adaptive pixels over their nside-1024 children.
    """
    from dustmaps_ext.wang2025 import convert_table

    folder = tmp_path_factory.mktemp("wang2025")
    unique = random_columns(1_000_003, np.random.default_rng(2025), np.float32)
    cols = {k: np.resize(v, RELEASE_NROWS) for k, v in unique.items()}
    fits_path = write_parametric_table(folder / "data_v3.fits", cols, dtype=np.float32)
    h5_path = convert_table(fits_path, folder / "data_v3_columns.h5", progress=False)
    return fits_path, h5_path, cols


@pytest.fixture(scope="session")
def query(release_like):
    from dustmaps_ext.wang2025 import Wang2025Query

    return Wang2025Query(release_like[1])


@pytest.fixture(scope="session")
def dustmaps3d_table(release_like):
    """The table as dustmaps3d's ``load_data`` returns it (``Table.read(path).to_pandas()``).

    Built from the written columns rather than re-read (20 s per read here); the FITS file's
    content is checked against them. The benchmark runs dustmaps3d on the file itself.
    """
    import pandas as pd
    from astropy.io import fits

    fits_path, _, cols = release_like
    rows = np.random.default_rng(1).integers(0, RELEASE_NROWS, 1000)
    with fits.open(fits_path, memmap=True) as hdul:
        for name, col in cols.items():
            on_disk = np.asarray(hdul[1].data.field(name)[rows])
            assert on_disk.dtype == ">f4" and np.array_equal(on_disk, col[rows], equal_nan=True)
    return pd.DataFrame(cols)


def run_dustmaps3d(table, l, b, d):
    """dustmaps3d.dustmaps3d(l, b, d) on our table: quiet and offline (its loader is
    replaced by one returning the table, so nothing is read or downloaded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import dustmaps3d
        from dustmaps3d import core
    old = core.load_data
    core.load_data = lambda: table
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            out = dustmaps3d.dustmaps3d(l, b, d)
    finally:
        core.load_data = old
    return [np.asarray(o, np.float64) for o in out]


@pytest.fixture(scope="session")
def points(release_like):
    """Query points: pixel centres of random rows with hard distances (bubble edge, cloud
    centres with tiny spans, NaN), random directions, and directions on pixel boundaries."""
    import healpy as hp
    from astropy_healpix import HEALPix

    _, _, cols = release_like
    rng = np.random.default_rng(7)
    hpx = HEALPix(nside=1024, order="ring")
    rows = rng.integers(0, RELEASE_NROWS, 40_000)
    lon, lat = hpx.healpix_to_lonlat(rows)
    l1, b1 = lon.to_value(u.deg), lat.to_value(u.deg)
    bubble = cols["bubble"][rows].astype(np.float64)
    k = rng.integers(1, 5, rows.size)
    dist = np.choose(k - 1, [cols[f"distance_{j}"][rows] for j in range(1, 5)]).astype(float)
    span = np.choose(k - 1, [cols[f"span_{j}"][rows] for j in range(1, 5)]).astype(float)
    centre = dist + 2 * span + bubble
    uu = rng.random(rows.size)
    d1 = rng.uniform(0, 16, rows.size)
    d1 = np.where(uu < 0.25, bubble + rng.normal(0, 0.004, rows.size), d1)
    d1 = np.where((uu >= 0.25) & (uu < 0.65), centre + span * rng.normal(0, 1, rows.size), d1)
    d1 = np.abs(d1)
    d1[(uu >= 0.65) & (uu < 0.7)] = np.nan
    # random directions
    n2 = 20_000
    l2 = rng.uniform(0, 360, n2)
    b2 = np.degrees(np.arcsin(rng.uniform(-1, 1, n2)))
    d2 = rng.uniform(0, 15, n2)
    # exactly on pixel boundaries and at the poles, l = 0 and l = 360
    vec = hp.boundaries(1024, rng.integers(0, RELEASE_NROWS, 2000), step=2)
    l3, b3 = hp.vec2ang(np.moveaxis(vec, 1, 2).reshape(-1, 3), lonlat=True)
    l3 = np.concatenate([l3, [0.0, 360.0, 45.0, 90.0, 180.0, 0.0, 0.0], np.arange(0, 360, 0.25)])
    b3 = np.concatenate([b3, [0.0, 0.0, 0.0, 0.0, 90.0, -90.0, 41.8103148957786],
                         np.zeros(1440)])
    d3 = rng.uniform(0, 10, l3.size)
    return (np.concatenate([l1, l2, l3]), np.concatenate([b1, b2, b3]),
            np.concatenate([d1, d2, d3]))


def test_agrees_with_dustmaps3d(dustmaps3d_table, query, points):
    l, b, d = points
    ebv, dens, sigma, maxd = run_dustmaps3d(dustmaps3d_table, l, b, d)
    res = query.query_lbd(l, b, d, return_components=True)
    assert_agrees(res["ebv"], ebv, "ebv")
    assert_agrees(res["density"], dens, "density")
    assert_agrees(res["sigma"], sigma, "sigma")
    assert_agrees(res["max_distance"], maxd, "max_distance")
    # the same through SkyCoord (any frame) and the plain E(B-V) path
    c = SkyCoord(l=l * u.deg, b=b * u.deg, distance=np.nan_to_num(d, nan=1.0) * u.kpc,
                 frame="galactic")
    np.testing.assert_array_equal(query(c)[~np.isnan(d)], res["ebv"][~np.isnan(d)])
    # no distance: the maximum reliable distance, as dustmaps3d with d = NaN
    ebv_far = run_dustmaps3d(dustmaps3d_table, l[:3000], b[:3000], np.full(3000, np.nan))[0]
    c2 = SkyCoord(l=l[:3000] * u.deg, b=b[:3000] * u.deg, frame="galactic")
    assert_agrees(query(c2), ebv_far, "ebv at max_distance")


def test_skycoord_frames_shapes_and_scalars(query):
    rng = np.random.default_rng(3)
    l = rng.uniform(0, 360, (4, 5))
    b = rng.uniform(-80, 80, (4, 5))
    d = rng.uniform(0.1, 8, (4, 5))
    gal = SkyCoord(l=l * u.deg, b=b * u.deg, distance=d * u.kpc, frame="galactic")
    expected = query.query_lbd(l, b, d)
    assert expected.shape == (4, 5)
    np.testing.assert_array_equal(query(gal), expected)
    icrs = gal.icrs
    got = query(icrs)
    assert got.shape == (4, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-9)  # round trip through ICRS
    pc = SkyCoord(l=l * u.deg, b=b * u.deg, distance=d * 1000 * u.pc, frame="galactic")
    np.testing.assert_allclose(query(pc), expected, rtol=1e-12)
    cart = SkyCoord(gal.cartesian, frame="galactic")
    np.testing.assert_allclose(query(cart), expected, rtol=1e-9)
    scalar = query(gal[1, 2])
    assert np.ndim(scalar) == 0 and scalar == expected[1, 2]
    comp = query(gal[1, 2], return_components=True)
    assert comp["ebv"] == expected[1, 2]
    comp = query.query(gal, return_components=True)
    assert comp.shape == (4, 5) and comp.dtype.names[0] == "ebv"
    np.testing.assert_array_equal(comp["ebv"], expected)
    assert query.query_gal(l[0, 0], b[0, 0], d[0, 0]) == expected[0, 0]


def test_bad_input_gives_nan(query):
    l = np.array([10.0, np.nan, np.inf, 10.0, 10.0, 10.0, 10.0, -np.inf, 10.0])
    b = np.array([5.0, 5.0, 5.0, np.nan, 95.0, 5.0, 5.0, 5.0, 5.0])
    d = np.array([1.0, 1.0, 1.0, 1.0, 1.0, -0.5, np.inf, 1.0, np.nan])
    r = query.query_lbd(l, b, d, return_components=True)
    assert np.isfinite(r["ebv"][[0, 8]]).all()
    assert np.isnan(r["ebv"][1:8]).all() and np.isnan(r["sigma"][1:8]).all()
    np.testing.assert_array_equal(r["n_clouds"][[1, 2, 3, 4, 7]], -1)
    assert (r["n_clouds"][[5, 6]] >= 0).all()  # a sightline, but no valid distance
    assert not r["reliable"][1:8].any()
    # NaN coordinates in a SkyCoord: NaN, no exception (dustmaps3d raises here)
    c = SkyCoord(l=[10.0, np.nan] * u.deg, b=[5.0, 5.0] * u.deg, distance=[1, 1] * u.kpc,
                 frame="galactic")
    out = query(c)
    assert np.isfinite(out[0]) and np.isnan(out[1])
    # (astropy refuses negative distances in a SkyCoord; query_lbd above covers them)


def test_components_match_table(query, release_like):
    _, _, cols = release_like
    rng = np.random.default_rng(4)
    l = rng.uniform(0, 360, 2000)
    b = rng.uniform(-89, 89, 2000)
    r = query.query_lbd(l, b, rng.uniform(0, 10, 2000), return_components=True)
    from astropy_healpix import HEALPix
    rows = HEALPix(nside=1024, order="ring").lonlat_to_healpix(l * u.deg, b * u.deg)
    c = {k: v[rows].astype(np.float64) for k, v in cols.items()}
    np.testing.assert_array_equal(r["bubble_distance"], c["bubble"])
    np.testing.assert_array_equal(r["max_distance"], c["max_distance"])
    with np.errstate(divide="ignore"):
        span0 = c["h"] / np.sin(np.deg2rad(np.abs(c["b_lim"])))
    np.testing.assert_allclose(r["scale_height"], span0, rtol=1e-6)
    n = sum((c[f"Cum_EBV_{k}"] >= 0.001).astype(int) for k in range(1, 5))
    np.testing.assert_array_equal(r["n_clouds"], n)
    inside = r["in_cloud"]
    assert inside.any() and (~inside).any()
    k = r["cloud_index"][inside]
    dist = r["distance"][inside]
    ci = {name: v[inside] for name, v in c.items()}
    centre = np.choose(k - 1, [ci[f"distance_{j}"] + 2 * ci[f"span_{j}"] + ci["bubble"]
                               for j in range(1, 5)])
    size = np.choose(k - 1, [ci[f"span_{j}"] for j in range(1, 5)])
    np.testing.assert_allclose(r["cloud_distance"][inside], centre, rtol=1e-6)
    np.testing.assert_array_equal(r["cloud_size"][inside], size)
    assert (np.abs(dist - centre) <= 0.5 * size * (1 + 1e-6)).all()


def test_sightline_profile(query, dustmaps3d_table):
    prof = query.sightline_profile(120.0, -5.0, np.linspace(0, 12, 300))
    total = prof["diffuse_ebv"] + prof["cloud_ebv"].sum(axis=1)
    np.testing.assert_allclose(total, prof["ebv"], rtol=1e-9, atol=1e-12)
    ref = run_dustmaps3d(dustmaps3d_table, np.full(300, 120.0), np.full(300, -5.0), prof["distance"])
    assert_agrees(prof["ebv"], ref[0], "profile ebv")
    assert_agrees(prof["density"], ref[1], "profile density")
    assert len(prof["clouds"]) == 4
    assert prof["n_clouds"] == sum(c["significant"] for c in prof["clouds"])
    with pytest.raises(ValueError, match="non-negative"):
        query.sightline_profile(120.0, -5.0, [-1.0, 2.0])
    with pytest.raises(ValueError, match="no sightline"):
        query.sightline_parameters(np.nan, 0.0)


def test_default_paths_and_first_use_conversion(release_like, dustmaps_data_dir, caplog,
                                                monkeypatch):
    from dustmaps_ext import wang2025
    from dustmaps_ext.wang2025 import Wang2025Query, default_fits_path, default_table_path

    assert default_table_path() == dustmaps_data_dir / "wang2025" / "data_v3_columns.h5"
    with pytest.raises(FileNotFoundError, match=r"wang2025\.fetch\(\)"):
        Wang2025Query()
    default_fits_path().parent.mkdir(parents=True)
    os.symlink(release_like[0], default_fits_path())
    calls = []

    def fake_convert(src, dst, progress):  # the conversion itself is tested by the fixture
        calls.append((src, dst, progress))
        os.symlink(release_like[1], dst)
        return dst

    monkeypatch.setattr(wang2025, "convert_table", fake_convert)
    with caplog.at_level(logging.WARNING, logger="dustmaps_ext.wang2025"):
        q = Wang2025Query()
    assert "converting" in caplog.text
    assert calls == [(default_fits_path(), default_table_path(), False)]
    assert q.map_fname == default_table_path()
    caplog.clear()
    Wang2025Query()
    assert "converting" not in caplog.text and len(calls) == 1


def test_converted_layout_is_mapped(query):
    t = query._table
    assert t.records[0].shape == (RELEASE_NROWS, len(EBV_FIELDS))
    assert t.records[1].shape == (RELEASE_NROWS, len(AUX_FIELDS))
    for rec, offset in zip(t.records, t._offsets):
        assert rec.dtype == np.float32 and not rec.flags.writeable
        assert offset % 4096 == 0
    before = t.column("max_distance")[:1000].copy()
    t.release(0, 1000)  # dropping pages keeps the data readable
    np.testing.assert_array_equal(t.column("max_distance")[:1000], before)
    query.release_memory()
    np.testing.assert_array_equal(t.column("max_distance")[:1000], before)


def _sightline_with_clouds(query, n_min=2):
    """A direction whose sightline has at least ``n_min`` significant clouds."""
    rng = np.random.default_rng(12)
    for _ in range(200):
        l, b = rng.uniform(0, 360), rng.uniform(-60, 60)
        par = query.sightline_parameters(l, b)
        if sum(par[f"Cum_EBV_{k}"] >= 0.001 for k in range(1, 5)) >= n_min and \
                abs(par["b_lim"]) > 1:
            return l, b, par
    raise AssertionError("no sightline with clouds")


def test_plot_sightline_draws_every_component(query):
    from dustmaps_ext.plot import plot_wang2025_sightline

    l, b, par = _sightline_with_clouds(query)
    fig = plot_wang2025_sightline(l, b, query=query, dmax=8.0)
    ax_e, ax_d = fig.axes
    prof = query.sightline_profile(l, b, np.linspace(0, 8.0, 1500))
    by_label = {line.get_label(): line for line in ax_e.get_lines()}
    np.testing.assert_array_equal(by_label["total"].get_ydata(), prof["ebv"])
    np.testing.assert_array_equal(by_label["diffuse dust"].get_ydata(), prof["diffuse_ebv"])
    cloud_lines = [lab for lab in by_label if lab.startswith("cloud ")]
    significant = [k for k in range(1, 5) if par[f"Cum_EBV_{k}"] >= 0.001]
    assert sorted(int(lab.split()[1].rstrip(":")) for lab in cloud_lines) == significant
    for k in significant:
        line = next(v for lab, v in by_label.items() if lab.startswith(f"cloud {k}:"))
        np.testing.assert_array_equal(line.get_ydata(), prof["cloud_ebv"][:, k - 1])
    assert ax_d.get_xlim() == (0.0, 8.0)
    with pytest.raises(ValueError, match="dmax"):
        plot_wang2025_sightline(l, b, query=query, dmax=-1.0)


def test_cli_plot_wang2025(release_like, tmp_path, capsys):
    from dustmaps_ext.cli import main

    out = tmp_path / "s.png"
    rc = main(["plot", "wang2025", "--l", "120", "--b", "-5", "--dmax", "6",
               "--map", str(release_like[1]), "--output", str(out)])
    assert rc == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in capsys.readouterr().out
    rc = main(["plot", "wang2025", "--l", "120", "--b", "-5", "--map",
               str(tmp_path / "missing.h5")])
    assert rc == 2 and "no converted" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["plot"])  # a target is required


def test_large_queries_keep_a_bounded_resident_set(query, monkeypatch):
    calls = []
    monkeypatch.setattr(query._table, "release", lambda a, b: calls.append((a, b)))
    monkeypatch.setattr(query, "resident_bytes", 3 * 2 ** 20 * 96 + 2 ** 20 * 72)
    rng = np.random.default_rng(8)
    n = 40_000
    l, b, d = rng.uniform(0, 360, n), rng.uniform(-90, 90, n), rng.uniform(0, 9, n)
    expected = query.query_lbd(l[:100], b[:100], d[:100])  # small: nothing released
    assert calls == []
    out = query.query_lbd(l, b, d)
    np.testing.assert_array_equal(out[:100], expected)
    keep = query.resident_bytes // (96 + 72)
    assert calls and all(first >= keep for first, _ in calls)
    assert max(stop for _, stop in calls) == RELEASE_NROWS


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_query_in_a_forked_child(query):
    """A child forked (multiprocessing's default on Linux) after a threaded query in the
    parent answers right: numba's OpenMP threads, if the parent started them, are not used."""
    from helpers.processes import in_forked_child

    rng = np.random.default_rng(99)
    n = 100_000
    coords = SkyCoord(l=rng.uniform(0, 360, n) * u.deg,
                      b=np.degrees(np.arcsin(rng.uniform(-1, 1, n))) * u.deg,
                      distance=rng.uniform(0.05, 12, n) * u.kpc, frame="galactic")
    parent = query(coords)
    child = in_forked_child(query, coords[:10_000])
    np.testing.assert_array_equal(child, parent[:10_000])
    assert np.isfinite(child).mean() > 0.9
