"""The line-of-sight prior: bayestar's flared sech^2 disk with an inner hole (hand values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from dustmaps_ext_build.decaps import pipeline, prior


def _hand_density(l_deg, b_deg, d_kpc):
    """rho_ISM of bayestar v0.2.0 written out by hand (R0 = 8, Z0 = 0.025, H = 0.1344,
    L = 2.26, dH/dR = 0.0148 beyond 4.4 kpc, hole inside 4 kpc), 0.2 mag/kpc at the Sun."""
    def shape(R, Z):
        H = 0.1344 + (R - 4.4) * 0.0148 if R > 4.4 else 0.1344
        radial = -R / 2.26 if R > 4.0 else -4.0 / 2.26 - (R - 4.0) ** 2 / 16.0
        return math.exp(radial) / math.cosh((Z + 0.025) / H) ** 2

    lr, br = math.radians(l_deg), math.radians(b_deg)
    x = 8.0 - d_kpc * math.cos(br) * math.cos(lr)
    y = d_kpc * math.cos(br) * math.sin(lr)
    return 0.2 * shape(math.hypot(x, y), d_kpc * math.sin(br)) / shape(8.0, 0.0)


@pytest.mark.parametrize("l, b, d", [(0, 0, 4.0), (0, 0, 6.0), (0, 0, 7.9), (180, 0, 4.0),
                                     (90, 5, 2.0), (300, -1.5, 1.6), (330, 10, 0.5)])
def test_density_matches_hand_computed_values(l, b, d):
    got = float(prior.FlaredSechDiskDustModel().density(l, b, np.array([d]))[0])
    assert got == pytest.approx(_hand_density(l, b, d), rel=1e-12)


def test_normalised_at_the_sun_with_hole_and_flare():
    m = prior.FlaredSechDiskDustModel()
    assert float(m.density(45.0, 0.0, np.array([1e-9]))[0]) == pytest.approx(0.2, rel=1e-6)
    # scale height 134.4 pc inside the flare radius; at the Sun (R = 8 kpc) 134.4 + 3.6 * 14.8
    z = np.array([0.0, 0.1])
    inner = m.shape(np.array([3.0, 3.0]), z - 0.025)
    assert inner[1] / inner[0] == pytest.approx(1 / math.cosh(0.1 / 0.1344) ** 2)
    sun = m.shape(np.array([8.0, 8.0]), z - 0.025)
    assert sun[1] / sun[0] == pytest.approx(1 / math.cosh(0.1 / (0.1344 + 3.6 * 0.0148)) ** 2)
    # the inner hole: toward the Galactic Centre the density peaks near R = 4 kpc and falls
    # inside, where the plain exponential disk keeps rising (x36 at R = 0)
    d = np.array([4.0, 8.0])
    hole = m.density(0.0, 0.0, d)
    assert hole[1] < 0.4 * hole[0]
    expo = prior.SmoothDiskDustModel().density(0.0, 0.0, d)
    assert expo[1] > expo[0]


def test_build_default_prior_is_the_bayestar_disk():
    cfg = pipeline.DecapsBuildConfig()
    assert isinstance(cfg.prior_model, prior.FlaredSechDiskDustModel)
    means = prior.jump_prior_means(300.0, 0.0, pipeline.DM_EDGES)
    # first bins: the Sun's neighbourhood, 0.2 mag/kpc times the bin width, unclipped
    d = 10 ** (pipeline.DM_EDGES.astype(float) / 5 - 2)
    assert means[10] == pytest.approx(0.2 * (d[10] - d[9]), rel=0.05)


@pytest.mark.parametrize("x", [5, 40, 60, 90])
def test_split_rounding_keeps_the_mean_jump(x):
    """The split table shares each continuous jump between the two nearest quanta: its
    masses are those of a triangle kernel (checked by quadrature), its mean jump is the
    model's, and the mean profile is the model's column; the default floor rounding of the
    C++ code (the baseline) loses most jumps below one quantum."""
    means = prior.jump_prior_means(330.0, -1.5, pipeline.DM_EDGES)
    split = np.exp(prior.log_jump_prior_table(means, 0.75, 700, rounding="split"))
    floor = np.exp(prior.log_jump_prior_table(means, 0.75, 700))  # the default
    dist = stats.lognorm(s=0.75, scale=means[x] * math.exp(-0.75 ** 2 / 2))
    q = 0.01

    def mass(k):
        rise = (integrate.quad(lambda e: dist.pdf(e) * (e / q - (k - 1)), q * (k - 1), q * k,
                               epsabs=0, epsrel=1e-10)[0] if k else 0.0)
        fall = integrate.quad(lambda e: dist.pdf(e) * (k + 1 - e / q), q * k, q * (k + 1),
                              epsabs=0, epsrel=1e-10)[0]
        return rise + fall

    ks = np.arange(6)
    np.testing.assert_allclose(split[x, ks], [mass(k) for k in ks], rtol=1e-6, atol=1e-300)
    dy = 0.01 * np.arange(700)
    np.testing.assert_allclose(split @ dy, means, rtol=1e-6)
    np.testing.assert_allclose(np.cumsum(split @ dy), np.cumsum(means), rtol=1e-6)
    # floor: about half a quantum lower, or nearly nothing for jumps below one quantum
    assert means[x] - (floor @ dy)[x] > min(0.0045, 0.9 * means[x])


def test_split_rounding_rejects_unknown_modes():
    with pytest.raises(ValueError, match="rounding"):
        prior.log_jump_prior_table([0.01], rounding="nearest")


def test_build_config_checks_the_prior_rounding():
    assert pipeline.DecapsBuildConfig().prior_rounding == "floor"  # the released map's code
    assert pipeline.DecapsBuildConfig(prior_rounding="split").prior_rounding == "split"
    with pytest.raises(ValueError, match="prior_rounding"):
        pipeline.DecapsBuildConfig(prior_rounding="round")
