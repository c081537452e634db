"""The checked functional core of voxel-map queries (DECaPS; Bayestar-style maps).

:func:`query_voxels` turns Galactic ``l, b`` (and optional distance) arrays into reddening
and flags for any store that follows the convention of :mod:`dustmaps_ext._io.layouts`
(slot 0 the mean, slots 1..n_samples the samples). Everything here works on plain arrays.

Results follow dustmaps 1.0.14 exactly for the deterministic modes:

================  ===========================  ====================================
mode              with distances               without distances
================  ===========================  ====================================
mean              (n,) float16                 (n, n_dist) float16
median            (n,) float16                 (n, n_dist) float16
samples           (n, n_samples) float16       (n, n_samples, n_dist) float16
random_sample     (n,) float16                 (n, n_dist) float16
random_sample_    (n,) float16, one sample     (n, n_dist) float16
per_pix           per map pixel
percentile        (n,) or (n, n_pct) float64   (n, n_dist) or (n, n_dist, n_pct) float64
================  ===========================  ====================================
"""

from __future__ import annotations

import numpy as np

from . import los
from .modes import (FLAGS_WITH_DISTANCE, FLAGS_WITHOUT_DISTANCE, as_generator, check_mode,
                    draw_key, parse_pct, per_pixel_draw)
from .pixels import lb_to_nested

__all__ = ["distance_modulus", "query_voxels"]


