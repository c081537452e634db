"""The parametric model kernels against dustmaps3d's own evaluation (``read_map``) on small
tables with hard cases, and the model's analytic properties."""

from __future__ import annotations

import threading
import warnings

import numpy as np

with warnings.catch_warnings():
    # dustmaps warns on import when the user has no ~/.dustmapsrc (as on CI machines)
    warnings.simplefilter("ignore")
    import dustmaps.map_base  # noqa: F401
import pandas as pd
import pytest

from dustmaps_ext._core import parametric as par
from dustmaps_ext._core.parametric import (TABLE_COLUMNS, build_records, cloud_profiles,
                                           evaluate, record_column)
from helpers.parametric_cases import assert_agrees, random_columns


def _import_dustmaps3d_core():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from dustmaps3d import core
    return core


def hard_distances(cols: dict, rng: np.random.Generator) -> np.ndarray:
    """Distances at the bubble edge, across cloud centres (tiny spans included), at the
    sigma range limits, at zero, NaN (missing) and at random."""
    n = len(cols["bubble"])
    rec = build_records(cols)
    d = rng.uniform(0, 16, n)
    u = rng.random(n)
    bubble = cols["bubble"].astype(np.float64)
    m = u < 0.2
    d[m] = bubble[m] + rng.normal(0, 0.004, m.sum())
    m = (u >= 0.2) & (u < 0.6)
    k = rng.integers(1, 5, n)
    centre = np.choose(k - 1, [record_column(rec, f"centre_{j}") for j in range(1, 5)])
    span = np.choose(k - 1, [record_column(rec, f"span_{j}") for j in range(1, 5)])
    d[m] = centre[m] + span[m] * rng.normal(0, 1.0, m.sum())
    m = (u >= 0.6) & (u < 0.65)
    d[m] = rng.choice([0.0, 1.0, 2.0, 4.0, 1.0 - 1e-12, bubble[0]], m.sum())
    d = np.abs(d)
    d[(u >= 0.65) & (u < 0.7)] = np.nan
    return d


def reference(cols: dict, d: np.ndarray):
    """dustmaps3d's evaluation of the same rows (quiet)."""
    core = _import_dustmaps3d_core()
    df = pd.DataFrame(cols)
    df["distance"] = d
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        out = core.read_map(df)
    return [np.asarray(o, np.float64) for o in out]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_match_dustmaps3d_read_map(dtype):
    rng = np.random.default_rng(11)
    cols = random_columns(60_000, rng, dtype)
    d = hard_distances(cols, rng)
    rec = build_records(cols)
    assert rec[0].dtype == dtype and rec[1].dtype == dtype
    res = evaluate(rec, np.arange(len(d)), d, components=True)
    ebv, dens, sigma, maxd = reference(cols, d)
    assert_agrees(res["ebv"], ebv, "ebv")
    assert_agrees(res["density"], dens, "density")
    assert_agrees(res["sigma"], sigma, "sigma")
    assert_agrees(res["max_distance"], maxd, "max_distance")
    # the plain E(B-V) kernel gives the same numbers as the full one
    np.testing.assert_array_equal(evaluate(rec, np.arange(len(d)), d), res["ebv"])


def test_float32_table_needs_float32_constants():
    """Why the constants are derived in the table's precision: derived in float64 from a
    float32 table, small spans and b_lim near 0 move away from the released numbers."""
    rng = np.random.default_rng(5)
    cols = random_columns(20_000, rng, np.float32)
    d = hard_distances(cols, rng)
    ref = reference(cols, d)[0]
    as64 = build_records({k: v.astype(np.float64) for k, v in cols.items()})
    ours64 = evaluate(as64, np.arange(len(d)), d)
    ok = np.isfinite(ref) & np.isfinite(ours64)
    rel = np.abs(ours64[ok] - ref[ok]) / np.maximum(np.abs(ref[ok]), 1e-9)
    assert rel.max() > 1e-4
    ours32 = evaluate(build_records(cols), np.arange(len(d)), d)
    assert_agrees(ours32, ref, "ebv")


def _one_sightline(**kw):
    base = {c: 0.0 for c in TABLE_COLUMNS}
    base.update(b_lim=30.0, bubble=0.1, diffuse_dust_rho=0.02, h=0.1, max_distance=6.0,
                sigma=0.03, sigma_0_2=0.02, sigma_1_4=0.025, sigma_2_max=0.04,
                distance_1=0.5, span_1=0.2, Cum_EBV_1=0.3, span_2=0.1, span_3=0.1, span_4=0.1)
    base.update(kw)
    return build_records({k: np.array([v], np.float64) for k, v in base.items()})


def test_density_is_derivative_of_ebv():
    rec = _one_sightline()
    x = np.linspace(0.15, 5.0, 400)  # away from the bubble edge step (left out of density)
    h = 1e-6
    rows = np.zeros(x.size, np.int64)
    fd = (evaluate(rec, rows, x + h) - evaluate(rec, rows, x - h)) / (2 * h)
    dens = evaluate(rec, rows, x, components=True)["density"]
    np.testing.assert_allclose(dens, fd, rtol=1e-5, atol=1e-7)


