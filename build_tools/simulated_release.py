"""A realistic simulated DECaPS release: values drawn the way the release's sampler makes them.

The published samples of Zucker et al. (2025) are cumulative E(B-V) profiles of a discrete
sampler: exact multiples of 0.01 mag, non-decreasing over the 120 distance bins, with many
equal neighbouring values; the published mean is the average of 100 such samples, stored
as float16; about 1% of the pixels are infilled and carry continuous values. How well a
codec compresses the map depends on exactly these properties, so the benchmarks and the
tests of the compact layout use this simulation rather than the smooth log-normal map of
:mod:`dustmaps_ext_build.simulated_decaps`.

How the values are drawn, per pixel (truth from :mod:`dustmaps_ext_build.galaxy`):

* the expected increment of a bin, in units of 0.01 mag, is ``100 x`` the true reddening
  increment times ``reddening_scale`` (and, optionally, a per-pixel log-normal scale);
* each of the ``n_samples`` published samples has Poisson increments of that expectation,
  accumulated to an integer profile ``k`` and stored as ``float16(k / 100)``;
* the mean is the average of 100 samples: the published ones plus ``100 - n_samples`` more,
  whose summed increments are drawn at once (a sum of independent Poisson draws is Poisson),
  stored as ``float16(sum / 100)``;
* infilled pixels (``infilled_fraction``) get continuous profiles instead: the true profile
  scaled by log-normal noise per bin, accumulated, and their mean.

The file is written in the published layout by
:func:`dustmaps_ext_build.writers.decaps.create_decaps_release` (chunks of 200,842 pixels x
one (sample, distance) pair, deflate 3 + shuffle, as released).
"""

from __future__ import annotations

from pathlib import Path

import healpy as hp
import numba
import numpy as np
from dustmaps_ext.progress import tqdm

from .galaxy import SimulatedGalaxy, default_galaxy
from .simulated_decaps import plan_blocks, simulate_flags
from .writers.decaps import DM_BIN_EDGES, PUBLISHED_CHUNK_PIXELS, create_decaps_release

__all__ = ["SAMPLES_PER_MEAN", "sampler_like_values", "write_realistic_decaps"]

#: Samples averaged into the published mean (Zucker et al. 2025).
SAMPLES_PER_MEAN = 100
_DRAW_PIXELS = 32768  # pixels drawn at once


@numba.njit(cache=True, nogil=True)
def _poisson_profiles(rates, n_samples, n_mean, seed, out_samples, out_sum):
    """Integer cumulative profiles: ``n_samples`` stored ones and the sum of ``n_mean``."""
    np.random.seed(seed)
    n_pix, n_dist = rates.shape
    for p in range(n_pix):
        for s in range(n_samples):
            acc = 0
            for i in range(n_dist):
                lam = rates[p, i]
                if lam > 0.0:
                    acc += np.random.poisson(lam)
                out_samples[p, s, i] = acc
        total = 0
        extra = n_mean - n_samples
        for i in range(n_dist):
            lam = rates[p, i]
            if lam > 0.0 and extra > 0:
                total += np.random.poisson(lam * extra)
            step = 0
            for s in range(n_samples):
                prev = out_samples[p, s, i - 1] if i > 0 else 0
                step += out_samples[p, s, i] - prev
            total += step
            out_sum[p, i] = total


