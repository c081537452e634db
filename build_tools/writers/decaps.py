"""Write a DECaPS 3D dust map file in the published layout (Zucker et al. 2025 release).

The layout (Zucker et al. 2025, §7; Dataverse doi:10.7910/DVN/J9JCKO) is what
``dustmaps.decaps`` reads:

* group ``pixel_info`` with attributes ``nside``, ``DM_bin_edges`` (float32) and
  ``n_samples``, and datasets ``healpix_index`` (uint64, NESTED, sorted ascending),
  ``DM_reliable_min`` / ``DM_reliable_max`` (float32, NaN allowed), ``converged`` and
  ``infilled`` (uint8, 0/1); a build also writes ``n_stars`` (uint32, the stars that
  informed each pixel) and ``no_reliable_range`` (uint8, 0/1: the pixel's stars are too few
  for any reliable distance range), which are not in the published files and which
  readers ignore;
* ``mean`` with shape (n_pix, 1, n_dist) and, unless mean-only, ``samples`` with shape
  (n_pix, n_samples, n_dist), both float16 E(B-V) in mag, chunked as published: each chunk
  holds up to 200,842 pixels of one (sample, distance) pair, deflate level 3 with shuffle.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from dustmaps_ext.files import atomic_output
from dustmaps_ext.formats import decaps as decaps_format
from dustmaps_ext.healpix import check_nside

__all__ = ["PUBLISHED_CHUNK_PIXELS", "DM_BIN_EDGES", "create_decaps_release", "write_decaps_release"]

#: Pixels per HDF5 chunk in the published files (the format's fact).
PUBLISHED_CHUNK_PIXELS = decaps_format.PUBLISHED_CHUNK_PIXELS

#: The 120 distance-modulus edges of the release (4.0 to 18.875 in steps of 0.125).
DM_BIN_EDGES = decaps_format.DM_BIN_EDGES


def create_decaps_release(path: str | Path, *, nside: int, healpix_index, dm_reliable_min,
                          dm_reliable_max, converged, infilled, n_samples: int,
                          dm_bin_edges=DM_BIN_EDGES, chunk_pixels: int = PUBLISHED_CHUNK_PIXELS,
                          compression_level: int = 3, overwrite: bool = False,
                          n_stars=None, no_reliable_range=None) -> h5py.File:
    """Create a published-layout file with its pixel information and empty value datasets.

    The caller fills ``f['mean']`` (and ``f['samples']`` unless ``n_samples`` is 0) and
    closes the returned file; writing whole chunk rows (multiples of ``chunk_pixels``
    pixels) at a time compresses each chunk once. Parameters are those of
    :func:`write_decaps_release`.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    nside = check_nside(nside)
    dtypes = decaps_format.PIXEL_DTYPES
    hp_idx = np.asarray(healpix_index, dtype=dtypes["healpix_index"])
    n_pix = hp_idx.size
    if n_pix and np.any(np.diff(hp_idx.astype(np.int64)) <= 0):
        raise ValueError("healpix_index must be strictly increasing")
    if n_pix and int(hp_idx[-1]) >= 12 * nside ** 2:
        raise ValueError(f"healpix_index holds pixels beyond nside={nside}")
    edges = np.asarray(dm_bin_edges, dtype=np.float32)
    per_pixel = {"DM_reliable_min": np.asarray(dm_reliable_min, dtype=dtypes["DM_reliable_min"]),
                 "DM_reliable_max": np.asarray(dm_reliable_max, dtype=dtypes["DM_reliable_max"]),
                 "converged": np.asarray(converged).astype(dtypes["converged"]),
                 "infilled": np.asarray(infilled).astype(dtypes["infilled"])}
    if n_stars is not None:
        n_stars = np.asarray(n_stars)
        if n_stars.size and (np.any(n_stars < 0) or n_stars.max() > np.iinfo(np.uint32).max):
            raise ValueError("n_stars must be non-negative integers below 2**32")
        per_pixel["n_stars"] = n_stars.astype(np.uint32)
    if no_reliable_range is not None:
        per_pixel["no_reliable_range"] = np.asarray(no_reliable_range).astype(np.uint8)
    for name, arr in per_pixel.items():
        if arr.shape != (n_pix,):
            raise ValueError(f"{name} must have shape ({n_pix},); got {arr.shape}")
    chunk_rows = max(1, min(int(chunk_pixels), n_pix))
    f = h5py.File(path, "w")
    try:
        info = f.create_group("pixel_info")
        info.attrs["nside"] = np.int64(nside)
        info.attrs["DM_bin_edges"] = edges
        info.attrs["n_samples"] = np.int64(n_samples)
        info.create_dataset("healpix_index", data=hp_idx)
        for name, arr in per_pixel.items():
            info.create_dataset(name, data=arr)
        for name, n_slots in (("mean", 1), ("samples", n_samples)):
            if n_slots:
                f.create_dataset(name, shape=(n_pix, n_slots, edges.size),
                                 dtype=decaps_format.VALUE_DTYPE,
                                 chunks=(chunk_rows, 1, 1), compression="gzip",
                                 compression_opts=compression_level, shuffle=True)
    except BaseException:
        f.close()
        raise
    return f


