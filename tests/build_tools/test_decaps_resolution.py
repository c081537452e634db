"""Angular resolution of the DECaPS build: a 1' filament and the point-spread function.

Stars at the paper's density (about 21 per arcmin^2, ~300 in a pixel's 2.15' weighting disc
at nside 8192) lie behind a cloud at mu = 7; each star's posterior is a Gaussian centred
on its true (mu, E). The map's pixels are fitted by :func:`pipeline.process_block`, so the
test runs the pipeline's own weighting, packing and sampler.
"""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest
from dustmaps_ext_build.decaps import mock, pipeline, sampler
from dustmaps_ext_build.decaps.inputs import StarPosteriors
from scipy.optimize import curve_fit

NSIDE = 8192
DENSITY = 21.0  # stars per arcmin^2: ~300 within 2.15'
MU_FAR = 13.0
I_FAR = round((MU_FAR - 4.0) / 0.125)


def _centre_pixel(l0=300.0, b0=0.0):
    p = hp.ang2pix(NSIDE, l0, b0, nest=True, lonlat=True)
    return hp.pix2ang(NSIDE, p, nest=True, lonlat=True)


def _stars(rng, lc, bc, half_l_arcmin, half_b_arcmin, ebv_of, sigma_ebv, extra=None):
    area = 4 * half_l_arcmin * half_b_arcmin
    n = rng.poisson(DENSITY * area)
    dl = rng.uniform(-half_l_arcmin, half_l_arcmin, n) / 60.0
    db = rng.uniform(-half_b_arcmin, half_b_arcmin, n) / 60.0
    if extra is not None:
        dl = np.concatenate([dl, extra[0]])
        db = np.concatenate([db, extra[1]])
        n = dl.size
    l, b = lc + dl / np.cos(np.radians(bc)), bc + db
    mu = rng.uniform(8.0, 14.0, n)
    e = ebv_of(dl * 60.0, db * 60.0)
    x0, nx, y0, ny, off, data = mock.gaussian_mixture_boxes(mu, e, 0.3, sigma_ebv)
    return StarPosteriors(l, b, x0, nx, y0, ny, off, data)


def _config(lc, bc, half_l_deg, half_b_deg, weight_mode="loglike"):
    return pipeline.DecapsBuildConfig(
        nside=NSIDE, nside_block=NSIDE // 64, retry=False, seed=3, weight_mode=weight_mode,
        sampler=sampler.SamplerSettings(n_rounds=300, sweeps_per_round=8, n_samples=50),
        n_keep_samples=5, l_range_deg=(lc - half_l_deg, lc + half_l_deg),
        b_range_deg=(bc - half_b_deg, bc + half_b_deg))


def _fit_footprint(stars, cfg):
    blocks = np.unique(hp.ang2pix(cfg.nside_block, stars.l, stars.b, nest=True, lonlat=True))
    res = pipeline.concat_block_results([pipeline.process_block(int(k), stars, cfg)
                                         for k in blocks])
    assert res["fitted"].all()
    return res


@pytest.mark.parametrize("mode, expect_ok", [("loglike", True), ("loglike_kish", True),
                                             ("image", False)])
def test_one_arcmin_filament_is_recovered_at_its_centre(mode, expect_ok):
    lc, bc = _centre_pixel()
    rng = np.random.default_rng(11)
    # E = 1.0 in a 1'-wide filament through the pixel centre, 0.2 around it
    stars = _stars(rng, lc, bc, 2.4, 2.4,
                   lambda dl, db: np.where(np.abs(db) < 0.5, 1.0, 0.2), 0.05)
    res = _fit_footprint(stars, _config(lc, bc, 0.001, 0.001, mode))
    assert res["healpix_index"].size == 1
    e_centre = float(res["mean"][0, I_FAR])
    if expect_ok:
        assert e_centre >= 0.9, e_centre
    else:  # the posterior-times-weight baseline washes the filament out (a top-hat)
        assert e_centre < 0.9, e_centre


def test_effective_psf_fwhm_is_the_papers():
    lc, bc = _centre_pixel()
    rng = np.random.default_rng(5)
    # a point-like cloud (5 extra stars within 0.1') of +1 mag at (lc, bc), broad
    # posteriors (sigma_E 0.5 mag) so that the response is linear in the star weights
    r = 0.1 * np.sqrt(rng.random(5))
    phi = rng.uniform(0, 2 * np.pi, 5)
    extra = (r * np.cos(phi) / 60.0, r * np.sin(phi) / 60.0)
    stars = _stars(rng, lc, bc, 4.8, 2.6,
                   lambda dl, db: np.where(np.hypot(dl, db) <= 0.1, 2.0, 1.0), 0.5,
                   extra=extra)
    res = _fit_footprint(stars, _config(lc, bc, 2.6 / 60, 0.008))
    pl, pb = hp.pix2ang(NSIDE, res["healpix_index"].astype(np.int64), nest=True, lonlat=True)
    sep = np.degrees(hp.rotator.angdist([lc, bc], [pl, pb], lonlat=True)) * 60.0
    resp = res["mean"][:, I_FAR].astype(float)
    assert sep.size >= 12

    def model(x, a, s, c):
        return a * np.exp(-0.5 * (x / s) ** 2) + c

    (a, s, _), _ = curve_fit(model, sep, resp, p0=(0.2, 0.5, 1.0))
    fwhm = 2.0 * np.sqrt(2.0 * np.log(2.0)) * abs(s)
    assert a > 0.05
    assert abs(fwhm - 1.07) <= 0.2 * 1.07, fwhm
