"""DECaPS-format maps of the simulated galaxy, with known truth.

Every pixel of the DECaPS footprint (239 < l or l < 6 deg, |b| < 10 deg) at a chosen nside
gets the true cumulative E(B-V) of :mod:`dustmaps_ext_build.galaxy` at the 120 distance-modulus
edges of the release. Posterior samples scatter the true reddening increments (log-normal,
so every sample stays cumulative and non-decreasing); the mean is the mean of the samples.
Reliable distance ranges, convergence and infill flags are drawn per pixel, with a few NaN
ranges, as in the real map. Used by the tests, the benchmarks and the demo map.
"""

from __future__ import annotations

from pathlib import Path

import healpy as hp
import numpy as np
from dustmaps_ext.progress import tqdm

from dustmaps_ext.formats import decaps as decaps_format
from dustmaps_ext.healpix import in_lon_lat_box

from .galaxy import SimulatedGalaxy, default_galaxy
from .writers.decaps import DM_BIN_EDGES, PUBLISHED_CHUNK_PIXELS, create_decaps_release

__all__ = ["in_decaps_footprint", "footprint_pixels", "simulate_flags", "simulate_values",
           "write_simulated_decaps"]


#: True inside the DECaPS footprint: 239 < l or l < 6 deg, and |b| < 10 deg (the format's rule).
in_decaps_footprint = decaps_format.in_footprint


def footprint_pixels(nside: int, max_pixels: int | None = None) -> np.ndarray:
    """Sorted NESTED pixels at ``nside`` whose centres lie in the DECaPS footprint.

    The search walks nside-32 parents that touch the footprint, so it stays cheap at high
    nside. ``max_pixels`` keeps the first pixels in nested order.
    """
    parent_nside = min(32, nside)
    parents = np.arange(12 * parent_nside ** 2)
    pl, pb = hp.pix2ang(parent_nside, parents, nest=True, lonlat=True)
    margin = 2.5 * np.degrees(hp.nside2resol(parent_nside))
    (l_lo, l_hi), (b_lo, b_hi) = decaps_format.L_RANGE_DEG, decaps_format.B_RANGE_DEG
    near = in_lon_lat_box(pl, pb, (l_lo - margin, l_hi + margin), (b_lo - margin, b_hi + margin))
    per_parent = (nside // parent_nside) ** 2
    out = []
    total = 0
    for p in parents[near]:
        children = p * per_parent + np.arange(per_parent)
        cl, cb = hp.pix2ang(nside, children, nest=True, lonlat=True)
        keep = children[in_decaps_footprint(cl, cb)]
        out.append(keep)
        total += keep.size
        if max_pixels is not None and total >= max_pixels:
            break
    pix = np.concatenate(out) if out else np.empty(0, dtype=np.int64)
    return pix[:max_pixels] if max_pixels is not None else pix


def simulate_flags(n: int, rng: np.random.Generator) -> dict:
    """Per-pixel reliable distance-modulus ranges (2% NaN each) and convergence/infill flags."""
    dm_min = rng.uniform(5.0, 8.0, n).astype(np.float32)
    dm_max = rng.uniform(12.0, 15.5, n).astype(np.float32)
    dm_min[rng.random(n) < 0.02] = np.nan
    dm_max[rng.random(n) < 0.02] = np.nan
    return {"dm_reliable_min": dm_min, "dm_reliable_max": dm_max,
            "converged": rng.random(n) < 0.95, "infilled": rng.random(n) < 0.03}


def simulate_values(galaxy: SimulatedGalaxy, nside: int, pixels: np.ndarray, rng: np.random.Generator,
                    *, n_samples: int = 5, scatter: float = 0.3, dm_bin_edges=DM_BIN_EDGES) -> dict:
    """Truth, samples and mean of some pixels.

    Returns
    -------
    dict
        ``truth`` (n, n_dist) float64, ``samples`` (n, n_samples, n_dist) float16 and
        ``mean`` (n, 1, n_dist) float16 (the mean of the samples).
    """
    l, b = hp.pix2ang(nside, pixels, nest=True, lonlat=True)
    d = 10.0 ** (0.2 * np.asarray(dm_bin_edges, dtype=np.float64) - 2.0)
    truth = galaxy.cumulative_profile(l, b, d)
    steps = np.diff(truth, axis=1, prepend=0.0)
    noise = rng.lognormal(-0.5 * scatter ** 2, scatter, size=(pixels.size, n_samples, d.size))
    samples = np.cumsum(steps[:, None, :] * noise, axis=2).astype(np.float16)
    mean = samples.astype(np.float64).mean(axis=1, keepdims=True).astype(np.float16)
    return {"truth": truth, "samples": samples, "mean": mean}


def write_simulated_decaps(path, *, nside: int, galaxy: SimulatedGalaxy | None = None,
                           seed: int = 2025, n_samples: int = 5, max_pixels: int | None = None,
                           mean_only: bool = False, chunk_pixels: int = PUBLISHED_CHUNK_PIXELS,
                           overwrite: bool = False, progress: bool = False) -> Path:
    """Write a published-layout DECaPS file of the simulated galaxy.

    Parameters
    ----------
    path : str or Path
        Output file.
    nside : int
        HEALPix nside (the real map: 8192; the demo: 64; 2048 gives 3.2 M pixels).
    galaxy : SimulatedGalaxy, optional
        Default :func:`dustmaps_ext_build.galaxy.default_galaxy`.
    seed : int
        Seed of the samples and flags (per block, so the file does not depend on memory).
    n_samples : int
        Posterior samples per pixel (the release has 5).
    max_pixels : int, optional
        Keep only the first pixels of the footprint in nested order.
    mean_only : bool
        Write a mean-only file (like ``decaps_mean.h5``).
    chunk_pixels : int
        Pixels per HDF5 chunk (the release: 200,842).
    overwrite, progress : bool
        Replace an existing file; show a progress bar.

    Returns
    -------
    Path
    """
    galaxy = galaxy or default_galaxy()
    pixels = footprint_pixels(nside, max_pixels)
    n_pix = pixels.size
    step = max(1, min(chunk_pixels, n_pix))
    blocks = [(a, min(a + step, n_pix)) for a in range(0, n_pix, step)]
    flag_seed, value_seed = np.random.SeedSequence(seed).spawn(2)
    flags = simulate_flags(n_pix, np.random.default_rng(flag_seed))
    with create_decaps_release(path, nside=nside, healpix_index=pixels,
                               n_samples=0 if mean_only else n_samples, chunk_pixels=chunk_pixels,
                               overwrite=overwrite, **flags) as f:
        for (a, b), ss in tqdm(list(zip(blocks, value_seed.spawn(len(blocks)))),
                               desc="Simulated DECaPS map", disable=not progress):
            block = simulate_values(galaxy, nside, pixels[a:b], np.random.default_rng(ss),
                                    n_samples=n_samples)
            f["mean"][a:b] = block["mean"]
            if not mean_only:
                f["samples"][a:b] = block["samples"]
    return Path(path)
