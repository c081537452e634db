"""Mock catalogs drawn from the simulated galaxy: the error model behaves as documented."""

from __future__ import annotations

import numpy as np
import pytest

from dustmaps_ext_build.galaxy import default_galaxy, draw_observed_stars
from dustmaps_ext_build.parametric.mock import mock_catalog


def test_observed_stars_error_model():
    galaxy = default_galaxy()
    rng = np.random.default_rng(0)
    s = draw_observed_stars(galaxy, 20000, rng, l_range_deg=(60, 70), b_range_deg=(20, 30),
                            outlier_fraction=0.0)
    n = s["l"].size
    assert 1000 < n < 20000  # the magnitude limit and parallax cut remove stars
    assert np.all(s["g_mag"] <= 17.5)
    assert np.all((s["ebv_err"] >= 0.02) & (s["ebv_err"] <= 0.05))
    pull = (s["ebv"] - s["ebv_true"]) / s["ebv_err"]
    assert abs(np.mean(pull)) < 0.05 and np.std(pull) == pytest.approx(1.0, abs=0.05)
    # the truth is the galaxy's own reddening at the true distance
    np.testing.assert_allclose(s["ebv_true"], galaxy.cumulative_ebv(s["l"], s["b"], s["d"]))
    # Gaia-like distances: 1/parallax, asymmetric (upper error larger), errors grow with distance
    np.testing.assert_allclose(s["distance"], 1.0 / s["parallax"])
    assert np.all(s["distance_err_hi"] > s["distance_err_lo"])
    rel = 0.5 * (s["distance_err_lo"] + s["distance_err_hi"]) / s["distance"]
    near, far = s["d"] < 1.0, s["d"] > 3.0
    assert np.median(rel[far]) > 3 * np.median(rel[near])
    assert np.all(s["parallax"] > 3 * s["parallax_err"])
    # the 68% interval contains the true distance about 68% of the time
    inside = ((s["distance"] - s["distance_err_lo"] <= s["d"])
              & (s["d"] <= s["distance"] + s["distance_err_hi"]))
    assert inside.mean() == pytest.approx(0.68, abs=0.05)


def test_outliers_and_reproducibility():
    galaxy = default_galaxy()
    a, truth = mock_catalog(galaxy, 5000, 3, l_range_deg=(100, 105), b_range_deg=(30, 35),
                            return_truth=True, outlier_fraction=0.05)
    b = mock_catalog(galaxy, 5000, 3, l_range_deg=(100, 105), b_range_deg=(30, 35),
                     outlier_fraction=0.05)
    np.testing.assert_array_equal(a.ebv, b.ebv)
    # 5% of the stars get an exponential offset of mean 0.15 mag: a mean shift of 0.0075
    assert np.mean(a.ebv - truth["ebv_true"]) == pytest.approx(0.05 * 0.15, abs=0.002)
    with pytest.raises(ValueError, match="outlier_fraction"):
        mock_catalog(galaxy, 10, 0, outlier_fraction=1.5)


def test_cloud_ladder_at_the_papers_density():
    from dustmaps_ext_build.parametric.mock import (PAPER_STARS_PER_DEG2, catalog_at_density,
                                                    cloud_ladder_galaxy, ladder_patches)

    galaxy = cloud_ladder_galaxy()
    dists = sorted(c.distance_kpc for c in galaxy.clouds)
    assert dists[0] == pytest.approx(0.3) and dists[-1] == pytest.approx(4.0)
    patches = ladder_patches(0.5)
    assert len(patches) == 8
    # every patch centre crosses its cloud(s) with their full column along the centre
    (lr, br) = patches[4]
    found = galaxy.cloud_distances_along(np.mean(lr), np.mean(br), 0.05)
    assert [round(d, 2) for d, _ in found] == [0.6, 1.8]
    cat = catalog_at_density(galaxy, patches[:2], seed=3)
    for lr, br in patches[:2]:
        inside = (cat.l >= lr[0]) & (cat.l <= lr[1]) & (cat.b >= br[0]) & (cat.b <= br[1])
        area = (np.radians(0.5) * (np.sin(np.radians(br[1])) - np.sin(np.radians(br[0])))
                * (180 / np.pi) ** 2)
        assert inside.sum() == round(PAPER_STARS_PER_DEG2 * area)
    again = catalog_at_density(galaxy, patches[:2], seed=3)
    np.testing.assert_array_equal(cat.ebv, again.ebv)


