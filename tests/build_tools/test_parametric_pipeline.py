"""The whole parametric build on a small simulated sky.

One build (module fixture, through the ``build-parametric`` command line) of two sky
patches: one in the Galactic plane crossing a cloud at 1 kpc, one at b ~ 20 deg crossing a
cloud at 0.3 kpc. Its released-format table is read back by dustmaps3d 2.2.13 (the public
reader) and compared with the model evaluated from the fitted parameters; its sightlines
are compared with the simulated galaxy's truth; and a build killed half-way resumes to a
byte-identical file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import warnings

import healpy as hp
import numpy as np
import pytest

from dustmaps_ext_build.cli import build_parametric_main
from dustmaps_ext_build.galaxy import default_galaxy
from dustmaps_ext_build.parametric.catalog import CATALOG_COLUMNS, StarCatalog, write_catalog
from dustmaps_ext_build.parametric.mock import mock_catalog
from dustmaps_ext_build.parametric.model import PARAM_NAMES, evaluate_density, evaluate_model
from dustmaps_ext_build.parametric.pipeline import (ParametricBuildConfig, build_parametric_map,
                                             fill_row_values, plan_build)
from dustmaps_ext_build.parametric.recovery import recovery_metrics
from dustmaps_ext_build.parametric.sightlines import sightline_centres, stars_nested_index
from dustmaps_ext_build.runner import run_blocks
from dustmaps_ext_build.writers.parametric import RELEASE_NSIDE

PATCHES = [  # (stars drawn, l range, b range): ~1,300 and ~4,000 stars kept
    (40000, (28.5, 31.5), (0.5, 3.5)),
    (5000, (118.5, 121.5), (18.5, 21.5)),
]
BLOCK_NSIDE = 16


def _catalog():
    # the earlier mock's luminosity function (M_G ~ Normal(2.5, 1.5)) keeps these star
    # counts from few draws; the pipeline, not the mock's distances, is under test here
    galaxy = default_galaxy()
    parts = [mock_catalog(galaxy, n, seed, l_range_deg=lr, b_range_deg=br,
                          luminosity_function="gaussian").as_dict()
             for seed, (n, lr, br) in enumerate(PATCHES)]
    return StarCatalog.from_arrays({c: np.concatenate([p[c] for p in parts])
                                    for c in CATALOG_COLUMNS})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("parametric_build")
    cat_path = write_catalog(_catalog(), root / "stars.parquet")
    out = root / "data_v3.fits"
    work = root / "work"
    out_text = io.StringIO()
    with contextlib.redirect_stdout(out_text):
        code = build_parametric_main([str(cat_path), str(out), "--work-dir", str(work),
                                      "--scheduler", "synchronous", "--no-progress",
                                      "--block-nside", str(BLOCK_NSIDE)])
    assert code == 0
    assert "sightlines" in out_text.getvalue()
    with np.load(work / "sightlines.npz") as data:
        results = {k: data[k] for k in data.files}
    return {"root": root, "catalog": cat_path, "fits": out, "work": work, "results": results}


def _rows_of(nside, ipix):
    n_child = (RELEASE_NSIDE // nside) ** 2
    return hp.nest2ring(RELEASE_NSIDE, ipix * n_child + np.arange(n_child))


def _f32_params(results, i):
    return np.asarray(results["params"][i], dtype=np.float32).astype(np.float64)


def test_table_rows_repeat_their_sightline(built):
    from astropy.io import fits

    res = built["results"]
    assert res["fitted"].sum() >= 0.9 * res["nside"].size
    with fits.open(built["fits"], memmap=True) as hdul:
        data = hdul[1].data
        assert data.shape == (12 * RELEASE_NSIDE ** 2,)
        for i in np.linspace(0, res["nside"].size - 1, 12).astype(int):
            rows = _rows_of(int(res["nside"][i]), int(res["ipix"][i]))
            for j, name in enumerate(PARAM_NAMES):
                np.testing.assert_array_equal(data[name][rows], np.float32(res["params"][i, j]))
            np.testing.assert_array_equal(data["max_distance"][rows],
                                          np.float32(res["max_distance"][i]))
        # a row far from the catalog holds the zero-dust fill
        far = hp.ang2pix(RELEASE_NSIDE, 200.0, -60.0, lonlat=True)
        fill = fill_row_values(ParametricBuildConfig())
        for name, value in fill.items():
            if np.isnan(value):
                assert np.isnan(data[name][far])
            else:
                assert data[name][far] == np.float32(value)
        assert data["b_lim"][far] == pytest.approx(-60.0, abs=0.1)


def _query_points(res, rng, n=300):
    """Random (l, b, d) inside the fitted sightlines, and the index of each one's sightline."""
    idx = rng.choice(np.flatnonzero(res["fitted"]), n)
    l = np.empty(n)
    b = np.empty(n)
    for k, i in enumerate(idx):
        rows = _rows_of(int(res["nside"][i]), int(res["ipix"][i]))
        l[k], b[k] = hp.pix2ang(RELEASE_NSIDE, int(rng.choice(rows)), lonlat=True)
    d = rng.uniform(0.0, 6.0, n)
    d[:20] = np.nan  # dustmaps3d: a missing distance means max_distance
    return l, b, d, idx