def sampler_like_values(truth: np.ndarray, rng: np.random.Generator, *, n_samples: int = 5,
                        infilled: np.ndarray | None = None, reddening_scale: float = 1.6,
                        pixel_scatter: float = 0.0, infill_scatter: float = 0.3) -> dict:
    """Samples and mean of pixels, drawn like the release's sampler (see the module).

    Parameters
    ----------
    truth : numpy.ndarray, shape (n, n_dist)
        True cumulative E(B-V) (mag), non-decreasing along distance.
    rng : numpy.random.Generator
        Randomness.
    n_samples : int
        Published samples per pixel (the release: 5); at most :data:`SAMPLES_PER_MEAN`.
    infilled : numpy.ndarray of bool, shape (n,), optional
        Pixels that get continuous (infilled) values.
    reddening_scale : float
        Factor on the true reddening. The default 1.6 makes the published layout and a
        16-pixel deflate-7 copy compress to the release's fractions of raw float16 (0.457
        and 0.248; this simulation: about 0.45 and 0.245).
    pixel_scatter, infill_scatter : float
        Log-normal scatter of a per-pixel rate scale (0: none; it decorrelates neighbouring
        pixels and makes the published layout compress worse than the release) and of the
        infill's per-bin noise.

    Returns
    -------
    dict
        ``samples`` (n, n_samples, n_dist) and ``mean`` (n, 1, n_dist), float16.
    """
    truth = np.asarray(truth, dtype=np.float64)
    if truth.ndim != 2:
        raise ValueError(f"truth must have shape (n, n_dist); got {truth.shape}")
    if not 1 <= n_samples <= SAMPLES_PER_MEAN:
        raise ValueError(f"n_samples must be between 1 and {SAMPLES_PER_MEAN}; got {n_samples}")
    n, n_dist = truth.shape
    steps = reddening_scale * np.clip(np.diff(truth, axis=1, prepend=0.0), 0.0, None)
    scale = rng.lognormal(-0.5 * pixel_scatter ** 2, pixel_scatter, size=(n, 1))
    rates = np.ascontiguousarray(100.0 * steps * scale)
    cents = np.empty((n, n_samples, n_dist), dtype=np.int32)
    cents_sum = np.empty((n, n_dist), dtype=np.int64)
    _poisson_profiles(rates, n_samples, SAMPLES_PER_MEAN, int(rng.integers(0, 2 ** 31 - 1)),
                      cents, cents_sum)
    # float16(k / 100) through a table of every k present: no float64 copy of the samples
    table = (np.arange(int(cents.max(initial=0)) + 1) / 100.0).astype(np.float16)
    samples = table[cents]
    mean = (cents_sum / (100.0 * SAMPLES_PER_MEAN)).astype(np.float16)[:, None, :]
    if infilled is not None and np.any(infilled):
        sel = np.flatnonzero(infilled)
        noise = rng.lognormal(-0.5 * infill_scatter ** 2, infill_scatter,
                              size=(sel.size, n_samples, n_dist))
        smooth = np.cumsum(steps[sel, None, :] * noise, axis=2)
        samples[sel] = smooth.astype(np.float16)
        mean[sel] = smooth.mean(axis=1, keepdims=True).astype(np.float16)
    return {"samples": samples, "mean": mean}


def write_realistic_decaps(path, *, nside: int, galaxy: SimulatedGalaxy | None = None,
                           seed: int = 2025, n_samples: int = 5, max_pixels: int | None = None,
                           infilled_fraction: float = 0.01,
                           chunk_pixels: int = PUBLISHED_CHUNK_PIXELS, overwrite: bool = False,
                           progress: bool = False) -> Path:
    """Write a published-layout DECaPS file whose values are drawn like the release's.

    Parameters
    ----------
    path : str or Path
        Output file.
    nside : int
        HEALPix nside (2048 gives 3.2 million footprint pixels; the release: 8192).
    galaxy : SimulatedGalaxy, optional
        Default :func:`dustmaps_ext_build.galaxy.default_galaxy`.
    seed : int
        Seed of values and flags (per block, so the file does not depend on memory).
    n_samples : int
        Published samples per pixel (the release: 5).
    max_pixels : int, optional
        Keep only the first footprint pixels in nested order.
    infilled_fraction : float
        Fraction of pixels flagged infilled, with continuous values (the release: ~1%).
    chunk_pixels, overwrite, progress
        As in :func:`~dustmaps_ext_build.simulated_decaps.write_simulated_decaps`.

    Returns
    -------
    Path
        ``path``.
    """
    if not 0.0 <= infilled_fraction <= 1.0:
        raise ValueError(f"infilled_fraction must lie in [0, 1]; got {infilled_fraction}")
    galaxy = galaxy or default_galaxy()
    pixels, blocks, flag_rng = plan_blocks(nside, max_pixels, chunk_pixels, seed)
    n_pix = pixels.size
    flags = simulate_flags(n_pix, flag_rng)
    flags["infilled"] = flag_rng.random(n_pix) < infilled_fraction
    d_kpc = 10.0 ** (0.2 * DM_BIN_EDGES.astype(np.float64) - 2.0)
    with create_decaps_release(path, nside=nside, healpix_index=pixels, n_samples=n_samples,
                               chunk_pixels=chunk_pixels, overwrite=overwrite, **flags) as f:
        for (a, b), ss in tqdm(blocks, desc="Realistic DECaPS map", disable=not progress):
            mean = np.empty((b - a, 1, DM_BIN_EDGES.size), dtype=np.float16)
            samples = np.empty((b - a, n_samples, DM_BIN_EDGES.size), dtype=np.float16)
            rng = np.random.default_rng(ss)
            for c in range(a, b, _DRAW_PIXELS):  # bounded memory within a chunk row
                e = min(c + _DRAW_PIXELS, b)
                l_deg, b_deg = hp.pix2ang(nside, pixels[c:e], nest=True, lonlat=True)
                truth = galaxy.cumulative_profile(l_deg, b_deg, d_kpc)
                block = sampler_like_values(truth, rng, n_samples=n_samples,
                                            infilled=flags["infilled"][c:e])
                mean[c - a:e - a] = block["mean"]
                samples[c - a:e - a] = block["samples"]
            f["mean"][a:b] = mean
            f["samples"][a:b] = samples
    return Path(path)
