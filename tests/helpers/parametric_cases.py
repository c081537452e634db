"""Sightline parameters of the parametric model (Wang et al. 2025) with its hard cases, and
the comparison of evaluated values with a reference (NaN where and only where it has NaN)."""

from __future__ import annotations

import numpy as np


def random_columns(n: int, rng: np.random.Generator, dtype=np.float32) -> dict:
    """Random sightline parameters with the hard cases of the model mixed in."""
    c = {}
    b_lim = rng.uniform(-90, 90, n)
    hard = rng.random(n) < 0.05
    b_lim[hard] = rng.choice([0.0, 1e-3, -1e-3, 0.01, -0.05, -90.0], hard.sum())
    c["b_lim"] = b_lim
    bubble = rng.uniform(0.05, 0.4, n)
    tiny = rng.random(n) < 0.05
    bubble[tiny] = rng.uniform(1e-4, 0.02, tiny.sum())
    c["bubble"] = bubble
    rho = rng.uniform(0, 0.04, n)
    rho[rng.random(n) < 0.05] = 0.0
    c["diffuse_dust_rho"] = rho
    c["h"] = rng.uniform(0.05, 0.5, n)
    for k in range(1, 5):
        c[f"distance_{k}"] = rng.uniform(0, 5, n)
        span = np.exp(rng.uniform(np.log(0.01), np.log(1.5), n))
        span[rng.random(n) < 0.1] = 1e-4
        c[f"span_{k}"] = span
        cum = rng.uniform(0, 1.5, n)
        cum[rng.random(n) < 0.3] = 0.0
        cum[rng.random(n) < 0.05] = 5e-4
        c[f"Cum_EBV_{k}"] = cum
    for name in ("sigma", "sigma_0_2", "sigma_1_4", "sigma_2_max"):
        s = rng.uniform(0.005, 0.1, n)
        s[rng.random(n) < 0.3] = np.nan
        c[name] = s
    c["max_distance"] = rng.uniform(1, 15, n)
    return {k: v.astype(dtype) for k, v in c.items()}


def assert_agrees(ours: np.ndarray, ref: np.ndarray, what: str, rtol=1e-6, atol=1e-9):
    nan_ours, nan_ref = np.isnan(ours), np.isnan(ref)
    assert np.array_equal(nan_ours, nan_ref), (
        f"{what}: NaN at {np.flatnonzero(nan_ours != nan_ref)[:10]}")
    ok = ~nan_ref
    err = np.abs(ours[ok] - ref[ok])
    bad = err > np.maximum(rtol * np.abs(ref[ok]), atol)
    idx = np.flatnonzero(ok)[bad][:5]
    assert not bad.any(), f"{what}: {bad.sum()} points differ, e.g. {ours[idx]} vs {ref[idx]}"