def distance_modulus(d_kpc: np.ndarray) -> np.ndarray:
    """Distance modulus ``5 (log10(d / kpc) + 2)``; NaN for NaN or negative distances.

    A distance of zero gives ``-inf`` (and so zero reddening); infinity gives ``+inf``
    (the last distance bin).
    """
    d = np.asarray(d_kpc, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        dm = 5.0 * (np.log10(d) + 2.0)
    dm[~(d >= 0)] = np.nan
    return dm


def query_voxels(store, l_deg: np.ndarray, b_deg: np.ndarray, d_kpc: np.ndarray | None, *,
                 mode: str, valid_modes, pct=None, return_flags: bool = False, rng=None):
    """Reddening of a voxel map at flat arrays of positions.

    Parameters
    ----------
    store : InMemoryStore, MappedStore or PublishedRowStore
        The map.
    l_deg, b_deg : numpy.ndarray, shape (n,)
        Galactic coordinates (deg).
    d_kpc : numpy.ndarray, shape (n,), or None
        Distances (kpc), or None for whole distance profiles.
    mode : str
        One of ``valid_modes``.
    valid_modes : sequence of str
        Modes this store can answer.
    pct : float or sequence of float, optional
        Percentile(s) for ``mode='percentile'``.
    return_flags : bool
        Also return a structured array of flags.
    rng : None, int or numpy.random.Generator
        Randomness of the random modes.

    Returns
    -------
    values : numpy.ndarray
        See the module's table of shapes.
    flags : numpy.ndarray, structured, shape (n,)
        Only with ``return_flags``.
    """
    check_mode(mode, valid_modes)
    pct, scalar_pct = parse_pct(mode, pct)
    n = l_deg.size
    index = store.pixels.index
    pix = lb_to_nested(index.nside_max, l_deg, b_deg)
    dm = None if d_kpc is None else distance_modulus(d_kpc)
    n_samples = store.n_samples
    rng = as_generator(rng) if mode.startswith("random") else None

    slot_first, n_slots = (0, 1) if mode == "mean" else (1, n_samples)
    per_coord = mode in ("random_sample", "random_sample_per_pix")
    slot_per_coord = 1 + rng.integers(0, n_samples, n) if mode == "random_sample" else None
    key = draw_key(rng) if mode == "random_sample_per_pix" else None
    n_out = 1 if per_coord else n_slots

    n_dist = store.info.n_dist
    edges = store.info.dm_bin_edges
    if dm is not None:
        raw = np.empty((n, n_out), dtype=np.float64)
    elif mode == "median":
        raw = np.empty((n, n_dist), dtype=np.float16)
    else:
        raw = np.empty((n, n_out, n_dist), dtype=np.float16)
    rows = np.empty(n, dtype=np.int64)
    pixel_flags = _empty_pixel_flags(n) if return_flags else None

    # A store with a chunk size answers the coordinates in order of pixel (so consecutive
    # coordinates touch neighbouring parts of a file) and releases what it read between chunks.
    step = store.chunk_coords or max(n, 1)
    order = np.argsort(pix, kind="stable") if step < n else None
    for a in range(0, n, step):
        sel = slice(a, min(a + step, n)) if order is None else order[a:a + step]
        r = index.rows_of_pixels(pix[sel])
        rows[sel] = r
        data, local = store.data_for(r, mode != "mean")
        if mode == "random_sample":
            per = slot_per_coord[sel]
        elif mode == "random_sample_per_pix":
            per = 1 + per_pixel_draw(r, n_samples, key)
        else:
            per = None
        if dm is not None:
            raw[sel] = los.values_at_distmod(data, local, np.ascontiguousarray(dm[sel]), edges,
                                             slot_first=slot_first, n_slots=n_slots,
                                             slot_per_coord=per)
        elif mode == "median":
            raw[sel] = los.median_of_profiles(data, local, slot_first, n_slots)
        else:
            raw[sel] = los.profiles(data, local, slot_first=slot_first, n_slots=n_slots,
                                    slot_per_coord=per)
        if return_flags:
            for name, values in store.pixels.flags(r).items():
                pixel_flags[name][sel] = values
        store.release()

    values = _reduce(raw, mode, pct, scalar_pct, dm is not None, rows, dm)
    if not return_flags:
        return values
    return values, _flags(pixel_flags, dm)


def _empty_pixel_flags(n: int) -> dict:
    return {"converged": np.empty(n, bool), "infilled": np.empty(n, bool),
            "dm_min": np.empty(n, np.float32), "dm_max": np.empty(n, np.float32)}


def _reduce(raw, mode, pct, scalar_pct, has_dist, rows, dm):
    if has_dist:
        if mode == "median":
            return los.median_of_values(raw).astype(np.float16)
        if mode == "samples":
            return raw.astype(np.float16)
        if mode == "percentile":
            return _percentile(raw.astype(np.float16), pct, scalar_pct, (rows >= 0) & ~np.isnan(dm))
        return raw[:, 0].astype(np.float16)
    if mode == "median" or mode == "samples":
        return raw
    if mode == "percentile":
        return _percentile(raw, pct, scalar_pct, rows >= 0)
    return raw[:, 0, :]


def _percentile(samples_f16, pct, scalar_pct, inside):
    """numpy's nanpercentile over the samples axis (axis 1), percentiles last; NaN outside.

    Only coordinates inside the map are passed to numpy, so no all-NaN warnings arise.
    """
    values = samples_f16[inside]
    # np.nanpercentile loops in Python over every slice of a >1D array; without NaNs,
    # np.percentile computes the very same numbers vectorised
    pick = np.nanpercentile if np.isnan(values).any() else np.percentile
    res = pick(values, pct, axis=1)
    if not scalar_pct:
        res = np.moveaxis(res, 0, -1)
    out = np.full(samples_f16.shape[:1] + res.shape[1:], np.nan, dtype=res.dtype)
    out[inside] = res
    return out


def _flags(pix, dm):
    if dm is not None:
        flags = np.empty(dm.size, dtype=FLAGS_WITH_DISTANCE)
        dm_min, dm_max = pix["dm_min"], pix["dm_max"]
        flags["reliable_dist"] = ((dm >= dm_min) & (dm <= dm_max)
                                  & np.isfinite(dm_min) & np.isfinite(dm_max))
    else:
        flags = np.empty(pix["dm_min"].size, dtype=FLAGS_WITHOUT_DISTANCE)
        flags["min_reliable_distmod"] = pix["dm_min"]
        flags["max_reliable_distmod"] = pix["dm_max"]
    flags["converged"] = pix["converged"]
    flags["infilled"] = pix["infilled"]
    return flags
