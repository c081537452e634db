"""Bayestar19-format files (Green et al. 2019 layout), plain or of the simulated galaxy.

The layout (the release, Harvard Dataverse doi:10.7910/DVN/2EJ9TX) is what
``dustmaps.bayestar.BayestarQuery(version='bayestar2019')`` reads: a structured ``pixel_info``
dataset (fields ``nside`` uint32, ``healpix_index`` uint64 NESTED, ``DM_reliable_min`` /
``DM_reliable_max`` float32 with NaN allowed, ``converged`` uint8) with attribute
``DM_bin_edges`` (float32); ``samples`` (n_pix, n_samples, n_dist) and ``best_fit`` (n_pix,
n_dist), float32, in Bayestar19 units.

:func:`write_simulated_bayestar19` covers dec > -30 deg (the Pan-STARRS 1 sky of
Bayestar19), within ``|b| < b_max_deg`` to keep files small, with pixels of several nsides
chosen by a simulated star density (finer where stars are denser, near the plane, as in
the real map), and values = true E(B-V) of :mod:`dustmaps_ext_build.galaxy` divided by
``ebv_per_unit`` (0.884), so that multiplying by 0.884 gives back E(B-V).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import healpy as hp
import numpy as np
from astropy.coordinates import SkyCoord
import astropy.units as u

from dustmaps_ext.files import atomic_output
from dustmaps_ext.formats import bayestar19 as bayestar19_format

from ..galaxy import SimulatedGalaxy, default_galaxy
from .decaps import DM_BIN_EDGES

__all__ = ["PIXEL_INFO_DTYPE", "write_bayestar19", "simulated_bayestar_pixels",
           "write_simulated_bayestar19"]

#: Record type of ``pixel_info`` in bayestar2019.h5 (the format's fact).
PIXEL_INFO_DTYPE = bayestar19_format.PIXEL_INFO_DTYPE


def write_bayestar19(path, *, nside, healpix_index, samples, best_fit, dm_reliable_min,
                     dm_reliable_max, converged, dm_bin_edges=DM_BIN_EDGES,
                     overwrite: bool = False) -> Path:
    """Write arrays to an HDF5 file in the Bayestar19 layout (rows in the order given).

    Parameters
    ----------
    path : str or Path
        Output file.
    nside, healpix_index : array_like of int, shape (n_pix,)
        nside and NESTED index of each pixel; pixels must not overlap.
    samples : array_like, shape (n_pix, n_samples, n_dist)
    best_fit : array_like, shape (n_pix, n_dist)
        Cumulative reddening (Bayestar19 units) at the distance-modulus edges.
    dm_reliable_min, dm_reliable_max : array_like, shape (n_pix,)
        Reliable distance-modulus range (NaN allowed).
    converged : array_like of bool, shape (n_pix,)
    dm_bin_edges : array_like, shape (n_dist,)
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    hp_idx = np.asarray(healpix_index, dtype=PIXEL_INFO_DTYPE["healpix_index"])
    n_pix = hp_idx.size
    nside = np.broadcast_to(np.asarray(nside, dtype=PIXEL_INFO_DTYPE["nside"]), (n_pix,))
    edges = np.asarray(dm_bin_edges, dtype=np.float32)
    samples = np.asarray(samples, dtype=np.float32)
    best_fit = np.asarray(best_fit, dtype=np.float32)
    if samples.ndim != 3 or samples.shape[0] != n_pix or samples.shape[2] != edges.size:
        raise ValueError(f"samples must have shape ({n_pix}, n_samples, {edges.size}); got {samples.shape}")
    if best_fit.shape != (n_pix, edges.size):
        raise ValueError(f"best_fit must have shape ({n_pix}, {edges.size}); got {best_fit.shape}")
    if np.any(hp_idx >= 12 * nside.astype(np.uint64) ** 2):
        raise ValueError("healpix_index holds pixels beyond their nside")
    info = np.zeros(n_pix, dtype=PIXEL_INFO_DTYPE)
    info["nside"] = nside
    info["healpix_index"] = hp_idx
    info["DM_reliable_min"] = dm_reliable_min
    info["DM_reliable_max"] = dm_reliable_max
    info["converged"] = np.asarray(converged).astype(PIXEL_INFO_DTYPE["converged"])
    with atomic_output(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset("pixel_info", data=info)
        d.attrs["DM_bin_edges"] = edges
        chunks = (max(1, min(n_pix, 1024)), samples.shape[1], edges.size)
        f.create_dataset("samples", data=samples, chunks=chunks, compression="gzip",
                         compression_opts=3, shuffle=True)
        f.create_dataset("best_fit", data=best_fit, chunks=(chunks[0], edges.size),
                         compression="gzip", compression_opts=3, shuffle=True)
    return path


def simulated_bayestar_pixels(nsides=(64, 128, 256), *, b_max_deg: float = 12.0,
                              min_dec_deg: float = -30.0, seed: int = 19):
    """Pixels of a Bayestar19-like footprint with several nsides, by simulated star density.

    Each pixel at the coarsest nside is split into the pixels of a finer nside where the
    simulated star density is higher: density ~ exp(-|b| / 8 deg) with log-normal scatter;
    the upper third of densities gets the finest nside, the middle third the next. Pixels
    are kept where their centre has dec > ``min_dec_deg`` and ``|b| < b_max_deg``.

    Returns
    -------
    (nside, healpix_index) : (numpy.ndarray, numpy.ndarray)
        Sorted by (nside, healpix_index), as dustmaps sorts them.
    """
    nsides = tuple(sorted(int(n) for n in nsides))
    base = nsides[0]
    rng = np.random.default_rng(seed)
    parents = np.arange(12 * base ** 2)
    pl, pb = hp.pix2ang(base, parents, nest=True, lonlat=True)
    margin = 2.0 * np.degrees(hp.nside2resol(base))
    parents = parents[np.abs(pb) < b_max_deg + margin]
    pb = pb[np.abs(pb) < b_max_deg + margin]
    density = np.exp(-np.abs(pb) / 8.0) * rng.lognormal(0.0, 0.5, parents.size)
    cuts = np.quantile(density, np.linspace(0, 1, len(nsides) + 1)[1:-1])
    level = np.searchsorted(cuts, density)
    out_n, out_p = [], []
    for k, n in enumerate(nsides):
        sel = parents[level == k]
        per = (n // base) ** 2
        children = (sel[:, None] * per + np.arange(per)).ravel()
        cl, cb = hp.pix2ang(n, children, nest=True, lonlat=True)
        dec = SkyCoord(cl * u.deg, cb * u.deg, frame="galactic").icrs.dec.deg
        keep = (dec > min_dec_deg) & (np.abs(cb) < b_max_deg)
        out_p.append(np.sort(children[keep]))
        out_n.append(np.full(keep.sum(), n))
    return np.concatenate(out_n).astype(np.int64), np.concatenate(out_p).astype(np.int64)


def write_simulated_bayestar19(path, *, nsides=(64, 128, 256), galaxy: SimulatedGalaxy | None = None,
                               n_samples: int = 4, b_max_deg: float = 12.0, ebv_per_unit: float = 0.884,
                               scatter: float = 0.3, seed: int = 2019,
                               overwrite: bool = False) -> Path:
    """Write a Bayestar19-format file of the simulated galaxy (see the module).

    Parameters
    ----------
    path : str or Path
        Output file.
    nsides : sequence of int
        The nsides of the pixels (powers of two), chosen per region by star density.
    galaxy : SimulatedGalaxy, optional
        Default :func:`dustmaps_ext_build.galaxy.default_galaxy`.
    n_samples : int
        Posterior samples per pixel.
    b_max_deg : float
        Keep pixels with |b| below this (the real map covers all latitudes).
    ebv_per_unit : float
        E(B-V) per Bayestar19 unit; values are E(B-V) divided by it.
    scatter : float
        Log-normal scatter of the samples' reddening increments.
    seed : int
        Seed of the pixels, samples and flags.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
    """
    galaxy = galaxy or default_galaxy()
    nside, pix = simulated_bayestar_pixels(nsides, b_max_deg=b_max_deg, seed=seed)
    rng = np.random.default_rng(seed + 1)
    n = pix.size
    l = np.empty(n)
    b = np.empty(n)
    for ns in np.unique(nside):
        sel = nside == ns
        l[sel], b[sel] = hp.pix2ang(int(ns), pix[sel], nest=True, lonlat=True)
    d = 10.0 ** (0.2 * DM_BIN_EDGES.astype(np.float64) - 2.0)
    truth = galaxy.cumulative_profile(l, b, d)
    steps = np.diff(truth, axis=1, prepend=0.0)
    noise = rng.lognormal(-0.5 * scatter ** 2, scatter, size=(n, n_samples, d.size))
    samples = np.cumsum(steps[:, None, :] * noise, axis=2) / ebv_per_unit
    dm_min = rng.uniform(6.0, 10.0, n).astype(np.float32)
    dm_max = rng.uniform(13.0, 17.0, n).astype(np.float32)
    dm_min[rng.random(n) < 0.03] = np.nan
    dm_max[rng.random(n) < 0.03] = np.nan
    return write_bayestar19(path, nside=nside, healpix_index=pix, samples=samples,
                            best_fit=truth / ebv_per_unit, dm_reliable_min=dm_min,
                            dm_reliable_max=dm_max, converged=rng.random(n) < 0.97,
                            overwrite=overwrite)
