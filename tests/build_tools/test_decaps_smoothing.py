"""Posterior smoothing: no bias at the E = 0 edge, parallax-aware distance width."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dustmaps_ext_build.decaps import filters, mock, pipeline, prior, sampler
from dustmaps_ext_build.decaps.inputs import N_DM, N_E, StarPosteriors, boxes_from_dense
from scipy.ndimage import gaussian_filter


def _one_star(image, **meta):
    x0, nx, y0, ny, off, data = boxes_from_dense(image[None], threshold=0.0)
    return StarPosteriors([300.0], [0.0], x0, nx, y0, ny, off, data, **meta)


def test_flat_posterior_stays_flat_at_the_reddening_edge():
    img = np.zeros((N_DM, N_E), np.float32)
    img[50:60, 0:40] = 1.0 / 400  # flat in E from 0 to 0.39 mag
    sm = filters.smooth_posteriors(_one_star(img)).image(0)
    marg = sm[50:60].sum(axis=0)
    assert sm.sum() == pytest.approx(1.0, rel=1e-4)  # less the cells below 1e-4 of the peak
    assert marg[0] == pytest.approx(marg[10], rel=0.01)  # reflected: no dip at E = 0
    # the clipped-and-renormalised kernel (the baseline) halves the density at the edge
    clipped = gaussian_filter(img.astype(float), (1.2, 7.0), mode="constant", truncate=4.0)
    cm = clipped[50:60].sum(axis=0)
    assert cm[0] < 0.6 * cm[10]


def test_parallax_narrows_the_distance_smoothing():
    base = 0.01 * N_DM * 0.125
    img = np.zeros((N_DM, N_E), np.float32)
    img[60, 100] = 1.0
    p = np.array([2.0, 1.0, np.nan, 5.0])
    e = np.array([0.1, 0.5, 0.1, 0.02])
    one = _one_star(img)  # a 1 x 1 box: four copies share nothing
    stars = StarPosteriors(np.full(4, 300.0), np.zeros(4), *(np.repeat(getattr(one, k), 4)
                                                             for k in ("x0", "nx", "y0", "ny")),
                           np.arange(4), np.repeat(one.data, 4), parallax_mas=p,
                           parallax_err_mas=e)
    width = filters.distance_smoothing_mag(stars)
    expect = [min(base, 2.5 * math.log10(2.1 / 1.9)), base, base,
              2.5 * math.log10(5.02 / 4.98)]
    np.testing.assert_allclose(width, expect, rtol=1e-12)
    # the smoothed image has that width in distance modulus (variance of a point source)
    sm = filters.smooth_posteriors(stars, threshold=0.0)
    mu = 4.0 + 0.125 * np.arange(N_DM)
    for k, w in enumerate(width):
        m = sm.image(k).sum(axis=1)
        var = (m * (mu - 11.5) ** 2).sum() / m.sum()
        if w > 0.125:  # a kernel wider than a cell: its discrete variance is ~ w^2
            assert math.sqrt(var) == pytest.approx(w, rel=0.03)
        else:
            assert math.sqrt(var) < 0.125


@pytest.mark.slow
def test_no_bias_in_front_of_a_cloud():
    """Truth: E = 0 up to mu = 10, 1 mag behind; 300 stars of sigma_E 0.03-0.08 mag."""
    y = np.zeros(N_DM, np.int64)
    y[48:] = 100
    table = prior.log_jump_prior_table(prior.jump_prior_means(300, 0, pipeline.DM_EDGES))
    rng = np.random.default_rng(0)
    front = {"reflect": [], "clip": []}
    for rep in range(3):
        stars, _ = mock.synthetic_step_pixel(300, y, rng)
        dense = np.stack([stars.image(k) for k in range(stars.n_star)]).astype(float)
        clipped = gaussian_filter(dense, (0, 1.2, 7.0), mode="constant", truncate=4.0)
        clipped *= (dense.sum(axis=(1, 2)) / clipped.sum(axis=(1, 2)))[:, None, None]
        for name, st in [("reflect", filters.smooth_posteriors(stars)),
                         ("clip", _as_stars(clipped))]:
            pk = sampler.pack_pixel(st.x0, st.nx, st.y0, st.ny, st.offsets, st.data,
                                    weight_mode="loglike")
            res = sampler.sample_pixel(pk, table, sampler.SamplerSettings(
                n_rounds=500, sweeps_per_round=10), seed=rep, retry=False)
            front[name].append(res.samples.mean(axis=0)[16:44].mean())  # mu 6 - 9.4
    assert abs(np.mean(front["reflect"])) <= 0.005, front
    assert np.mean(front["clip"]) > 0.02, front  # the edge bias the reflection removes


def _as_stars(dense):
    x0, nx, y0, ny, off, data = boxes_from_dense(dense.astype(np.float32), 1e-4)
    n = dense.shape[0]
    return StarPosteriors(np.full(n, 300.0), np.zeros(n), x0, nx, y0, ny, off, data)
