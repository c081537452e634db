"""Build inputs from the per-star posteriors a user has: dense images or (mu, E) samples.

The build works on the grid of the released map: 120 distance-modulus cells by 700 reddening
cells. **Grid convention**: cell ``(i, j)`` is the *point* ``mu_i = 4 + 0.125 i`` (the map's
``DM_bin_edges``, where its cumulative reddening is given) and ``E_j = 0.01 j`` mag. A
posterior sample (mu, E) goes to the cell of the nearest point (cell ``i`` collects
``mu_i - 0.0625 <= mu < mu_i + 0.0625``).

Images binned the other way -- cell ``i`` the *bin* ``[4 + 0.125 i, 4 + 0.125 (i + 1))``, as
``numpy.histogram2d`` with edges ``4 + 0.125 k`` (brutus' ``bin_pdfs_distred`` with a
``span`` of (4, 19) and 120 distance bins) gives -- are half a cell off that convention;
:func:`posteriors_from_images` with ``grid="bins"`` moves them onto the points (the value at
``mu_i`` is the mean of the bins that meet there, the same half-cell shift in reddening).

* :func:`posteriors_from_images` -- an ``(n, 120, 700)`` array or an HDF5 dataset of that
  shape (read in chunks of stars).
* :func:`posteriors_from_samples` -- ``(n, n_samples)`` arrays of distance-modulus and
  E(B-V) samples.

Both check their inputs before any work (finite sky positions, finite non-negative
posteriors, a non-empty posterior on the grid for every star) and return a
:class:`.inputs.StarPosteriors`; save it with :meth:`~.inputs.StarPosteriors.save` and pass
the file to ``build-decaps``.
"""

from __future__ import annotations

import numpy as np

from .inputs import N_DM, N_E, StarPosteriors, bin_samples, boxes_from_dense

__all__ = ["GRID_CONVENTIONS", "posteriors_from_images", "posteriors_from_samples"]

#: Accepted meanings of an image cell: the grid point (the build's) or the bin starting there.
GRID_CONVENTIONS = ("points", "bins")


def _check_positions(l_deg, b_deg, n: int) -> tuple[np.ndarray, np.ndarray]:
    l_deg = np.asarray(l_deg, np.float64).ravel()
    b_deg = np.asarray(b_deg, np.float64).ravel()
    if l_deg.shape != (n,) or b_deg.shape != (n,):
        raise ValueError(f"l and b must hold one value per star ({n})")
    bad = ~(np.isfinite(l_deg) & np.isfinite(b_deg))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} stars have a NaN or infinite l or b (first: star "
                         f"{int(np.flatnonzero(bad)[0])})")
    return l_deg, b_deg


def _bins_to_points(images: np.ndarray) -> np.ndarray:
    """Half-cell shift of bin-convention images onto the grid points (both axes)."""
    out = images.copy()
    out[:, 1:, :] += images[:, :-1, :]
    out[:, 1:, :] *= 0.5
    shifted = out.copy()
    shifted[:, :, 1:] += out[:, :, :-1]
    shifted[:, :, 1:] *= 0.5
    return shifted


