"""The checked functional core of voxel-map queries (DECaPS; Bayestar19).

:func:`query_voxels` turns Galactic ``l, b`` (and optional distance) arrays into reddening
and flags for any store that implements :class:`VoxelStore` (slot 0 the mean or best fit,
slots 1..n_samples the samples; the stores of :mod:`dustmaps_ext._io.decaps` and
:mod:`dustmaps_ext._io.bayestar19` subclass it). Everything here works on plain arrays.

Besides its data, a store declares (class attributes with defaults in :class:`VoxelStore`)

* ``value_dtype``: the type of its values, ``float16`` (default; stored as uint16 bit
  patterns) or ``float32`` (Bayestar19); answers come in that type;
* ``slot0``: ``'mean'`` (default: slot 0 holds the mean map, DECaPS) or ``'best'``
  (slot 0 holds the best fit, Bayestar19: mode ``'best'`` reads it and mode ``'mean'`` is
  numpy's mean over the samples of the interpolated values, as dustmaps computes it);
* ``flag_dtypes``: the flag layouts (with, without distances); default DECaPS';
* ``chunk_coords``: coordinates answered between two :meth:`~VoxelStore.release` calls
  (None: any number at once, for a map in RAM);
* ``decodes_prefix``: True for a store whose ``data_for`` takes ``upto`` (the number of
  leading distances each row needs) and then decodes only those (a compressed store); the
  core passes it for queries with distances;
* ``parallel_min_coords``: queries of at least this many coordinates run on the package's
  threads (None: :data:`PARALLEL_MIN_COORDS`); a store whose chunks cost more than a
  lookup (decoding) sets a lower one.

Results follow dustmaps 1.0.14 exactly for the deterministic modes (float16 DECaPS shown;
a float32 store answers float32 where this table says float16):

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

from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from . import los, threads
from .modes import (FLAGS_WITH_DISTANCE, FLAGS_WITHOUT_DISTANCE, as_generator, check_mode,
                    draw_key, parse_pct, per_pixel_draw)
from .params import check_bool
from .pixels import PixelIndex, lb_to_nested, stable_order

__all__ = ["VoxelStoreInfo", "PixelTable", "VoxelStore", "distance_modulus", "distances_needed",
           "query_voxels", "flag_fields"]


@runtime_checkable
class VoxelStoreInfo(Protocol):
    """What the core needs to know of a map file: its distance-modulus edges."""

    dm_bin_edges: np.ndarray

    @property
    def n_dist(self) -> int:
        """Number of distance-modulus edges."""


@runtime_checkable
class PixelTable(Protocol):
    """The per-pixel part of a map: the pixel index and the flags of rows."""

    index: PixelIndex

    def flags(self, rows: np.ndarray) -> dict:
        """``converged``, ``infilled`` (bool) and ``dm_min``, ``dm_max`` (float32) of each
        row; rows of -1 give False and NaN."""


@runtime_checkable
class VoxelStore(Protocol):
    """The interface of a voxel map's store, as :func:`query_voxels` uses it.

    Stores subclass this class explicitly, inheriting the defaults of the class attributes.
    """

    info: VoxelStoreInfo
    pixels: PixelTable
    n_samples: int
    chunk_coords: int | None = None
    value_dtype: ClassVar[np.dtype] = np.dtype(np.float16)
    slot0: ClassVar[str] = "mean"
    flag_dtypes: ClassVar[tuple[np.dtype, np.dtype]] = (FLAGS_WITH_DISTANCE,
                                                         FLAGS_WITHOUT_DISTANCE)
    decodes_prefix: ClassVar[bool] = False
    parallel_min_coords: ClassVar[int | None] = None

    def data_for(self, rows: np.ndarray, want_samples: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(data, local_rows)``: an array ``(rows', n_slots, n_dist)`` holding the asked
        rows (uint16 float16 bit patterns, or float32) and each query row's place in it."""

    def release(self) -> None:
        """Free what answering the last chunk of coordinates touched."""


