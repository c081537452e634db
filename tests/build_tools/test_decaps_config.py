"""Tests of the DECaPS build configuration and block inputs."""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest

from dustmaps_ext_build.decaps import mock, pipeline, pixelize
from dustmaps_ext_build.decaps.sampler import SamplerSettings


def test_footprint_wraps_in_longitude():
    cfg = pipeline.DecapsBuildConfig()
    inside = cfg.in_footprint([359.0, 2.0, 240.0, 100.0, 300.0, 300.0],
                              [0.0, -5.0, 9.9, 0.0, 10.5, -10.5])
    np.testing.assert_array_equal(inside, [True, True, True, False, False, False])


def test_config_checks_and_fingerprint():
    with pytest.raises(ValueError, match="power of two"):
        pipeline.DecapsBuildConfig(nside=1000)
    with pytest.raises(ValueError, match="n_keep_samples"):
        pipeline.DecapsBuildConfig(sampler=SamplerSettings(n_samples=3))
    a = pipeline.DecapsBuildConfig()
    assert a.fingerprint() == pipeline.DecapsBuildConfig().fingerprint()
    assert a.fingerprint() != pipeline.DecapsBuildConfig(seed=1).fingerprint()
    assert a.fingerprint() != pipeline.DecapsBuildConfig(
        sampler=SamplerSettings(n_rounds=100)).fingerprint()


def test_block_star_files_hold_every_star_a_block_needs(tmp_path):
    rng = np.random.default_rng(0)
    y = np.zeros(120, np.int64)
    stars, _ = mock.synthetic_step_pixel(300, y, rng)
    stars.l[:] = rng.uniform(299.9, 300.1, stars.n_star)
    stars.b[:] = rng.uniform(-0.1, 0.1, stars.n_star)
    cfg = pipeline.DecapsBuildConfig(nside=1024, nside_block=256)
    prep = pipeline.prepare_inputs(stars, tmp_path, cfg, smooth=False)
    from dustmaps_ext_build.decaps.inputs import StarPosteriors

    for bid in prep["blocks"]:
        pix = np.arange(bid * 16, (bid + 1) * 16)
        full = pixelize.assign_stars_to_pixels(stars.l, stars.b, pix, cfg.nside)
        part_stars = StarPosteriors.load(tmp_path / f"stars_{int(bid):06d}.npz")
        part = pixelize.assign_stars_to_pixels(part_stars.l, part_stars.b, pix, cfg.nside)
        np.testing.assert_array_equal(full.n_stars(), part.n_stars())
        np.testing.assert_allclose(np.sort(full.weight), np.sort(part.weight))
    # every pixel touched by a star belongs to one of the blocks written
    touched = pixelize.pixels_touched(stars.l, stars.b, cfg.nside)
    assert set(np.unique(touched // 16)) <= set(prep["blocks"].tolist())
    assert hp.nside2npix(cfg.nside) > touched.max()
