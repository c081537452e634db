"""The ``no_reliable_range`` flag of a build: pixels whose stars are too few for any reliable
distance range (Zucker et al. 2025, Appendix B) are flagged, whatever ``converged`` says.

Uniform skies at nside 8192 (the paper's pixels): at 5,000 stars/deg^2 a pixel's weighting
disc (radius 2.15') holds ~20 stars whose Gaussian weights sum to ~2, below the p = 5 of the
maximum reliable distance, so every pixel is flagged; at 150,000 stars/deg^2 (~600 stars, weights
summing to ~50) none is.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from dustmaps_ext_build.decaps import mock, pipeline, sampler
from dustmaps_ext_build.decaps.inputs import StarPosteriors

FOOT_L, FOOT_B = (300.0, 300.03), (0.0, 0.03)  # ~16 pixels of nside 8192
MARGIN = 0.05  # deg, beyond the weighting radius (2.15')


def _uniform_sky(density_per_deg2: float, seed: int) -> StarPosteriors:
    rng = np.random.default_rng(seed)
    l_lo, l_hi = FOOT_L[0] - MARGIN, FOOT_L[1] + MARGIN
    b_lo, b_hi = FOOT_B[0] - MARGIN, FOOT_B[1] + MARGIN
    n = rng.poisson(density_per_deg2 * (l_hi - l_lo) * (b_hi - b_lo))
    mu = rng.uniform(6.0, 16.0, n)
    ebv = 0.05 * (mu - 6.0)
    box = mock.gaussian_mixture_boxes(mu, ebv, np.full(n, 0.3), np.full(n, 0.05))
    return StarPosteriors(rng.uniform(l_lo, l_hi, n), rng.uniform(b_lo, b_hi, n), *box,
                          np.ones(n), np.full(n, 8), np.ones(n), np.full(n, 0.1))


def _build(density: float, tmp_path):
    cfg = pipeline.DecapsBuildConfig(
        nside=8192, nside_block=1024, retry=False, seed=3, n_keep_samples=5,
        sampler=sampler.SamplerSettings(n_rounds=20, sweeps_per_round=2, n_samples=10),
        infill_window=3, infill_train=5, infill_median=3, l_range_deg=FOOT_L,
        b_range_deg=FOOT_B)
    stars = _uniform_sky(density, seed=int(density))
    prep = pipeline.prepare_inputs(stars, tmp_path / "stars", cfg, smooth=False)
    blocks = np.union1d(prep["blocks"], pipeline.footprint_blocks(cfg))
    res = [pipeline.process_block_file(int(b), star_dir=str(tmp_path / "stars"), config=cfg,
                                       star_blocks=prep["blocks"]) for b in blocks]
    blk = pipeline.concat_block_results(res)
    out = pipeline.assemble_release(blk, tmp_path / "map.h5", cfg, progress=False)
    with h5py.File(tmp_path / "map.h5", "r") as f:
        in_file = f["pixel_info/no_reliable_range"][()]
    return blk, out, in_file


@pytest.mark.parametrize("density, flagged", [(5_000, "all"), (150_000, "none")])
def test_pixels_without_a_reliable_range_are_flagged(density, flagged, tmp_path):
    blk, out, in_file = _build(density, tmp_path)
    n = out["healpix_index"].size
    assert n >= 10
    fitted = ~out["infilled"]
    # the flag is what Appendix B's thresholds say (independent recomputation)
    with np.errstate(invalid="ignore"):
        expected = ~(out["dm_reliable_min"] < out["dm_reliable_max"])
    np.testing.assert_array_equal(out["no_reliable_range"], expected)
    np.testing.assert_array_equal(in_file, expected.astype(np.uint8))
    if flagged == "all":
        # most pixels are still fitted (>= 10 stars) and many report converged: the flag,
        # not `converged`, says that they have no reliable distance range
        assert fitted.mean() > 0.5
        assert out["no_reliable_range"].all()
        assert np.median(blk["sum_weights"]) < 5.0
    else:
        assert fitted.all()
        assert not out["no_reliable_range"].any()
        assert np.median(blk["sum_weights"]) > 5.0