def _expected_sigma(sig, s02, s14, s2m, d):
    """dustmaps3d 2.2.13's choice of sigma by distance (NaN-ignoring minima)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if d < 1:
            return np.nanmin([sig, s02])
        if d < 2:
            return np.nanmin([sig, s02, s14])
        if d < 4:
            primary = np.nanmin([s14, s2m])
        else:
            primary = s2m
        return sig if np.isnan(primary) else primary


@pytest.mark.slow  # dustmaps3d reads the whole 1 GB table into pandas (~20 s)
def test_dustmaps3d_reads_the_table_and_agrees_with_the_model(built, monkeypatch):
    with contextlib.redirect_stdout(io.StringIO()):
        from dustmaps3d import core as d3core
    monkeypatch.setattr(d3core, "LOCAL_DATA_PATH", built["fits"])
    res = built["results"]
    rng = np.random.default_rng(0)
    l, b, d, idx = _query_points(res, rng)
    # and points outside the built sky (zero-dust rows)
    l = np.concatenate([l, [200.0, 10.0, 300.0]])
    b = np.concatenate([b, [-60.0, 0.0, 45.0]])
    d = np.concatenate([d, [1.0, 2.0, 3.0]])
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # its all-NaN sigma minima
        ebv, dust, sigma, max_d = d3core.dustmaps3d(l, b, d)
    ebv, dust, sigma, max_d = (np.asarray(a, dtype=np.float64) for a in (ebv, dust, sigma, max_d))
    n = idx.size
    for k, i in enumerate(idx):
        p = _f32_params(res, i)
        b_lim = float(np.float32(res["b_lim"][i]))
        dk = float(np.float32(res["max_distance"][i])) if np.isnan(d[k]) else d[k]
        assert ebv[k] == pytest.approx(evaluate_model(p, b_lim, [dk])[0], rel=1e-5, abs=1e-6)
        assert dust[k] == pytest.approx(evaluate_density(p, b_lim, [dk])[0], rel=1e-5, abs=1e-6)
        assert max_d[k] == np.float32(res["max_distance"][i])
        sig = [float(np.float32(res[c][i])) for c in ("sigma", "sigma_0_2", "sigma_1_4",
                                                      "sigma_2_max")]
        exp = _expected_sigma(*sig, dk)
        assert (np.isnan(sigma[k]) and np.isnan(exp)) or sigma[k] == pytest.approx(exp, rel=1e-6)
    np.testing.assert_array_equal(ebv[n:], 0.0)
    np.testing.assert_array_equal(dust[n:], 0.0)
    np.testing.assert_array_equal(max_d[n:], 0.0)
    assert np.all(np.isnan(sigma[n:]))
    assert np.all(ebv[:n] >= 0) and np.any(ebv[:n] > 0.1)


def test_wang2025query_reads_the_table_and_agrees(built, request):
    # dustmaps_ext.wang2025 is written on another branch and lands when the branches are
    # merged; until then this test is skipped (the dustmaps3d test above covers the format).
    wang2025 = pytest.importorskip("dustmaps_ext.wang2025")
    request.getfixturevalue("dustmaps_data_dir")
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    res = built["results"]
    rng = np.random.default_rng(1)
    l, b, d, idx = _query_points(res, rng, n=100)
    d[:20] = rng.uniform(0.1, 5.0, 20)
    query = wang2025.Wang2025Query(map_fname=str(built["fits"]))
    ebv = np.asarray(query(SkyCoord(l * u.deg, b * u.deg, distance=d * u.kpc, frame="galactic")))
    expected = [evaluate_model(_f32_params(res, i), float(np.float32(res["b_lim"][i])), [dk])[0]
                for i, dk in zip(idx, d)]
    np.testing.assert_allclose(ebv, expected, rtol=1e-5, atol=1e-6)


def test_recovers_the_simulated_galaxy(built):
    m = recovery_metrics(built["results"], default_galaxy())
    assert m["n_sightlines_low_b"] >= 20 and m["n_sightlines_high_b"] >= 50
    # looser than the benchmark targets (0.05 and 0.02 mag, 80% of clouds) on this small sky
    assert m["median_abs_err_high_b"] < 0.02
    assert m["median_abs_err_low_b"] < 0.12
    assert m["clouds_injected"] >= 50
    assert m["cloud_recovery"] >= 0.5
    assert np.median(m["cloud_distance_rel_err"]) < 0.1
    # judged against baselines: far better than a map of zeros, and the truth averaged over
    # the pixel is (as it must be) better still
    for tag in ("low_b", "high_b"):
        assert m[f"median_abs_err_{tag}"] <= 0.3 * m[f"median_zero_map_{tag}"]
        assert m[f"median_pixel_truth_{tag}"] < m[f"median_abs_err_{tag}"]
    pairs = m["pairs"]
    assert pairs.size == m["clouds_injected"]
    assert np.all(pairs["found"][pairs["recovered"]])  # recovered implies found


@pytest.mark.slow  # writes a second full-sky table (~1 GB) to compare it byte for byte
def test_killed_build_resumes_to_the_same_file(built, tmp_path):
    from dustmaps_ext_build.parametric.catalog import read_catalog

    catalog = read_catalog(built["catalog"])
    config = ParametricBuildConfig(block_nside=BLOCK_NSIDE)
    work = tmp_path / "work"
    block_ids, job, fingerprint = plan_build(catalog, work, config)
    assert len(block_ids) >= 2
    # the "killed" run got through the first half of the blocks
    first = run_blocks(block_ids[: len(block_ids) // 2], job, work / "blocks",
                       scheduler="synchronous", progress=False, fingerprint=fingerprint)
    stamps = {p: os.stat(p).st_mtime_ns for p in first}
    out = tmp_path / "resumed.fits"
    build_parametric_map(catalog, out, work, config=config, scheduler="synchronous",
                         progress=False)
    assert {p: os.stat(p).st_mtime_ns for p in first} == stamps  # not recomputed

    def digest(path):
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
        return h.hexdigest()

    assert digest(out) == digest(built["fits"])
    # a different configuration is refused rather than mixed with these blocks
    with pytest.raises(ValueError, match="different job"):
        build_parametric_map(catalog, tmp_path / "other.fits", work,
                             config=ParametricBuildConfig(block_nside=BLOCK_NSIDE, threshold=30),
                             scheduler="synchronous", progress=False)


@pytest.mark.parametrize("damage", ["truncated", "another block's file"])
def test_damaged_block_stops_the_resumed_build_and_names_it(tmp_path, damage):
    catalog = _catalog()
    config = ParametricBuildConfig(block_nside=BLOCK_NSIDE)
    work = tmp_path / "work"
    block_ids, job, fingerprint = plan_build(catalog, work, config)
    kw = dict(scheduler="synchronous", progress=False, fingerprint=fingerprint)
    first = run_blocks(block_ids[:2], job, work / "blocks", **kw)  # a killed build's blocks
    clean = first[1].read_bytes()
    stamp = first[0].stat().st_mtime_ns
    if damage == "truncated":
        first[1].write_bytes(clean[: len(clean) // 2])
    else:
        first[1].write_bytes(first[0].read_bytes())
    out = tmp_path / "resumed.fits"
    with pytest.raises(ValueError, match="Delete the file") as err:
        build_parametric_map(catalog, out, work, config=config, scheduler="synchronous",
                             progress=False)
    assert f"{first[1]}: " in str(err.value) and str(first[0]) not in str(err.value)
    assert not out.exists()
    # deleting it redoes that block only (build_parametric_map's run; the full table is
    # written by test_killed_build_resumes_to_the_same_file)
    first[1].unlink()
    run_blocks(block_ids[:2], job, work / "blocks", **kw)
    assert first[1].read_bytes() == clean
    assert first[0].stat().st_mtime_ns == stamp


@pytest.mark.slow  # fits the whole small sky twice (~20 s)
def test_neighbour_weight_cut_keeps_the_accuracy(built, tmp_path):
    from dustmaps_ext_build.parametric.catalog import read_catalog
    from dustmaps_ext_build.parametric.pipeline import process_block

    catalog = read_catalog(built["catalog"])
    galaxy = default_galaxy()
    metrics = {}
    for minw in (1e-3, 0.0):  # the default cut, and every neighbour within 3 resolutions
        config = ParametricBuildConfig(block_nside=BLOCK_NSIDE, min_decentration_weight=minw)
        block_ids, _, _ = plan_build(catalog, tmp_path / str(minw), config)
        parts = [process_block(bid, str(tmp_path / str(minw)), config) for bid in block_ids]
        res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        metrics[minw] = recovery_metrics(res, galaxy)
        metrics[minw]["n_stars"] = np.median(res["n_stars"])
    cut, full = metrics[1e-3], metrics[0.0]
    assert cut["n_stars"] < 0.6 * full["n_stars"]
    for key in ("median_abs_err_low_b", "median_abs_err_high_b"):
        assert cut[key] <= 1.25 * full[key] + 0.002
    # on this small plane sky (134 pairs, one disk the model cannot carry) the cut finds 76%
    # of the clouds against 91% with every neighbour (lam = 0.05; 83% and 88% at 0.1); on
    # the benchmark's skies the two stay within 2 points. One pair is 0.75 points here and
    # the binomial noise of the difference ~5 points: rounding-level changes of the fit
    # (the loss gradient summed in another order) moved the cut from 106 to 102 found
    # pairs and the full fit from 121 to 122, while the benchmark's 17,000 pairs moved by
    # 0.2 points at most
    assert cut["cloud_recovery"] >= full["cloud_recovery"] - 0.16


def _pixel_stars(catalog, nside, ipix):
    pix = stars_nested_index(catalog.l, catalog.b, RELEASE_NSIDE)
    shift = 2 * int(round(np.log2(RELEASE_NSIDE // int(nside))))
    return (pix >> shift) == int(ipix)


def test_max_distance_and_sigmas_follow_the_line_of_sight(built):
    """max_distance: the farthest star of the sightline's own pixel kept by the clipping;
    sigma: calibrated, ~68% of those stars lie within 1 sigma of the fitted curve."""
    from dustmaps_ext_build.parametric.catalog import read_catalog

    catalog = read_catalog(built["catalog"])
    res = built["results"]
    inside, farther = [], 0
    for i in np.flatnonzero(res["fitted"])[::3]:
        own = _pixel_stars(catalog, res["nside"][i], res["ipix"][i])
        d, e = catalog.distance[own], catalog.ebv[own]
        assert np.min(np.abs(d - res["max_distance"][i])) < 1e-12  # one of its own stars
        farther += int(res["max_distance"][i] < d.max())  # the farthest was clipped
        if np.isfinite(res["sigma"][i]):
            resid = e - evaluate_model(res["params"][i], res["b_lim"][i], d)
            inside.append(np.abs(resid) <= res["sigma"][i])
    assert farther < 0.2 * len(inside)
    frac = np.concatenate(inside).mean()
    assert 0.62 <= frac <= 0.74, frac


@pytest.mark.slow  # writes a full-sky (gzip) table of the region build (~1 GB before compression)
def test_region_build_killed_while_writing_is_finished_by_a_rerun(built, tmp_path, monkeypatch):
    """Issue 16.14: the table is written under a temporary name and renamed; a build
    killed during that write leaves no output, and the same command finishes the job
    without refitting. With --l-range/--b-range, only the region's sightlines are fitted
    and the other rows are NaN."""
    from astropy.io import fits
    from astropy.table import Table

    out = tmp_path / "region.fits.gz"
    work = tmp_path / "work"
    argv = [str(built["catalog"]), str(out), "--work-dir", str(work), "--scheduler",
            "synchronous", "--no-progress", "--block-nside", str(BLOCK_NSIDE),
            "--l-range", "115", "125", "--b-range", "15", "25"]
    def killed_write(self, path, *args, **kwargs):
        with open(path, "wb") as fh:  # a truncated FITS file, as a kill would leave
            fh.write(b"SIMPLE  =                    T" + b" " * 2000)
        raise KeyboardInterrupt

    monkeypatch.setattr(Table, "write", killed_write)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert build_parametric_main(argv) == 130  # the command line reports Ctrl-C, exit 130
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    blocks = sorted((work / "blocks").glob("block_*.npz"))
    assert blocks
    stamps = {p: os.stat(p).st_mtime_ns for p in blocks}
    monkeypatch.undo()
    with contextlib.redirect_stdout(io.StringIO()):
        assert build_parametric_main(argv) == 0
    assert {p: os.stat(p).st_mtime_ns for p in blocks} == stamps  # nothing refitted
    with open(out, "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"  # gzip
    assert out.stat().st_size < 50e6  # the NaN rows compress away

    full = built["results"]
    with np.load(work / "sightlines.npz") as data:
        part = {k: data[k] for k in data.files}
    with fits.open(out) as hdul:
        table = hdul[1].data
        assert table.shape == (12 * RELEASE_NSIDE ** 2,)
        l_c, b_c = hp.pix2ang(RELEASE_NSIDE, np.arange(0, table.shape[0], 997), lonlat=True)
        config = ParametricBuildConfig(l_range=(115, 125), b_range=(15, 25))
        sample = np.arange(0, table.shape[0], 997)
        far = ~config.in_region(l_c, b_c)
        assert np.all(np.isnan(table["Cum_EBV_1"][sample[far]]))
        assert np.all(np.isnan(table["max_distance"][sample[far]]))
        fitted_in = np.flatnonzero(part["fitted"])
        assert fitted_in.size >= 50
        l_s, b_s = sightline_centres(part["nside"][fitted_in], part["ipix"][fitted_in])
        assert np.all(config.in_region(l_s, b_s))
        # region sightlines are those of the full-sky build, fitted the same way
        key = {(n, p): i for i, (n, p) in enumerate(zip(full["nside"], full["ipix"]))}
        for i in fitted_in[::10]:
            j = key[(part["nside"][i], part["ipix"][i])]
            np.testing.assert_array_equal(part["params"][i], full["params"][j])
            rows = _rows_of(int(part["nside"][i]), int(part["ipix"][i]))
            for k, name in enumerate(PARAM_NAMES):
                np.testing.assert_array_equal(table[name][rows], np.float32(part["params"][i, k]))
        # the plane patch (l = 30) was not fitted: NaN there
        plane = _rows_of(*next((int(n), int(p)) for n, p, f in
                               zip(full["nside"], full["ipix"], full["fitted"])
                               if f and sightline_centres([n], [p])[1][0] < 5))
        assert np.all(np.isnan(table["Cum_EBV_1"][plane]))


def test_catalog_format_errors_name_the_cli_option(tmp_path, capsys):
    odd = tmp_path / "stars.txt"
    odd.write_text("l,b\n1,2\n")
    assert build_parametric_main([str(odd), str(tmp_path / "o.fits"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--format" in err and "format=" in err
    # --format csv reads the same file as CSV (and reports its missing columns)
    assert build_parametric_main([str(odd), str(tmp_path / "o.fits"), "--no-progress",
                                  "--format", "csv"]) == 2
    assert "missing column" in capsys.readouterr().err


def test_cli_reports_bad_catalogs(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"l": [1.0], "b": [2.0]}), path)
    code = build_parametric_main([str(path), str(tmp_path / "out.fits"), "--no-progress"])
    assert code == 2
    assert "missing column" in capsys.readouterr().err