def write_decaps_release(path: str | Path, *, nside: int, healpix_index, mean, samples=None,
                         dm_reliable_min, dm_reliable_max, converged, infilled,
                         dm_bin_edges=DM_BIN_EDGES, chunk_pixels: int = PUBLISHED_CHUNK_PIXELS,
                         compression_level: int = 3, overwrite: bool = False,
                         n_stars=None, no_reliable_range=None) -> Path:
    """Write arrays to an HDF5 file in the published DECaPS layout.

    Parameters
    ----------
    path : str or Path
        Output file.
    nside : int
        HEALPix nside of ``healpix_index`` (8192 for the real map).
    healpix_index : array_like of int, shape (n_pix,)
        NESTED pixel indices, strictly increasing.
    mean : array_like, shape (n_pix, n_dist) or (n_pix, 1, n_dist)
        Mean cumulative E(B-V) (mag) at each distance-modulus edge.
    samples : array_like, shape (n_pix, n_samples, n_dist), optional
        Posterior samples; omit for a mean-only file (like ``decaps_mean.h5``).
    dm_reliable_min, dm_reliable_max : array_like, shape (n_pix,)
        Reliable distance-modulus range per pixel (NaN allowed).
    converged, infilled : array_like of bool, shape (n_pix,)
        Per-pixel flags.
    dm_bin_edges : array_like, shape (n_dist,)
        Distance-modulus edges.
    chunk_pixels : int
        Pixels per chunk (the release uses 200,842); capped at n_pix.
    compression_level : int
        Deflate level (the release uses 3).
    overwrite : bool
        Replace an existing file.
    n_stars : array_like of int, shape (n_pix,), optional
        Stars that informed each pixel, written as ``pixel_info/n_stars`` (uint32). Not part
        of the published files; dustmaps and this package's readers ignore it.
    no_reliable_range : array_like of bool, shape (n_pix,), optional
        Pixels whose stars are too few for any reliable distance range (Zucker et al. 2025,
        Appendix B: ``dm_reliable_min``/``dm_reliable_max`` NaN or empty), written as
        ``pixel_info/no_reliable_range`` (uint8). Not part of the published files; readers
        ignore it.

    Returns
    -------
    Path
        The path written.
    """
    n_pix = np.size(healpix_index)
    n_dist = np.size(dm_bin_edges)
    mean = np.asarray(mean, dtype=decaps_format.VALUE_DTYPE)
    if mean.ndim == 2:
        mean = mean[:, None, :]
    if mean.shape != (n_pix, 1, n_dist):
        raise ValueError(f"mean must have shape ({n_pix}, 1, {n_dist}); got {mean.shape}")
    if samples is not None:
        samples = np.asarray(samples, dtype=decaps_format.VALUE_DTYPE)
        if samples.ndim != 3 or samples.shape[0] != n_pix or samples.shape[2] != n_dist:
            raise ValueError(f"samples must have shape ({n_pix}, n_samples, {n_dist}); "
                             f"got {samples.shape}")
    n_samples = 0 if samples is None else samples.shape[1]
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    with atomic_output(path, suffix=".h5") as tmp, create_decaps_release(
            tmp, nside=nside, healpix_index=healpix_index, dm_reliable_min=dm_reliable_min,
            dm_reliable_max=dm_reliable_max, converged=converged, infilled=infilled,
            n_samples=n_samples, dm_bin_edges=dm_bin_edges, chunk_pixels=chunk_pixels,
            compression_level=compression_level, overwrite=True, n_stars=n_stars,
            no_reliable_range=no_reliable_range) as f:
        f["mean"][...] = mean
        if samples is not None:
            f["samples"][...] = samples
    return path
