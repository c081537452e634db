"""Tests of the compact star inputs, smoothing, quality cuts, pixel weights and App. B."""

from __future__ import annotations

import math

import healpy as hp
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from scipy import ndimage

from dustmaps_ext_build.decaps import filters, mock, pixelize, reliable
from dustmaps_ext_build.decaps.inputs import (DM_MIN, DM_STEP, E_STEP, N_DM, N_E, StarPosteriors,
                                       bin_samples, boxes_from_dense)

EDGES = DM_MIN + DM_STEP * np.arange(N_DM)


def _stars(n, rng, **kw):
    y = np.zeros(N_DM, np.int64)
    y[40:] = 80
    return mock.synthetic_step_pixel(n, y, rng, **kw)[0]


def test_bin_samples_matches_histogram2d():
    rng = np.random.default_rng(0)
    mu = rng.normal(10.0, 1.0, (3, 5000))
    e = np.abs(rng.normal(1.0, 0.3, (3, 5000)))
    img = bin_samples(mu, e)
    xe = DM_MIN - 0.5 * DM_STEP + DM_STEP * np.arange(N_DM + 1)
    ye = -0.5 * E_STEP + E_STEP * np.arange(N_E + 1)
    for k in range(3):
        h, _, _ = np.histogram2d(mu[k], e[k], bins=(xe, ye))
        np.testing.assert_allclose(img[k], h / 5000.0, atol=1e-7)


def test_box_storage_roundtrip_and_size(tmp_path):
    rng = np.random.default_rng(1)
    stars = _stars(30, rng)
    dense = np.stack([stars.image(k) for k in range(stars.n_star)])
    x0, nx, y0, ny, off, data = boxes_from_dense(dense, threshold=0.0)
    again = StarPosteriors(stars.l, stars.b, x0, nx, y0, ny, off, data, stars.chi2_best,
                           stars.n_bands, stars.m_init_median, stars.dist_p2_5_kpc)
    for k in range(stars.n_star):
        np.testing.assert_array_equal(again.image(k), dense[k])
    path = again.save(tmp_path / "stars.npz")
    back = StarPosteriors.load(path)
    sub = back.subset([3, 7])
    np.testing.assert_array_equal(sub.image(1), dense[7])
    assert back.subset(np.zeros(back.n_star, bool)).n_star == 0
    # the compact form is a small fraction of a dense stack
    assert stars.data.nbytes < 0.1 * dense.nbytes
    with pytest.raises(ValueError, match="bounding boxes"):
        StarPosteriors(stars.l[:1], stars.b[:1], [119], [5], [0], [1], [0], data,
                       [1.0], [5], [1.0], [1.0])


def test_smoothing_matches_scipy_gaussian_filter():
    rng = np.random.default_rng(2)
    stars = _stars(5, rng, mu_range=(9.0, 12.0))
    smoothed = filters.smooth_posteriors(stars, threshold=0.0)
    for k in range(stars.n_star):
        ref = ndimage.gaussian_filter(stars.image(k).astype(np.float64), sigma=(1.2, 7.0),
                                      truncate=4.0, mode="constant")
        got = smoothed.image(k)
        np.testing.assert_allclose(got, ref * stars.image(k).sum() / ref.sum(), atol=2e-6,
                                   rtol=1e-4)
        assert got.sum() == pytest.approx(stars.image(k).sum(), rel=1e-5)


def test_max_reddening_curve_constant_density():
    d = np.linspace(0, 2.0, 201)
    curve = filters.max_reddening_curve(d, np.full(d.size, 0.5))
    dist = 10 ** (EDGES / 5 - 2)
    near = EDGES <= filters.DM_LIMIT_UNPHYSICAL
    np.testing.assert_allclose(curve[near], 0.5 * dist[near], rtol=1e-9)
    assert np.all(np.isinf(curve[~near]))


