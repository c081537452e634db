"""Tests of the §4.2.4 infill on a smooth field whose truth is known."""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest

from dustmaps_ext_build.decaps import infill

NSIDE = 64


def _patch(n_rows=30, n_cols=40):
    ncap = 2 * NSIDE * (NSIDE - 1)
    ring0 = NSIDE // 2  # rings inside the equatorial belt
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    ring_idx = ncap + (ring0 + rows) * 4 * NSIDE + cols
    nest = hp.ring2nest(NSIDE, ring_idx.ravel())
    field = (1.0 + 0.5 * np.sin(2 * np.pi * rows / 23.0 + 0.3)
             + 0.4 * np.cos(2 * np.pi * cols / 17.0) + 0.2 * np.sin(2 * np.pi * (rows + cols) / 11.0))
    return nest, field.ravel(), rows.ravel(), cols.ravel()


def test_ring_grid_recovers_rows_and_columns():
    nest, _, rows, cols = _patch()
    r, c = infill.ring_grid(nest, NSIDE)
    np.testing.assert_array_equal(r - r.min(), rows)
    np.testing.assert_array_equal(c - c.min(), cols)
    with pytest.raises(ValueError, match="equatorial belt"):
        infill.ring_grid([hp.ang2pix(NSIDE, 0.01, 0.0, nest=True)], NSIDE)  # polar cap


def test_infill_predicts_a_smooth_field_with_consistent_draws():
    nest, field, rows, cols = _patch()
    scale = np.array([0.5, 1.0, 1.5])
    truth = field[:, None] * scale[None, :]
    rng = np.random.default_rng(0)
    maps = np.stack([truth, truth + 0.01 * rng.standard_normal(truth.shape),
                     truth + 0.01 * rng.standard_normal(truth.shape)])
    missing = (np.abs(rows - 15) <= 1) & (np.abs(cols - 20) <= 1)
    missing |= (rows == 8) & (cols == 30)
    kw = dict(window=7, train=15, median_width=5, seed=3)
    filled, infilled = infill.infill_maps(nest, NSIDE, maps, missing, **kw)
    np.testing.assert_array_equal(infilled, missing)
    # known pixels are untouched
    np.testing.assert_array_equal(filled[:, ~missing], maps[:, ~missing])
    err = np.abs(filled[0, missing] - truth[missing])
    assert err.max() < 0.1 * truth.std()
    # the conditional Gaussian does better than the moving-median first pass
    img = np.full((30, 40, 3), np.nan)
    img[rows, cols] = np.where(missing[:, None], np.nan, maps[0])
    known = np.zeros((30, 40), bool)
    known[rows, cols] = ~missing
    pre, _ = infill.moving_median_fill(img, known, 5)
    err_median = np.abs(pre[rows[missing], cols[missing]] - truth[missing])
    assert err.mean() < 0.5 * err_median.mean()
    # draws: the same standard normals in every slice, so a field that scales with distance
    # gives sample infills that scale too (up to the small independent noise in the maps)
    for m in (1, 2):
        d0 = filled[m, missing, 0] - filled[0, missing, 0]
        d2 = filled[m, missing, 2] - filled[0, missing, 2]
        assert np.corrcoef(d0, d2)[0, 1] > 0.5
    again, _ = infill.infill_maps(nest, NSIDE, maps, missing, **kw)
    np.testing.assert_array_equal(again, filled)
    other, _ = infill.infill_maps(nest, NSIDE, maps, missing, **{**kw, "seed": 4})
    assert not np.array_equal(other[1], filled[1])
    np.testing.assert_array_equal(other[0], filled[0])  # the mean infill has no randomness


def test_infill_argument_checks():
    nest, field, _, _ = _patch(10, 10)
    maps = np.zeros((1, nest.size, 2))
    with pytest.raises(ValueError, match="odd"):
        infill.infill_maps(nest, NSIDE, maps, np.zeros(nest.size, bool), window=6)
    with pytest.raises(ValueError, match="one flag per pixel"):
        infill.infill_maps(nest, NSIDE, maps, np.zeros(3, bool))


def test_ring_origin_keeps_a_footprint_across_l0_in_one_piece():
    n_ring = 4 * NSIDE
    # DECaPS: 239 < l < 366 deg; the seam goes to the middle of the gap, l = 122.5 deg
    assert infill.ring_origin((239.0, 366.0), 8192) == round(122.5 / 360 * 4 * 8192)
    assert infill.ring_origin((239.0, 366.0), NSIDE, seam_deg=0.0) == 0
    assert infill.ring_origin((0.0, 360.0), NSIDE) == 0  # no gap: the seam stays at l_lo
    pix = np.arange(12 * NSIDE ** 2)
    l, b = hp.pix2ang(NSIDE, pix, nest=True, lonlat=True)
    foot = pix[((l > 239) | (l < 6)) & (np.abs(b) < 10)]
    _, col0 = infill.ring_grid(foot, NSIDE)
    assert col0.max() - col0.min() == n_ring - 1  # cut at l = 0
    _, col = infill.ring_grid(foot, NSIDE, infill.ring_origin((239.0, 366.0), NSIDE))
    width = col.max() - col.min() + 1
    assert width <= 127 / 360 * n_ring + 2  # one piece, as wide as the footprint
    # rolling the rings changes columns only
    r0, _ = infill.ring_grid(foot, NSIDE)
    r1, c1 = infill.ring_grid(foot, NSIDE, 17)
    np.testing.assert_array_equal(r0, r1)
    np.testing.assert_array_equal((c1 + 17) % n_ring, col0)