def distances_needed(dm: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """How many leading distance edges interpolating at each ``dm`` reads (0 for NaN).

    :func:`~dustmaps_ext._core.los.values_at_distmod` reads edges ``k - 1`` and ``k``, where
    ``k`` is the first edge ``>= dm`` (edge 0 below the first, the last beyond it).
    """
    edges = np.asarray(edges, dtype=np.float64)
    k = np.searchsorted(edges, dm, side="left")
    needed = np.minimum(k, edges.size - 1) + 1
    needed[np.isnan(dm)] = 0
    return needed


#: Queries smaller than this stay on the calling thread; larger ones use the package's
#: threads (:mod:`dustmaps_ext._core.threads`; the kernels release the GIL).
PARALLEL_MIN_COORDS = 65536


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
                 mode: str, valid_modes, pct=None, return_flags: bool = False, rng=None,
                 rows: np.ndarray | None = None):
    """Reddening of a voxel map at flat arrays of positions.

    Parameters
    ----------
    store : VoxelStore
        The map.
    l_deg, b_deg : numpy.ndarray, shape (n,), or None
        Galactic coordinates (deg); may be None when ``rows`` is given.
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
    rows : numpy.ndarray of int64, shape (n,), optional
        The map rows of the positions, when the caller has already looked them up
        (``store.pixels.index.rows(l_deg, b_deg)``); ``l_deg`` and ``b_deg`` are then
        not used.

    Returns
    -------
    values : numpy.ndarray
        See the module's table of shapes.
    flags : numpy.ndarray, structured, shape (n,)
        Only with ``return_flags``.
    """
    check_mode(mode, valid_modes)
    return_flags = check_bool(return_flags, "return_flags")
    pct, scalar_pct = parse_pct(mode, pct)
    index = store.pixels.index
    lookup = rows is None
    ordered = store.chunk_coords is not None  # chunks in pixel order (memory maps, files)
    if lookup:
        l_deg = np.asarray(l_deg, dtype=np.float64)
        b_deg = np.asarray(b_deg, dtype=np.float64)
        n = l_deg.size
        shape_ok = l_deg.shape == b_deg.shape == (n,)
        # the pixels are needed up front only to order the chunks; otherwise each chunk
        # (on its own thread) finds its own
        keys = lb_to_nested(index.nside_max, l_deg, b_deg) if ordered else None
    else:
        keys = np.asarray(rows, dtype=np.int64)
        n = keys.size
        shape_ok = keys.ndim == 1
    if not shape_ok or (d_kpc is not None and np.shape(d_kpc) != (n,)):
        raise ValueError(f"l, b (or rows) and d_kpc must be 1D arrays of one length; got "
                         f"{np.shape(l_deg if lookup else rows)}, {np.shape(d_kpc)}")
    if d_kpc is not None:
        d_kpc = np.asarray(d_kpc, dtype=np.float64)
    dm = None if d_kpc is None else np.empty(n, dtype=np.float64)
    n_samples = store.n_samples
    value_dtype = np.dtype(store.value_dtype)
    slot0 = store.slot0
    if mode == "best" and slot0 != "best":
        raise ValueError("mode 'best' needs a map whose slot 0 is a best fit")
    computed_mean = mode == "mean" and slot0 != "mean"
    rng = as_generator(rng) if mode.startswith("random") else None

    slot_first, n_slots = 1, n_samples
    if (mode == "mean" and not computed_mean) or mode == "best":
        slot_first, n_slots = 0, 1
    per_coord = mode in ("random_sample", "random_sample_per_pix")
    slot_per_coord = 1 + rng.integers(0, n_samples, n) if mode == "random_sample" else None
    key = draw_key(rng) if mode == "random_sample_per_pix" else None
    want_samples = slot_first != 0
    n_out = 1 if (per_coord or slot_first == 0) else n_slots

    n_dist = store.info.n_dist
    edges = store.info.dm_bin_edges
    if dm is not None:
        raw = np.empty((n, n_out), dtype=np.float64)
    elif mode == "median":
        raw = np.empty((n, n_dist), dtype=value_dtype)
    else:
        raw = np.empty((n, n_out, n_dist), dtype=value_dtype)
    all_rows = np.empty(n, dtype=np.int64)
    pixel_flags = _empty_pixel_flags(n) if return_flags else None

    def answer(sel):
        if not lookup:
            r = keys[sel]
        elif keys is not None:
            r = index.rows_of_pixels(keys[sel])
        else:
            r = index.rows(l_deg[sel], b_deg[sel])
        all_rows[sel] = r
        if dm is not None:
            dm[sel] = distance_modulus(d_kpc[sel])
        if dm is not None and store.decodes_prefix:
            data, local = store.data_for(r, want_samples, upto=distances_needed(dm[sel], edges))
        else:
            data, local = store.data_for(r, want_samples)
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

    parallel_min = store.parallel_min_coords
    _run_in_chunks(answer, n, store.chunk_coords, keys,
                   PARALLEL_MIN_COORDS if parallel_min is None else parallel_min)

    values = _reduce(raw, mode, pct, scalar_pct, dm is not None, all_rows, dm, value_dtype,
                     computed_mean)
    if not return_flags:
        return values
    return values, _flags(store, pixel_flags, dm)