def posteriors_from_images(images, l_deg, b_deg, *, grid: str = "points",
                           threshold: float = 1e-4, chunk_stars: int = 256,
                           **metadata) -> StarPosteriors:
    """Per-star posterior images -> the build's input.

    Parameters
    ----------
    images : array_like or h5py.Dataset, shape (n_star, 120, 700)
        Each star's (distance modulus, E(B-V)) posterior on the grid (any normalisation;
        each is scaled to unit sum). An HDF5 dataset is read ``chunk_stars`` stars at a
        time, so the whole stack never sits in memory.
    l_deg, b_deg : array_like, shape (n_star,)
        Galactic coordinates (deg).
    grid : {"points", "bins"}
        What an image cell is: the point ``mu = 4 + 0.125 i`` (the build's convention) or
        the bin starting there (shifted half a cell onto the points).
    threshold : float
        Cells below this fraction of a star's peak are dropped (bounding boxes).
    chunk_stars : int
        Stars converted at a time.
    **metadata
        Optional per-star arrays of :class:`.inputs.StarPosteriors` (``chi2_best``,
        ``n_bands``, ``m_init_median``, ``dist_p2_5_kpc``, ``parallax_mas``,
        ``parallax_err_mas``).

    Returns
    -------
    StarPosteriors

    Raises
    ------
    ValueError
        A wrong shape, an unknown ``grid``, NaN or negative values (the first bad star is
        named) or an all-zero image.
    """
    if grid not in GRID_CONVENTIONS:
        raise ValueError(f"grid must be one of {GRID_CONVENTIONS}, not {grid!r}")
    shape = tuple(images.shape)
    if len(shape) != 3 or shape[1:] != (N_DM, N_E):
        raise ValueError(f"images must have shape (n_star, {N_DM}, {N_E}); got {shape}")
    n = shape[0]
    l_deg, b_deg = _check_positions(l_deg, b_deg, n)
    parts = []
    for a in range(0, n, max(1, int(chunk_stars))):
        block = np.asarray(images[a:a + chunk_stars], np.float32)
        finite = np.isfinite(block).all(axis=(1, 2))
        if not finite.all():
            raise ValueError(f"star {a + int(np.flatnonzero(~finite)[0])}: the image holds NaN "
                             "or infinite values")
        if block.min() < 0:
            k = a + int(np.flatnonzero((block < 0).any(axis=(1, 2)))[0])
            raise ValueError(f"star {k}: the image holds negative values")
        if grid == "bins":
            block = _bins_to_points(block)
        parts.append(_normalised_boxes(block, a, threshold, "the image is all zero"))
    return _assemble(parts, l_deg, b_deg, metadata)


def posteriors_from_samples(mu_samples, ebv_samples, l_deg, b_deg, *, threshold: float = 0.0,
                            chunk_stars: int = 256, **metadata) -> StarPosteriors:
    """Per-star (distance modulus, E(B-V)) samples -> the build's input.

    Each star's samples are binned to the nearest grid point (:func:`.inputs.bin_samples`);
    samples off the grid or NaN are dropped, and a star with none left is an error.

    Parameters
    ----------
    mu_samples, ebv_samples : array_like, shape (n_star, n_samples)
        Samples of each star (mag).
    l_deg, b_deg : array_like, shape (n_star,)
        Galactic coordinates (deg).
    threshold : float
        Cells below this fraction of a star's peak are dropped (0 keeps every sample).
    chunk_stars : int
        Stars binned at a time.
    **metadata
        Optional per-star arrays, as for :func:`posteriors_from_images`.

    Returns
    -------
    StarPosteriors
    """
    mu = np.asarray(mu_samples, np.float64)
    e = np.asarray(ebv_samples, np.float64)
    if mu.shape != e.shape or mu.ndim != 2:
        raise ValueError("mu_samples and ebv_samples must share a shape (n_star, n_samples)")
    n = mu.shape[0]
    l_deg, b_deg = _check_positions(l_deg, b_deg, n)
    parts = []
    for a in range(0, n, max(1, int(chunk_stars))):
        dense = bin_samples(mu[a:a + chunk_stars], e[a:a + chunk_stars])
        parts.append(_normalised_boxes(dense, a, threshold, "no finite sample on the grid "
                                       "(4 <= mu < 18.9375, 0 <= E < 6.995)"))
    return _assemble(parts, l_deg, b_deg, metadata)


def _normalised_boxes(dense: np.ndarray, first: int, threshold: float, empty: str):
    """Scale each dense image to unit sum (in place) and cut its bounding box; ``first`` is
    the index of the chunk's first star, ``empty`` what an all-zero image means."""
    tot = dense.sum(axis=(1, 2), dtype=np.float64)
    if np.any(tot <= 0):
        raise ValueError(f"star {first + int(np.flatnonzero(tot <= 0)[0])}: {empty}")
    dense /= tot[:, None, None].astype(np.float32)
    return boxes_from_dense(dense, threshold)


def _assemble(parts, l_deg, b_deg, metadata) -> StarPosteriors:
    if not parts:
        return StarPosteriors(l_deg, b_deg, *[np.zeros(0, np.int32)] * 4,
                              np.zeros(0, np.int64), np.zeros(0, np.float32), **metadata)
    x0, nx, y0, ny = (np.concatenate([p[i] for p in parts]) for i in range(4))
    shift = np.cumsum([0] + [p[5].size for p in parts[:-1]])
    offsets = np.concatenate([p[4] + s for p, s in zip(parts, shift)])
    data = np.concatenate([p[5] for p in parts])
    return StarPosteriors(l_deg, b_deg, x0, nx, y0, ny, offsets, data, **metadata)
