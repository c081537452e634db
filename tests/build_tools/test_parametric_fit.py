"""One sightline fit: recovery of a known model, clipping, dropping, bounds, sigmas."""

from __future__ import annotations

import numpy as np
import pytest

from dustmaps_ext_build.parametric.fit import (FitConfig, fit_sightline, initial_parameters,
                                        parameter_bounds, residual_sigma)
from dustmaps_ext_build.parametric.model import cloud_centres, evaluate_model

# two clouds (centres 0.6 and 1.9 kpc) on a thin diffuse disk, at b = 15 deg
TRUTH = np.array([0.1, 0.12, 0.03,
                  0.35, 0.05, 0.35,
                  1.4, 0.1, 0.25,
                  0.0, 0.01, 0.0,
                  0.0, 0.01, 0.0])
B_LIM = 15.0


def _stars(rng, n=300, noise=0.03):
    x = np.sort(rng.uniform(0.1, 4.0, n))
    e = evaluate_model(TRUTH, B_LIM, x) + rng.normal(0.0, noise, n)
    w = rng.uniform(0.2, 1.0, n)
    return x, e, w


def test_recovers_a_known_sightline():
    rng = np.random.default_rng(2)
    x, e, w = _stars(rng)
    res = fit_sightline(x, e, w, B_LIM)
    grid = np.linspace(0.1, 4.0, 100)
    err = np.abs(evaluate_model(res.params, B_LIM, grid) - evaluate_model(TRUTH, B_LIM, grid))
    assert np.median(err) < 0.01
    assert err.max() < 0.1
    centres = cloud_centres(res.params)[res.params[5::3] >= 0.05]
    for true_centre in (0.6, 1.9):
        assert np.min(np.abs(centres - true_centre)) < 0.15 * true_centre
    assert res.sigma == pytest.approx(0.03, rel=0.25)
    assert res.start_sigmas.shape == (4,)
    assert np.all(np.isfinite(res.start_sigmas))
    assert res.max_distance == pytest.approx(x.max())


def test_outliers_are_clipped_and_do_not_pull_the_fit():
    rng = np.random.default_rng(3)
    x, e, w = _stars(rng)
    clean = fit_sightline(x, e, w, B_LIM)
    bad = rng.choice(x.size, 8, replace=False)
    e2 = e.copy()
    e2[bad] += 0.6
    res = fit_sightline(x, e2, w, B_LIM)
    assert res.n_clipped >= 8
    grid = np.linspace(0.2, 3.8, 50)
    diff = evaluate_model(res.params, B_LIM, grid) - evaluate_model(clean.params, B_LIM, grid)
    assert np.median(np.abs(diff)) < 0.01
    # the farthest star defines max_distance only if it survives the clipping
    far = np.argmax(x)
    e3 = e.copy()
    e3[far] += 1.0
    assert fit_sightline(x, e3, w, B_LIM).max_distance < x[far]


def test_bounds_dropping_and_cloud_order():
    rng = np.random.default_rng(4)
    x, e, w = _stars(rng, n=150, noise=0.05)
    cfg = FitConfig()
    res = fit_sightline(x, e, w, B_LIM, config=cfg)
    lo, hi = np.array(parameter_bounds(cfg)).T
    assert np.all(res.params >= lo) and np.all(res.params <= hi)
    cols = res.params[5::3]
    assert np.all((cols == 0.0) | (cols >= cfg.drop_below))
    centres = res.params[3::3] + 2 * res.params[4::3]
    assert np.all(np.diff(centres) >= 0)


def test_distance_range_sigmas_and_reliable_stars():
    rng = np.random.default_rng(5)
    x = np.sort(rng.uniform(0.1, 1.8, 200))  # no star beyond 2 kpc
    e = evaluate_model(TRUTH, B_LIM, x) + rng.normal(0, 0.02, x.size)
    w = np.ones(x.size)
    reliable = x < 1.5
    res = fit_sightline(x, e, w, B_LIM, reliable=reliable)
    assert np.isnan(res.sigma_2_max)
    assert np.isfinite(res.sigma_0_2) and np.isfinite(res.sigma_1_4)
    assert res.sigma_0_2 == pytest.approx(res.sigma, rel=1e-12)  # the same stars
    assert res.max_distance == pytest.approx(x[reliable].max())


def test_initial_parameters_follow_table_3():
    cfg = FitConfig()
    p = initial_parameters(cfg, 1, ebv_max=0.8)
    assert tuple(p[:3]) == (0.1, 0.12, 0.02)
    np.testing.assert_allclose(p[5::3], 0.2)  # E(B-V)_max / 4
    np.testing.assert_allclose(p[4::3], 0.1 * np.array(cfg.start_distances[1]))
    np.testing.assert_allclose(cloud_centres(p), cfg.start_distances[1])


def test_residual_sigma_is_a_weighted_standard_deviation():
    r = np.array([1.0, -1.0, 3.0])
    w = np.array([1.0, 1.0, 2.0])
    mean = (1 - 1 + 6) / 4
    expected = np.sqrt(((1 - mean) ** 2 + (-1 - mean) ** 2 + 2 * (3 - mean) ** 2) / 4)
    assert residual_sigma(r, w) == pytest.approx(expected)
    assert np.isnan(residual_sigma(np.array([]), np.array([])))


@pytest.mark.parametrize("kwargs, match", [
    ({"distance": [1.0]}, "at least two"),
    ({"weight": [1.0, 0.0, 1.0]}, "positive"),
    ({"ebv": [0.1, np.nan, 0.2]}, "finite"),
    ({"b_lim_deg": 0.0}, "b_lim"),
    ({"ebv": [0.1, 0.2]}, "same length"),
])
def test_bad_input(kwargs, match):
    args = {"distance": [0.5, 1.0, 2.0], "ebv": [0.1, 0.2, 0.3], "weight": [1.0, 1.0, 1.0],
            "b_lim_deg": 10.0}
    args.update(kwargs)
    if len(args["distance"]) == 1:
        args["ebv"], args["weight"] = [0.1], [1.0]
    with pytest.raises(ValueError, match=match):
        fit_sightline(args["distance"], args["ebv"], args["weight"], args["b_lim_deg"])


def test_bad_config():
    with pytest.raises(ValueError, match="start_distances"):
        FitConfig(start_distances=((1.0, 2.0),))
    with pytest.raises(ValueError, match="exceeds"):
        FitConfig(rho_bounds=(1.0, 0.0))