def test_quality_cuts_and_unphysical_removal():
    # star 0: good; 1: bad chi2; 2: M dwarf; 3: too far; 4: 70% of its mass in the
    # unphysical corner; 5: 30% there (kept, corner zeroed).
    mu_c = np.array([[9.0, 9.0], [9.0, 9.0], [9.0, 9.0], [9.0, 9.0], [6.0, 12.0], [6.0, 12.0]])
    e_c = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [4.0, 1.0], [4.0, 1.0]])
    w = np.array([[1, 1], [1, 1], [1, 1], [1, 1], [0.7, 0.3], [0.3, 0.7]], float)
    x0, nx, y0, ny, off, data = mock.gaussian_mixture_boxes(mu_c, e_c, 0.2, 0.05, w)
    n = 6
    stars = StarPosteriors(np.zeros(n), np.zeros(n), x0, nx, y0, ny, off, data,
                           chi2_best=[5.0, 40.0, 5.0, 5.0, 5.0, 5.0], n_bands=[6] * n,
                           m_init_median=[1.0, 1.0, 0.3, 1.0, 1.0, 1.0],
                           dist_p2_5_kpc=[1.0, 1.0, 1.0, 45.0, 1.0, 1.0])
    d = np.linspace(0, 1.5, 151)
    curve = filters.max_reddening_curve(d, np.full(d.size, 1.0))  # <= 1.25 mag
    masks = filters.quality_mask(stars, curve)
    np.testing.assert_array_equal(masks["chi2"], [1, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(masks["m_dwarf"], [1, 1, 0, 1, 1, 1])
    np.testing.assert_array_equal(masks["distance"], [1, 1, 1, 0, 1, 1])
    np.testing.assert_array_equal(masks["unphysical"], [1, 1, 1, 1, 0, 1])
    kept, _ = filters.filter_stars(stars, curve, smooth=False)
    assert kept.n_star == 2
    img = kept.image(1)
    assert img.sum() == pytest.approx(1.0, rel=1e-5)
    rows = np.arange(N_E)[None, :]
    bad = (EDGES[:, None] <= filters.DM_LIMIT_UNPHYSICAL) & (rows * E_STEP > curve[:, None] + 0.005)
    assert img[bad].sum() == 0.0
    assert img[~bad].sum() == pytest.approx(1.0, rel=1e-5)


def test_pixel_weights_against_brute_force():
    nside = 1024
    rng = np.random.default_rng(3)
    pix = hp.ang2pix(nside, 300.0, 1.0, lonlat=True, nest=True)
    neigh = hp.get_all_neighbours(nside, pix, nest=True)
    pixels = np.sort(np.concatenate([[pix], neigh]))
    lc, bc = hp.pix2ang(nside, pix, nest=True, lonlat=True)
    size_deg = math.degrees(pixelize.pixel_size_rad(nside))
    l = lc + rng.uniform(-8, 8, 400) * size_deg
    b = bc + rng.uniform(-8, 8, 400) * size_deg
    asg = pixelize.assign_stars_to_pixels(l, b, pixels, nside)
    fwhm = 2.5 * size_deg
    sigma = fwhm / math.sqrt(8 * math.log(2))
    stars_c = SkyCoord(l * u.deg, b * u.deg, frame="galactic")
    for i, p in enumerate(pixels):
        pl, pb = hp.pix2ang(nside, p, nest=True, lonlat=True)
        sep = stars_c.separation(SkyCoord(pl * u.deg, pb * u.deg, frame="galactic")).deg
        inside = np.flatnonzero(sep <= 2 * fwhm)
        s, w = asg.stars_of(i)
        np.testing.assert_array_equal(s, inside)
        np.testing.assert_allclose(w, np.exp(-0.5 * (sep[inside] / sigma) ** 2), rtol=1e-6)
    assert asg.n_stars().sum() == asg.star.size
    with pytest.raises(ValueError, match="power of two"):
        pixelize.assign_stars_to_pixels(l, b, pixels, 1000)


def test_reliable_distances_analytic_and_from_stars():
    p = np.full(N_DM, 0.1)
    dm_min, dm_max = reliable.reliable_distance_range(p, EDGES)
    # forward: 0.6 > 0.5 after 6 bins; backward: 5.1 > 5 after 51 bins
    assert dm_min == pytest.approx(EDGES[5])
    assert dm_max == pytest.approx(EDGES[N_DM - 51])
    assert np.isnan(reliable.reliable_distance_range(np.zeros(N_DM), EDGES)[0])
    rng = np.random.default_rng(4)
    stars = _stars(20, rng)
    w = rng.uniform(0.1, 1, 20)
    pd = reliable.distance_probability(stars, np.arange(20), w)
    dense = sum(w[k] * stars.image(k).sum(axis=1) for k in range(20))
    np.testing.assert_allclose(pd, dense, rtol=1e-5)