def test_analytic_limits():
    """E(0) = 0; at the bubble edge E = C0 = T (1 - exp(-bubble/span0)); far away
    E -> T + C0 + cloud columns (the edge step rises to 2 C0 in the released model, with
    T = span0 rho and span0 = h / sin b); the cloud's density peaks at
    distance + 2 span + bubble."""
    rec = _one_sightline()
    rows = np.zeros(3, np.int64)
    e = evaluate(rec, rows, np.array([0.0, 1e3, 1e4]))
    assert abs(e[0]) < 1e-12
    span0 = 0.1 / np.sin(np.deg2rad(30.0))
    total, c0 = span0 * 0.02, span0 * 0.02 * (1 - np.exp(-0.1 / span0))
    np.testing.assert_allclose(e[1:], total + c0 + 0.3, rtol=1e-12)
    rec0 = _one_sightline(Cum_EBV_1=0.0)
    np.testing.assert_allclose(evaluate(rec0, np.zeros(1, np.int64), np.array([0.1])), c0,
                               rtol=1e-12)
    x = np.linspace(0.6, 1.4, 80001)
    _, dens = cloud_profiles(rec, 0, x)
    assert abs(x[np.argmax(dens[:, 1])] - (0.5 + 2 * 0.2 + 0.1)) < 2e-5


def test_sigma_by_distance_range():
    rec = _one_sightline(sigma=0.05, sigma_0_2=0.02, sigma_1_4=np.nan, sigma_2_max=0.04)
    x = np.array([0.5, 1.5, 3.0, 5.0])
    s = evaluate(rec, np.zeros(4, np.int64), x, components=True)["sigma"]
    np.testing.assert_array_equal(s, [0.02, 0.02, 0.04, 0.04])
    rec = _one_sightline(sigma=0.05, sigma_0_2=np.nan, sigma_1_4=np.nan, sigma_2_max=np.nan)
    s = evaluate(rec, np.zeros(4, np.int64), x, components=True)["sigma"]
    np.testing.assert_array_equal(s, [0.05] * 4)


def test_components_and_flags():
    rec = _one_sightline(Cum_EBV_2=0.0005, distance_2=2.0, span_2=0.3,
                         Cum_EBV_3=0.2, distance_3=3.0, span_3=0.4)
    centre1 = 0.5 + 0.4 + 0.1
    centre3 = 3.0 + 0.8 + 0.1
    x = np.array([centre1, centre1 + 0.11, 2.0 + 0.6 + 0.1, centre3 - 0.19, 7.0, np.nan, -1.0,
                  np.inf])
    r = evaluate(rec, np.zeros(x.size, np.int64), x, components=True)
    np.testing.assert_array_equal(r["n_clouds"], [2] * 8)
    np.testing.assert_array_equal(r["in_cloud"], [True, False, False, True, False, False,
                                                  False, False])
    np.testing.assert_array_equal(r["cloud_index"], [1, 0, 0, 3, 0, 0, 0, 0])
    np.testing.assert_allclose(r["cloud_distance"][[0, 3]], [centre1, centre3])
    np.testing.assert_allclose(r["cloud_size"][[0, 3]], [0.2, 0.4])
    np.testing.assert_allclose(r["cloud_column"][[0, 3]], [0.3, 0.2])
    assert np.isnan(r["cloud_distance"][[1, 2, 4]]).all()
    # reliable: 0 <= d <= max_distance; NaN distance means max_distance
    np.testing.assert_array_equal(r["reliable"], [True] * 4 + [False, True, False, False])
    assert r["distance"][5] == 6.0
    assert np.isnan(r["ebv"][6:]).all() and np.isnan(r["density"][6:]).all()
    assert np.isnan(r["sigma"][6:]).all()
    np.testing.assert_allclose(r["scale_height"], 0.2)
    np.testing.assert_allclose(r["bubble_distance"], 0.1)
    # no sightline
    r = evaluate(rec, np.array([-1]), np.array([1.0]), components=True)
    assert np.isnan(r["ebv"][0]) and r["n_clouds"][0] == -1 and not r["reliable"][0]


def test_profiles_sum_to_total():
    rng = np.random.default_rng(2)
    cols = random_columns(50, rng, np.float32)
    rec = build_records(cols)
    x = np.linspace(0, 12, 500)
    for row in range(50):
        e, dd = cloud_profiles(rec, row, x)
        tot = evaluate(rec, np.full(x.size, row), x, components=True)
        ok = np.isfinite(tot["ebv"])
        np.testing.assert_allclose(e.sum(axis=1)[ok], tot["ebv"][ok], rtol=1e-9, atol=1e-12)
        okd = np.isfinite(tot["density"])
        np.testing.assert_allclose(dd.sum(axis=1)[okd], tot["density"][okd], rtol=1e-9,
                                   atol=1e-12)


@pytest.mark.parametrize("n", [10, 5000, 100_000])
def test_serial_parallel_and_blocked_paths_agree(n, monkeypatch):
    rng = np.random.default_rng(n)
    cols = random_columns(3000, rng, np.float32)
    rec = build_records(cols)
    rows = rng.integers(-1, 3000, n)
    d = rng.uniform(0, 12, n)
    released = []
    monkeypatch.setattr(par, "CHUNK_POINTS", 97)  # many tasks per block of rows
    full = evaluate(rec, rows, d, components=True, release=lambda a, b: released.append((a, b)))
    monkeypatch.setattr(par, "PARALLEL_MIN_POINTS", 10 ** 12)
    monkeypatch.setattr(par, "BLOCKED_MIN_POINTS", 10 ** 12)
    serial = evaluate(rec, rows, d, components=True)
    for name in full:
        np.testing.assert_array_equal(full[name], serial[name], err_msg=name)
    assert released == ([(0, 3000)] if n >= par.RELEASE_MIN_POINTS else [])


def test_concurrent_threads_give_same_results():
    rng = np.random.default_rng(9)
    cols = random_columns(5000, rng, np.float32)
    rec = build_records(cols)
    rows = rng.integers(0, 5000, 200_000)
    d = rng.uniform(0, 12, rows.size)
    expected = evaluate(rec, rows, d)
    results, errors = [], []

    def work():
        try:
            for _ in range(3):
                results.append(evaluate(rec, rows, d))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 12
    for r in results:
        np.testing.assert_array_equal(r, expected)