def _observed_distance_cdf_by_quadrature(abs_mag_pdf, m_grid, b_range_deg, d_grid, g_limit,
                                         h_star=0.3, d_range=(0.05, 8.0)):
    """CDF at ``d_grid`` of the true distances of a G-limited sample without dust: stars
    uniform on the sky, along each direction at the distance law ``d^2 exp(-|z| / h)``,
    times the fraction of the luminosity function brighter than ``g_limit`` at each
    distance, by quadrature over d, b and M_G."""
    d = np.linspace(*d_range, 8001)
    sin_b = np.linspace(*np.sin(np.radians(b_range_deg)), 41)
    volume = d[None, :] ** 2 * np.exp(-d[None, :] * np.abs(sin_b[:, None]) / h_star)
    volume /= np.trapezoid(volume, d, axis=1)[:, None]
    # fraction of the stars visible at distance d: M_G <= g_limit - 5 log10(100 d)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (abs_mag_pdf[1:] + abs_mag_pdf[:-1])
                                          * np.diff(m_grid))])
    visible = np.interp(g_limit - 5.0 * np.log10(100.0 * d), m_grid, cum) / cum[-1]
    density = np.trapezoid(volume, sin_b, axis=0) * visible
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(d))])
    return np.interp(d_grid, d, cdf / cdf[-1])


@pytest.mark.parametrize("luminosity_function", ["solar_neighbourhood", "gaussian"])
def test_observed_distances_follow_the_luminosity_function(luminosity_function):
    """The true distances of a magnitude-limited draw match the distribution computed by
    quadrature from the luminosity function and the stellar volume density."""
    from scipy.stats import norm

    from dustmaps_ext_build.galaxy import (SOLAR_NEIGHBOURHOOD_LF, SOLAR_NEIGHBOURHOOD_LF_MV,
                                           XP_FAINT_LIMIT_MG, SimulatedGalaxy,
                                           absolute_g_from_v)

    empty = SimulatedGalaxy(disk_density=0.0)
    b_range, g_limit = (6.0, 9.0), 14.0  # bright: the parallax cut removes nobody
    s = draw_observed_stars(empty, 400000, np.random.default_rng(5), l_range_deg=(50, 60),
                            b_range_deg=b_range, g_limit=g_limit,
                            luminosity_function=luminosity_function)
    if luminosity_function == "gaussian":
        m_grid = np.linspace(-8.0, 13.0, 4001)
        pdf = norm.pdf(m_grid, 2.5, 1.5)
    else:
        # the table's M_V bins, piecewise constant, mapped onto M_G on a fine grid
        m_v = np.linspace(SOLAR_NEIGHBOURHOOD_LF_MV[0] - 0.5, SOLAR_NEIGHBOURHOOD_LF_MV[-1] + 0.5,
                          200001)
        phi_v = SOLAR_NEIGHBOURHOOD_LF[np.clip(np.round(m_v - SOLAR_NEIGHBOURHOOD_LF_MV[0]),
                                               0, SOLAR_NEIGHBOURHOOD_LF.size - 1).astype(int)]
        m_grid = absolute_g_from_v(m_v)
        pdf = phi_v / np.gradient(m_grid, m_v) * (m_grid <= XP_FAINT_LIMIT_MG)
    edges = np.array([0.1, 0.2, 0.3, 0.6, 1.0, 2.0, 4.0])
    expected = _observed_distance_cdf_by_quadrature(pdf, m_grid, b_range, edges, g_limit)
    observed = np.array([np.mean(s["d"] < e) for e in edges])
    n = s["d"].size
    tol = 4.0 * np.sqrt(expected * (1.0 - expected) / n) + 1e-4
    assert np.all(np.abs(observed - expected) <= tol), (observed, expected, tol)


def test_luminosity_function_puts_dwarfs_nearby():
    """The solar-neighbourhood function holds the nearby dwarfs that the old Gaussian lacked,
    its faint end is cut where the XP/LAMOST sample stops, and it matches published facts."""
    from dustmaps_ext_build.galaxy import (XP_FAINT_LIMIT_MG, absolute_g_from_v,
                                           draw_absolute_magnitudes,
                                           luminosity_function_density)

    # the Sun: M_V = 4.83, M_G = 4.67 (Casagrande & VandenBerg 2018)
    assert absolute_g_from_v(4.83) == pytest.approx(4.67, abs=0.05)
    # ~0.1 stars per pc^3 near the Sun, most of them too faint for the sample
    assert 0.08 < luminosity_function_density(99.0) < 0.15
    assert luminosity_function_density() < 0.3 * luminosity_function_density(99.0)
    m = draw_absolute_magnitudes(50000, np.random.default_rng(1))
    assert m.max() <= XP_FAINT_LIMIT_MG and np.median(m) > 6.0
    galaxy = default_galaxy()
    near = {}
    for lf in ("solar_neighbourhood", "gaussian"):
        s = draw_observed_stars(galaxy, 100000, np.random.default_rng(2), l_range_deg=(95, 105),
                                b_range_deg=(5, 12), luminosity_function=lf)
        near[lf] = np.mean(s["d"] < 0.6)
    assert near["solar_neighbourhood"] > 3 * near["gaussian"]
    with pytest.raises(ValueError, match="luminosity_function"):
        draw_observed_stars(galaxy, 10, np.random.default_rng(0), luminosity_function="kroupa")
    with pytest.raises(ValueError, match="faint_limit_mg"):
        draw_absolute_magnitudes(10, np.random.default_rng(0), faint_limit_mg=-20.0)
