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
