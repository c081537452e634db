"""Tests of the DECaPS line-of-sight sampler against independent references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from dustmaps_ext_build.decaps import mock, prior, sampler
from dustmaps_ext_build.decaps.inputs import N_DM, N_E

EDGES = 4.0 + 0.125 * np.arange(N_DM)


def _dense_images(stars):
    return np.stack([stars.image(k) for k in range(stars.n_star)])


def _stored(images):
    """The packer's storage rule, written independently: each star's image over the power of
    two at or above its peak, rounded to IEEE half precision, scaled back (float64)."""
    peak = images.reshape(len(images), -1).max(axis=1)
    scale = np.exp2(np.ceil(np.log2(np.where(peak > 0, peak, 1.0))))[:, None, None]
    half = (images / scale).astype(np.float32).astype(np.float16)
    return half.astype(np.float64) * scale


def _step_profile():
    y = np.zeros(N_DM, np.int64)
    y[24:] = 50   # +0.5 mag at mu = 7
    y[64:] = 120  # +0.7 mag at mu = 12
    return y


def test_prior_table_matches_lognormal_masses():
    means = prior.jump_prior_means(300.0, 0.0, EDGES)
    assert means.shape == (N_DM,) and np.all(means > 0)
    # far bins are wider in distance, so the smooth disk gives more dust there
    assert means[100] > means[20]
    table = prior.log_jump_prior_table(means, sigma_ln=0.5)
    assert means.max() <= math.exp(-3.0) + 1e-15
    assert table.shape == (N_DM, N_E) and np.all(np.isfinite(table))
    np.testing.assert_allclose(np.exp(table).sum(axis=1), 1.0, rtol=1e-9)
    x = 90
    dist = stats.lognorm(s=0.5, scale=means[x] * math.exp(-0.125))
    mass = dist.cdf(0.01 * np.arange(1, N_E + 1)) - dist.cdf(0.01 * np.arange(N_E))
    ok = mass > 1e-8
    np.testing.assert_allclose(np.exp(table[x][ok]), mass[ok] / mass.sum(), rtol=1e-6)


def test_packing_preserves_line_integrals():
    rng = np.random.default_rng(0)
    stars, _ = mock.synthetic_step_pixel(40, _step_profile(), rng)
    dense = _dense_images(stars)
    pk = sampler.pack_pixel(stars.x0, stars.nx, stars.y0, stars.ny, stars.offsets, stars.data)
    stored = _stored(dense)
    peak_scale = np.exp2(np.ceil(np.log2(dense.reshape(len(dense), -1).max(axis=1))))
    for _ in range(5):
        y = np.cumsum(rng.integers(0, 4, N_DM))
        ref = dense[:, np.arange(N_DM), y].sum(axis=1)  # independent dense line integral
        got = sampler.line_integrals(pk, y)
        # exactly the line integral of the stored (half-precision) images ...
        ref_stored = stored[:, np.arange(N_DM), y].sum(axis=1)
        np.testing.assert_allclose(got, ref_stored[pk.order], rtol=1e-12, atol=0)
        # ... which is within half precision of the float32 images: per cell at most 2**-11
        # relative, or 2**-25 of the star's scale below the smallest normal half
        bound = 2.0 ** -11 * ref + N_DM * 2.0 ** -25 * peak_scale
        assert np.all(np.abs(got - ref[pk.order]) <= bound[pk.order])
        assert np.any(got != ref[pk.order])  # the rounding is real, so the bound is tested


def test_incremental_likelihood_equals_full_recomputation():
    rng = np.random.default_rng(1)
    stars, _ = mock.synthetic_step_pixel(50, _step_profile(), rng)
    dense = _stored(_dense_images(stars))
    w = rng.uniform(0.2, 1.0, stars.n_star)
    pk = sampler.pack_pixel(stars.x0, stars.nx, stars.y0, stars.ny, stars.offsets, stars.data,
                            weights=w, weight_mode="loglike")
    table = prior.log_jump_prior_table(prior.jump_prior_means(300.0, 0.0, EDGES))
    st = sampler.SamplerSettings(n_rounds=30, sweeps_per_round=5, resync=False)
    out = sampler.run_chain(pk, table, st, seed=11)
    y_final, L_final, logL_final, logPr_final, stat = out[3], out[4], out[5], out[6], out[7]
    assert stat[12:18].sum() > 1000  # many accepted moves were applied incrementally
    eps = st.p_badstar / N_E
    for t in range(st.n_temperatures):
        y = y_final[t]
        assert np.all(np.diff(y) >= 0) and y[0] >= 0 and y[-1] < N_E
        ref = dense[:, np.arange(N_DM), y].sum(axis=1)[pk.order]
        # float32 differences accumulate round-off far below eps = 1.4e-6
        np.testing.assert_allclose(L_final[t], ref, rtol=2e-5, atol=1e-7)
        assert logL_final[t] == pytest.approx(np.sum(w[pk.order] * np.log(ref + eps)),
                                              abs=0.02)
        jumps = np.diff(np.concatenate([[0], y]))
        assert logPr_final[t] == pytest.approx(table[np.arange(N_DM), jumps].sum(), rel=1e-12)


def test_sampler_recovers_known_step_profile():
    rng = np.random.default_rng(2)
    y_true = _step_profile()
    stars, _ = mock.synthetic_step_pixel(80, y_true, rng, sigma_mu=(0.15, 0.3),
                                         sigma_ebv=(0.02, 0.04), mu_range=(5.0, 16.0))
    pk = sampler.pack_pixel(stars.x0, stars.nx, stars.y0, stars.ny, stars.offsets, stars.data)
    # off the plane (b = 8 deg) the smooth-disk prior expects little far dust, like the truth
    table = prior.log_jump_prior_table(prior.jump_prior_means(300.0, 8.0, EDGES))
    st = sampler.SamplerSettings(n_rounds=200, sweeps_per_round=10, n_samples=50)
    res = sampler.sample_pixel(pk, table, st, seed=5, retry=False)
    assert res.samples.shape == (50, N_DM)
    mean = res.samples.mean(axis=0)
    mu = EDGES
    # away from the steps and inside the range of the stars, within 0.05 mag of the truth
    far = (np.abs(mu - 7.0) > 0.75) & (np.abs(mu - 12.0) > 0.75) & (mu > 5.5) & (mu < 15.5)
    err = np.abs(mean[far] - 0.01 * y_true[far])
    assert err.max() < 0.06, err.max()
    # the steps are found within half a magnitude in distance modulus
    for mu_step, level in ((7.0, 0.25), (12.0, 0.85)):
        found = mu[np.argmax(mean >= level)]
        assert abs(found - mu_step) <= 0.5
    assert np.all(np.isfinite(res.tau)) and res.attempts == 1
    assert res.stats["swaps_tried"] == 200


def test_sampler_is_deterministic_per_seed():
    rng = np.random.default_rng(3)
    stars, _ = mock.synthetic_step_pixel(20, _step_profile(), rng)
    pk = sampler.pack_pixel(stars.x0, stars.nx, stars.y0, stars.ny, stars.offsets, stars.data)
    table = prior.log_jump_prior_table(prior.jump_prior_means(300.0, 0.0, EDGES))
    st = sampler.SamplerSettings(n_rounds=20, sweeps_per_round=2, n_samples=10)
    a = sampler.sample_pixel(pk, table, st, seed=7, retry=False)
    b = sampler.sample_pixel(pk, table, st, seed=7, retry=False)
    c = sampler.sample_pixel(pk, table, st, seed=8, retry=False)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)


def _tiny_problem(rng, n_dist=3, n_E=8, n_star=3):
    images = rng.random((n_star, n_dist, n_E)).astype(np.float32) ** 3
    images /= images.sum(axis=(1, 2), keepdims=True)
    means = np.array([0.02, 0.03, 0.02])
    table = prior.log_jump_prior_table(means, sigma_ln=1.0, n_E=n_E)
    return images, table


def test_chain_samples_the_exact_posterior_of_a_tiny_problem():
    """All moves (steps, swaps, +-1 and absolute shifts, temperature swaps) together must
    leave the exact posterior invariant: enumerate it and compare the chain's histogram."""
    rng = np.random.default_rng(4)
    n_dist, n_E = 3, 8
    images, table = _tiny_problem(rng, n_dist, n_E)
    pk = sampler.pack_dense_images(images)
    images = _stored(images)  # the posterior of the images the sampler stores
    eps = 1e-3 / n_E
    states, logp = [], []
    for y in itertools.product(range(n_E), repeat=n_dist):
        y = np.array(y)
        if np.any(np.diff(y) < 0):
            continue
        L = images[:, np.arange(n_dist), y].sum(axis=1)
        jumps = np.diff(np.concatenate([[0], y]))
        states.append(tuple(y))
        logp.append(table[np.arange(n_dist), jumps].sum() + np.log(L + eps).sum())
    p = np.exp(np.array(logp) - max(logp))
    p /= p.sum()
    st = sampler.SamplerSettings(n_rounds=40000, sweeps_per_round=4, burnin_fraction=0.05)
    y_trace = sampler.run_chain(pk, table, st, seed=21)[0]
    index = {s: i for i, s in enumerate(states)}
    counts = np.zeros(len(states))
    for row in y_trace[2000:]:
        counts[index[tuple(int(v) for v in row)]] += 1
    counts /= counts.sum()
    tv = 0.5 * np.abs(counts - p).sum()
    assert tv < 0.03, tv


def test_integrated_autocorr_time_of_ar1():
    rng = np.random.default_rng(5)
    phi = 0.8
    n = 200_000
    e = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    tau = sampler.integrated_autocorr_time(x)
    assert tau == pytest.approx((1 + phi) / (1 - phi), rel=0.1)
    assert sampler.integrated_autocorr_time(rng.standard_normal(10000)) == pytest.approx(1, abs=0.2)


def test_settings_and_inputs_are_checked():
    with pytest.raises(ValueError, match="beta_ratio"):
        sampler.SamplerSettings(beta_ratio=1.5)
    rng = np.random.default_rng(6)
    stars, _ = mock.synthetic_step_pixel(5, _step_profile(), rng)
    pk = sampler.pack_pixel(stars.x0, stars.nx, stars.y0, stars.ny, stars.offsets, stars.data)
    with pytest.raises(ValueError, match="logp_dy"):
        sampler.run_chain(pk, np.zeros((3, 3)), sampler.SamplerSettings(), seed=0)
    with pytest.raises(ValueError, match="weights"):
        sampler.pack_pixel(stars.x0, stars.nx, stars.y0, stars.ny, stars.offsets, stars.data,
                           weights=[1.0])