def _run_in_chunks(answer, n: int, chunk_coords: int | None, keys: np.ndarray | None,
                   parallel_min: int) -> None:
    """Call ``answer(sel)`` on chunks of the n coordinates, on the package's threads
    (:func:`dustmaps_ext._core.threads.run_tasks`) from ``parallel_min`` coordinates on.

    A store with a chunk size (a memory map or a file) is answered in order of ``keys``
    (pixels or rows), so consecutive coordinates touch neighbouring parts of the file, and
    releases what it read after each chunk; on threads, in chunks of equal size (at most
    ``chunk_coords``), a multiple of the threads in number. A store in RAM is answered in
    contiguous parts, one per thread. The kernels release the GIL and every chunk writes
    its own entries, so the threads share nothing but the read-only map.
    """
    parallel = n >= parallel_min
    workers = threads.max_threads() if parallel else 1
    if chunk_coords:
        n_chunks = -(-n // chunk_coords)
        n_chunks = -(-n_chunks // workers) * workers
        step = max(1, -(-n // n_chunks)) if n else 1
        order = None
        if step < n and np.any(keys[1:] < keys[:-1]):  # the caller may have sorted
            order = stable_order(keys)
    else:
        order = None
        step = -(-n // workers) if n else 1
    chunks = [slice(a, min(a + step, n)) if order is None else order[a:a + step]
              for a in range(0, n, step)]
    threads.run_tasks(answer, chunks, parallel=parallel)


def _empty_pixel_flags(n: int) -> dict:
    return {"converged": np.zeros(n, bool), "infilled": np.zeros(n, bool),
            "dm_min": np.empty(n, np.float32), "dm_max": np.empty(n, np.float32)}


def _reduce(raw, mode, pct, scalar_pct, has_dist, rows, dm, value_dtype, computed_mean):
    if has_dist:
        if mode == "median":
            return los.median_of_values(raw, value_dtype).astype(value_dtype)
        if mode == "samples":
            return raw.astype(value_dtype)
        if computed_mean:
            # numpy's mean of the stored-type samples, reduced in the order dustmaps' is
            return raw.astype(value_dtype).mean(axis=1)
        if mode == "percentile":
            return _percentile(raw.astype(value_dtype), pct, scalar_pct, (rows >= 0) & ~np.isnan(dm))
        return raw[:, 0].astype(value_dtype)
    if mode == "median" or mode == "samples":
        return raw
    if computed_mean:
        return raw.mean(axis=1)
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


def flag_fields(pix: dict, dm: np.ndarray | None) -> dict:
    """Flag fields, by dustmaps' names, from per-coordinate pixel flags.

    Parameters
    ----------
    pix : dict
        ``converged``, ``infilled`` (bool) and ``dm_min``, ``dm_max`` (float32) per
        coordinate, as a store's ``pixels.flags(rows)`` gives them.
    dm : numpy.ndarray or None
        Distance modulus per coordinate, or None for whole profiles.

    Returns
    -------
    dict
        ``converged``, ``infilled`` and, with distances, ``reliable_dist`` (the distance
        lies in a finite reliable range); without, ``min_reliable_distmod`` and
        ``max_reliable_distmod``.
    """
    if dm is not None:
        dm_min, dm_max = pix["dm_min"], pix["dm_max"]
        fields = {"reliable_dist": ((dm >= dm_min) & (dm <= dm_max)
                                    & np.isfinite(dm_min) & np.isfinite(dm_max))}
    else:
        fields = {"min_reliable_distmod": pix["dm_min"], "max_reliable_distmod": pix["dm_max"]}
    fields["converged"] = pix["converged"]
    fields["infilled"] = pix["infilled"]
    return fields


def _flags(store, pix, dm):
    with_d, without_d = store.flag_dtypes
    dtype = with_d if dm is not None else without_d
    fields = flag_fields(pix, dm)
    flags = np.empty(pix["dm_min"].size, dtype=dtype)
    for name in dtype.names:
        flags[name] = fields[name]
    return flags
