"""The parametric line-of-sight model of Wang et al. (2025) on plain arrays.

Each sightline holds a local bubble, a diffuse exponential disk and up to four clouds
(Wang et al. 2025, §3.2, in the form dustmaps3d 2.2.13 evaluates). The model is evaluated
in two steps:

1. :func:`derive_constants` turns the released table columns into per-sightline constants
   (the projected scale height, the diffuse column, the bubble step, each cloud's centre,
   normalisation and offset). It runs once, when the table is converted, with numpy in the
   precision of the stored table, the way dustmaps3d derives them, so that the released
   numbers are reproduced even where they are ill-conditioned (a cloud centre rounded to
   float32 shifts a 1e-4 kpc wide cloud by a visible fraction of its width; near
   ``b_lim = 0`` the bubble column ``C0`` is a small difference of large numbers).
2. The numba kernels below evaluate the distance-dependent part in float64 for each point:
   E(B-V), the density dE/dx, the uncertainty ``sigma`` and the components of the paper's §5.

Kernels take two 2D record arrays (one row per nside-1024 RING pixel): ``rec`` with the
columns of :data:`EBV_FIELDS` (all that E(B-V) and the density need) and ``aux`` with those
of :data:`AUX_FIELDS`; the row of each point (``-1`` for no sightline) and its distance in
kpc. They never raise: invalid input gives NaN.

The model's arithmetic is written once, in the scalar kernels ``_diffuse_constants``,
``_cloud_constants`` (whose Python bodies also derive the table's constants in numpy),
``_diffuse_terms``, ``_cloud_terms`` and ``_cloud_density_term``; the record kernels here
and the build pipeline's fit (:mod:`dustmaps_ext_build.parametric.model`) both call them.
"""

from __future__ import annotations

import math
import threading
from typing import Mapping

import numba
import numpy as np

from .threads import PARALLEL_MIN_POINTS, max_threads, parallel_slot, run_tasks

__all__ = [
    "TABLE_COLUMNS", "CLOUD_COLUMNS", "DERIVED_FIELDS", "EBV_FIELDS", "AUX_FIELDS",
    "RECORD_FIELDS", "record_column", "N_CLOUDS", "CLOUD_MIN_COLUMN",
    "BUBBLE_EDGE_WIDTH", "COMPONENT_FIELDS", "derive_constants", "record_dtype",
    "build_records", "evaluate", "cloud_profiles", "parallel_slot",
]

#: Number of cloud components per sightline.
N_CLOUDS = 4
#: A component counts as a cloud when its column is at least this (mag), as in the paper.
CLOUD_MIN_COLUMN = 0.001
#: Width (kpc) of the smooth step at the bubble edge.
BUBBLE_EDGE_WIDTH = 0.01

#: Columns of the released table holding the clouds' parameters, cloud by cloud.
CLOUD_COLUMNS = tuple(f"{name}_{k}" for k in range(1, N_CLOUDS + 1)
                      for name in ("distance", "span", "Cum_EBV"))

#: Columns of the released table (``data_v3.fits``), in release order.
TABLE_COLUMNS = (
    "b_lim", "bubble", "diffuse_dust_rho", "h", *CLOUD_COLUMNS,
    "sigma", "sigma_0_2", "sigma_1_4", "sigma_2_max", "max_distance",
)

#: Per-sightline constants derived from the table (see :func:`derive_constants`).
DERIVED_FIELDS = (
    "span_0", "total_0", "c_0", "step_0", "offset_0",
    *(f"{name}_{k}" for k in range(1, N_CLOUDS + 1)
      for name in ("centre", "norm", "offset", "rate")),
)

#: Record columns read to evaluate E(B-V) and the density: a 96-byte float32 record per
#: row, so that the common query touches two cache lines per point.
EBV_FIELDS = (
    "bubble", "span_0", "total_0", "c_0", "step_0", "offset_0", "diffuse_dust_rho",
    "max_distance",
    *(f"{name}_{k}" for k in range(1, N_CLOUDS + 1)
      for name in ("centre", "span", "norm", "offset")),
)
#: The other record columns (cloud rates and columns, sigmas, the other table columns).
AUX_FIELDS = (
    *(f"rate_{k}" for k in range(1, N_CLOUDS + 1)),
    *(f"Cum_EBV_{k}" for k in range(1, N_CLOUDS + 1)),
    "sigma", "sigma_0_2", "sigma_1_4", "sigma_2_max", "b_lim", "h",
    *(f"distance_{k}" for k in range(1, N_CLOUDS + 1)),
)
#: Every record column: the table's columns and the derived constants.
RECORD_FIELDS = EBV_FIELDS + AUX_FIELDS
assert sorted(RECORD_FIELDS) == sorted(TABLE_COLUMNS + DERIVED_FIELDS)

_E = {name: i for i, name in enumerate(EBV_FIELDS)}
_A = {name: i for i, name in enumerate(AUX_FIELDS)}
# Field indices as module constants: numba freezes them into the kernels.
_BUBBLE = _E["bubble"]
_RHO = _E["diffuse_dust_rho"]
_MAXD = _E["max_distance"]
_SPAN0 = _E["span_0"]
_TOTAL0 = _E["total_0"]
_C0 = _E["c_0"]
_STEP0 = _E["step_0"]
_OFFSET0 = _E["offset_0"]
_SPAN = np.array([_E[f"span_{k}"] for k in range(1, N_CLOUDS + 1)])
_CENTRE = np.array([_E[f"centre_{k}"] for k in range(1, N_CLOUDS + 1)])
_NORM = np.array([_E[f"norm_{k}"] for k in range(1, N_CLOUDS + 1)])
_OFFSET = np.array([_E[f"offset_{k}"] for k in range(1, N_CLOUDS + 1)])
_RATE = np.array([_A[f"rate_{k}"] for k in range(1, N_CLOUDS + 1)])
_CUM = np.array([_A[f"Cum_EBV_{k}"] for k in range(1, N_CLOUDS + 1)])
_SIGMA = _A["sigma"]
_SIGMA_0_2 = _A["sigma_0_2"]
_SIGMA_1_4 = _A["sigma_1_4"]
_SIGMA_2_MAX = _A["sigma_2_max"]


def record_column(records: tuple[np.ndarray, np.ndarray], name: str) -> np.ndarray:
    """One column (a strided view) of a ``(ebv_records, aux_records)`` pair."""
    if name in _E:
        return records[0][:, _E[name]]
    return records[1][:, _A[name]]


#: Output fields of a full evaluation (see :func:`evaluate`), with their dtypes.
COMPONENT_FIELDS = (
    ("ebv", np.float64), ("density", np.float64), ("sigma", np.float64),
    ("max_distance", np.float64), ("distance", np.float64), ("reliable", np.bool_),
    ("bubble_distance", np.float64), ("scale_height", np.float64), ("n_clouds", np.int8),
    ("in_cloud", np.bool_), ("cloud_index", np.int8), ("cloud_distance", np.float64),
    ("cloud_size", np.float64), ("cloud_column", np.float64),
)


# ------------------------------------------------------------- the model on plain scalars
# One definition of the model's arithmetic, shared by the evaluator (below, on records) and
# by the build pipeline's fit (dustmaps_ext_build.parametric.model, on parameter vectors).

_JIT = dict(cache=True, error_model="numpy")

# Below -_SATURATE, 1 + exp(t) == 1.0 exactly in float64: the logistic terms are then
# computed without calling exp, with bit-identical results.
_SATURATE = 40.0


@numba.njit(inline="always", **_JIT)
def _diffuse_constants(bubble, h, rho, sin_b):
    """Constants of the diffuse term: ``span_0, total_0, c_0, step_0, offset_0``.

    Compiled for scalars (the fit); its Python body (``_diffuse_constants.py_func``) runs
    unchanged on numpy columns in their own dtype (:func:`derive_constants`), so that both
    use the same operations in the same order. ``sin_b`` is ``sin |b_lim|``.
    """
    span0 = h / sin_b
    total0 = span0 * rho
    c0 = total0 * (1 - np.exp(-bubble / span0))
    e_edge = np.exp(5 * bubble / BUBBLE_EDGE_WIDTH)
    a_edge = 1 / e_edge
    offset0 = 1 / (1 + e_edge)
    step0 = c0 / ((1 + a_edge) * (0.5 - offset0)) * (1 + a_edge)
    return span0, total0, c0, step0, offset0


@numba.njit(inline="always", **_JIT)
def _cloud_constants(distance, span, cum, bubble):
    """Constants of one cloud: ``centre, norm, offset, rate`` (as :func:`_diffuse_constants`,
    for scalars or, through ``py_func``, numpy columns)."""
    centre = distance + (span * 2) + bubble
    e_far = np.exp(5 * centre / span)
    norm = cum * (1 / e_far + 1)
    return centre, norm, norm / (1 + e_far), 5 / span


@numba.njit(inline="always", **_JIT)
def _diffuse_terms(x, bubble, rho, span0, total0, c0, step0, offset0):
    """Diffuse dust with its bubble at ``x`` (kpc), from :func:`_diffuse_constants`.

    Returns
    -------
    ebv, density, edge, decay : float
        E(B-V) (mag), density (mag/kpc), the bubble-edge step ``S((x - bubble) / w)`` and
        ``exp(-x / span_0)`` for ``x >= bubble`` (0 before); the last two serve the fit's
        gradient (unused, they cost nothing once inlined).
    """
    ebv = 0.0
    dens = 0.0
    decay = 0.0
    if not x < bubble:
        decay = math.exp(-x / span0)
        ebv = total0 * (1.0 - decay) - c0
        dens = rho * decay
    t = -5.0 * ((x - bubble) / BUBBLE_EDGE_WIDTH)
    edge = 1.0 if t < -_SATURATE else 1.0 / (1.0 + math.exp(t))
    ebv += step0 * (edge - offset0)
    return ebv, dens, edge, decay


@numba.njit(inline="always", **_JIT)
def _cloud_terms(x, centre, span, norm, offset):
    """E(B-V) (mag) of one cloud at ``x`` (kpc) and its logistic ``S((x - centre) / span)``,
    from :func:`_cloud_constants` (the logistic serves the fit's gradient)."""
    t = -5.0 * (x - centre) / span
    if t < -_SATURATE:
        return norm - offset, 1.0
    if norm == 0.0 and offset == 0.0 and not math.isnan(t):
        return 0.0, 1.0 / (1.0 + math.exp(t))
    d = 1.0 + math.exp(t)
    return norm / d - offset, 1.0 / d


@numba.njit(inline="always", **_JIT)
def _cloud_density_term(x, centre, rate, norm):
    """Density (mag/kpc) of one cloud at ``x`` (kpc), from :func:`_cloud_constants`."""
    u = -rate * (x - centre)
    if u < -_SATURATE or (norm == 0.0 and not math.isnan(u)):
        return 0.0 * rate * norm  # exactly 0, or NaN as the formula gives for NaN inputs
    s = 1.0 / (1.0 + math.exp(u))
    return rate * norm * s * (1.0 - s)


def derive_constants(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-sightline constants of the model, in the precision of the table's columns.

    The arithmetic follows dustmaps3d 2.2.13 operation by operation (numpy ufuncs on the
    columns' own dtype, Python scalars), so a float32 table gives the same float32-rounded
    constants as dustmaps3d; the distance-dependent part is then evaluated in float64.

    Parameters
    ----------
    columns : mapping of str to ndarray
        The columns of :data:`TABLE_COLUMNS` (any row count, same length).

    Returns
    -------
    dict of str to ndarray
        One array per name of :data:`DERIVED_FIELDS`:

        - ``span_0``: diffuse scale length along the sightline, h / sin|b_lim| (kpc);
        - ``total_0``: total diffuse column span_0 * rho (mag);
        - ``c_0``: diffuse column the bubble removed, total_0 (1 - exp(-bubble/span_0)) (mag);
        - ``step_0``, ``offset_0``: amplitude (mag) and offset of the smooth step that puts
          ``c_0`` back at the bubble edge;
        - ``centre_k``: cloud centre distance_k + 2 span_k + bubble (kpc);
        - ``norm_k``, ``offset_k``: amplitude and offset (mag) that make cloud k start at 0
          at x = 0 and reach Cum_EBV_k at infinity;
        - ``rate_k``: 5 / span_k (1/kpc).
    """
    c = columns
    with np.errstate(all="ignore"):
        sin_b = np.sin(np.deg2rad(np.abs(c["b_lim"])))
        out = dict(zip(("span_0", "total_0", "c_0", "step_0", "offset_0"),
                       _diffuse_constants.py_func(c["bubble"], c["h"], c["diffuse_dust_rho"],
                                                 sin_b)))
        for k in range(1, N_CLOUDS + 1):
            consts = _cloud_constants.py_func(c[f"distance_{k}"], c[f"span_{k}"],
                                             c[f"Cum_EBV_{k}"], c["bubble"])
            for name, value in zip(("centre", "norm", "offset", "rate"), consts):
                out[f"{name}_{k}"] = value
    return out


def record_dtype(columns: Mapping[str, np.ndarray]) -> np.dtype:
    """Floating type of the records of a table: float64 if any column needs it, else float32."""
    dt = np.result_type(np.float32, *(np.asarray(columns[c]).dtype for c in TABLE_COLUMNS))
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float64)


def build_records(columns: Mapping[str, np.ndarray], dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """The records of a table: its columns and their derived constants, in two arrays.

    Parameters
    ----------
    columns : mapping of str to ndarray
        The columns of :data:`TABLE_COLUMNS`, each of shape (n,), in their stored dtypes
        (the derived constants are computed in those dtypes).
    dtype : numpy dtype, optional
        Type of the records; default :func:`record_dtype`. It must hold every column and
        derived constant exactly (float64 always does).

    Returns
    -------
    ebv_records : ndarray, shape (n, len(EBV_FIELDS))
    aux_records : ndarray, shape (n, len(AUX_FIELDS))
    """
    missing = [c for c in TABLE_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"parametric table lacks the columns {', '.join(missing)}")
    dtype = record_dtype(columns) if dtype is None else np.dtype(dtype)
    cols = {c: np.asarray(columns[c]) for c in TABLE_COLUMNS}
    cols.update(derive_constants(cols))
    n = len(cols[TABLE_COLUMNS[0]])
    out = []
    for fields in (EBV_FIELDS, AUX_FIELDS):
        rec = np.empty((n, len(fields)), dtype)
        step = 8192  # interleave by cache-sized blocks of rows (strided writes are slow)
        for lo in range(0, n, step):
            block = rec[lo:lo + step]
            for j, name in enumerate(fields):
                block[:, j] = cols[name][lo:lo + step]
        out.append(rec)
    return out[0], out[1]


# --------------------------------------------------------------------------- kernels


@numba.njit(inline="always", **_JIT)
def _diffuse(rec, r, x):
    """Diffuse dust with its bubble: E(B-V) (mag) and density (mag/kpc) at ``x`` (kpc)."""
    ebv, dens, _, _ = _diffuse_terms(
        x, np.float64(rec[r, _BUBBLE]), np.float64(rec[r, _RHO]), np.float64(rec[r, _SPAN0]),
        np.float64(rec[r, _TOTAL0]), np.float64(rec[r, _C0]), np.float64(rec[r, _STEP0]),
        np.float64(rec[r, _OFFSET0]))
    return ebv, dens


@numba.njit(inline="always", **_JIT)
def _cloud_ebv(rec, r, k, x):
    """E(B-V) (mag) of cloud ``k`` (0-based) at ``x`` (kpc)."""
    return _cloud_terms(x, np.float64(rec[r, _CENTRE[k]]), np.float64(rec[r, _SPAN[k]]),
                        np.float64(rec[r, _NORM[k]]), np.float64(rec[r, _OFFSET[k]]))[0]


@numba.njit(inline="always", **_JIT)
def _cloud_density(rec, aux, r, k, x):
    """Density (mag/kpc) of cloud ``k`` (0-based) at ``x`` (kpc)."""
    return _cloud_density_term(x, np.float64(rec[r, _CENTRE[k]]),
                               np.float64(aux[r, _RATE[k]]), np.float64(rec[r, _NORM[k]]))


@numba.njit(inline="always", **_JIT)
def _ebv(rec, r, x):
    """E(B-V) (mag) of row ``r`` at distance ``x`` (kpc, finite)."""
    ebv = _diffuse(rec, r, x)[0]
    for k in range(N_CLOUDS):
        ebv += _cloud_ebv(rec, r, k, x)
    return ebv


@numba.njit(inline="always", **_JIT)
def _ebv_density(rec, aux, r, x):
    """E(B-V) (mag) and density (mag/kpc) of row ``r`` at distance ``x`` (kpc, finite)."""
    ebv, dens = _diffuse(rec, r, x)
    for k in range(N_CLOUDS):
        ebv += _cloud_ebv(rec, r, k, x)
        dens += _cloud_density(rec, aux, r, k, x)
    return ebv, dens


@numba.njit(inline="always", **_JIT)
def _nanmin2(a, b):
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return min(a, b)


@numba.njit(inline="always", **_JIT)
def _sigma(aux, r, x):
    """Uncertainty (mag) of row ``r`` at distance ``x`` (kpc), by distance range."""
    s_all = np.float64(aux[r, _SIGMA])
    s_0_2 = np.float64(aux[r, _SIGMA_0_2])
    s_1_4 = np.float64(aux[r, _SIGMA_1_4])
    s_2_m = np.float64(aux[r, _SIGMA_2_MAX])
    if x < 1.0:
        return _nanmin2(s_all, s_0_2)
    if x < 2.0:
        return _nanmin2(_nanmin2(s_all, s_0_2), s_1_4)
    if x < 4.0:
        s = _nanmin2(s_1_4, s_2_m)
        return s_all if math.isnan(s) else s
    if x >= 4.0:
        return s_all if math.isnan(s_2_m) else s_2_m
    return np.nan


@numba.njit(inline="always", **_JIT)
def _distance(rec, r, dist, has_dist, i):
    """Distance to evaluate point ``i`` at: missing (NaN) -> max_distance; bad -> NaN."""
    if not has_dist:
        return np.float64(rec[r, _MAXD])
    x = dist[i]
    if math.isnan(x):
        return np.float64(rec[r, _MAXD])
    if x < 0.0 or math.isinf(x):
        return np.nan
    return x


@numba.njit(inline="always", **_JIT)
def _ebv_point(rec, rows, dist, has_dist, i, out):
    r = rows[i]
    if r < 0:
        out[i] = np.nan
        return
    x = _distance(rec, r, dist, has_dist, i)
    if math.isnan(x):
        out[i] = np.nan
        return
    out[i] = _ebv(rec, r, x)


@numba.njit(nogil=True, **_JIT)
def _ebv_serial(idx, rec, rows, dist, has_dist, out):
    for j in range(idx.size):
        _ebv_point(rec, rows, dist, has_dist, idx[j], out)


@numba.njit(inline="always", **_JIT)
def _full_point(rec, aux, rows, dist, has_dist, i, fo, io, bo):
    """All outputs of point ``i``: floats ``fo[:, i]``, int8 ``io[:, i]``, bools ``bo[:, i]``.

    fo rows: ebv, density, sigma, max_distance, distance, bubble_distance, scale_height,
    cloud_distance, cloud_size, cloud_column; io rows: n_clouds, cloud_index;
    bo rows: reliable, in_cloud.
    """
    for q in range(fo.shape[0]):
        fo[q, i] = np.nan
    io[0, i] = -1
    io[1, i] = 0
    bo[0, i] = False
    bo[1, i] = False
    r = rows[i]
    if r < 0:
        return
    maxd = np.float64(rec[r, _MAXD])
    fo[3, i] = maxd
    fo[5, i] = rec[r, _BUBBLE]
    fo[6, i] = rec[r, _SPAN0]
    n = 0
    for k in range(N_CLOUDS):
        if aux[r, _CUM[k]] >= CLOUD_MIN_COLUMN:
            n += 1
    io[0, i] = n
    x = _distance(rec, r, dist, has_dist, i)
    if math.isnan(x):
        return
    ebv, dens = _ebv_density(rec, aux, r, x)
    fo[0, i] = ebv
    fo[1, i] = dens
    fo[2, i] = _sigma(aux, r, x)
    fo[4, i] = x
    bo[0, i] = x <= maxd
    best = -1
    best_dens = -1.0
    for k in range(N_CLOUDS):
        span = np.float64(rec[r, _SPAN[k]])
        if not aux[r, _CUM[k]] >= CLOUD_MIN_COLUMN:
            continue
        if abs(x - np.float64(rec[r, _CENTRE[k]])) <= 0.5 * span:
            d_k = _cloud_density(rec, aux, r, k, x)
            if d_k > best_dens:
                best = k
                best_dens = d_k
    if best >= 0:
        bo[1, i] = True
        io[1, i] = best + 1
        fo[7, i] = rec[r, _CENTRE[best]]
        fo[8, i] = rec[r, _SPAN[best]]
        fo[9, i] = aux[r, _CUM[best]]


@numba.njit(nogil=True, **_JIT)
def _full_serial(idx, rec, aux, rows, dist, has_dist, fo, io, bo):
    for j in range(idx.size):
        _full_point(rec, aux, rows, dist, has_dist, idx[j], fo, io, bo)


@numba.njit(nogil=True, **_JIT)
def _bucket_by_block(rows, shift, n_blocks):
    """Order the points by block of ``2**shift`` rows; points without a row come first.

    Returns ``order`` (point indices) and ``starts`` (``n_blocks + 2`` bounds: bucket 0
    holds the points with no row, bucket b + 1 the points of block b).
    """
    counts = np.zeros(n_blocks + 1, np.int64)
    for i in range(rows.size):
        r = rows[i]
        counts[0 if r < 0 else (r >> shift) + 1] += 1
    starts = np.zeros(n_blocks + 2, np.int64)
    for b in range(n_blocks + 1):
        starts[b + 1] = starts[b] + counts[b]
    fill = starts[:-1].copy()
    order = np.empty(rows.size, np.int64)
    for i in range(rows.size):
        r = rows[i]
        b = 0 if r < 0 else (r >> shift) + 1
        order[fill[b]] = i
        fill[b] += 1
    return order, starts


@numba.njit(nogil=True, **_JIT)
def _profiles(rec, aux, r, x, ebv, dens):
    """Per-component curves of row ``r`` on the distances ``x``: column 0 is the diffuse
    dust (bubble included), column k the cloud k; ``ebv`` and ``dens`` are (n, 5)."""
    for i in range(x.size):
        ebv[i, 0], dens[i, 0] = _diffuse(rec, r, x[i])
        for k in range(N_CLOUDS):
            ebv[i, k + 1] = _cloud_ebv(rec, r, k, x[i])
            dens[i, k + 1] = _cloud_density(rec, aux, r, k, x[i])


# --------------------------------------------------------------------------- dispatch

#: Smallest number of points handed to one thread at a time.
CHUNK_POINTS = 32768
#: Inputs at least this long are processed block of rows by block of rows.
BLOCKED_MIN_POINTS = 64
#: Inputs at least this long release each block of rows after use (see :func:`evaluate`).
RELEASE_MIN_POINTS = 16384
#: Rows per block (a power of two) in the blocked mode: 2**20 rows (~100 MB of float32
#: E(B-V) records), 12 blocks for the release.
BLOCK_ROWS_LOG2 = 20
#: Points are ordered by buckets of ``2**BUCKET_ROWS_LOG2`` rows within a block.
BUCKET_ROWS_LOG2 = 10

def evaluate(records: tuple[np.ndarray, np.ndarray], rows: np.ndarray,
             distances: np.ndarray | None, *, components: bool = False,
             release=None) -> np.ndarray | dict[str, np.ndarray]:
    """Evaluate the model at points given by their table row and distance.

    Parameters
    ----------
    records : (ndarray, ndarray)
        ``(ebv_records, aux_records)`` of shapes (n_rows, len(EBV_FIELDS)) and
        (n_rows, len(AUX_FIELDS)), float32 or float64 (see :func:`build_records`), e.g.
        the memory-mapped records of a converted table.
    rows : ndarray of int64, shape (n,)
        Row of each point; -1 for a point without a sightline (all results NaN).
    distances : ndarray of float64, shape (n,), or None
        Distance in kpc. ``None`` or NaN: the sightline's maximum reliable distance.
        Negative or infinite: NaN results.
    components : bool
        Return every output of :data:`COMPONENT_FIELDS` instead of E(B-V) alone.
    release : callable or None
        ``release(first_row, stop_row)``, called after each block of ``2**20`` rows for
        inputs of :data:`RELEASE_MIN_POINTS` points or more (points are processed grouped
        by blocks of rows), so that the caller can drop those rows' memory-mapped pages
        from its resident set: the peak resident memory then stays near one block's
        records. Smaller inputs leave their pages mapped, so that repeating them is fast.

    Returns
    -------
    ndarray or dict of str to ndarray
        E(B-V) (mag), or a dict with one array per name of :data:`COMPONENT_FIELDS`.
    """
    rec, aux = records
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    n = rows.size
    has_dist = distances is not None
    dist = (np.ascontiguousarray(distances, dtype=np.float64) if has_dist
            else np.empty(0, np.float64))
    if has_dist and dist.shape != rows.shape:
        raise ValueError(f"rows {rows.shape} and distances {dist.shape} differ in shape")
    if components:
        fo = np.empty((10, n), np.float64)
        io = np.empty((2, n), np.int8)
        bo = np.empty((2, n), np.bool_)
        outs = (fo, io, bo)
        serial = _full_serial
        arrays = (rec, aux)
    else:
        out = np.empty(n, np.float64)
        outs = (out,)
        serial = _ebv_serial
        arrays = (rec,)

    if n < BLOCKED_MIN_POINTS:
        serial(np.arange(n, dtype=np.int64), *arrays, rows, dist, has_dist, *outs)
    else:
        # order the points by small buckets of rows (nearby records, fewer TLB misses) and
        # run them block of rows by block, releasing each block once all its points are done
        n_buckets = (rec.shape[0] >> BUCKET_ROWS_LOG2) + 1
        order, starts = _bucket_by_block(rows, BUCKET_ROWS_LOG2, n_buckets)
        per_block = 1 << (BLOCK_ROWS_LOG2 - BUCKET_ROWS_LOG2)
        tasks = [(0, starts[1], -1)]  # points without a sightline
        for first_bucket in range(0, n_buckets, per_block):
            lo = starts[1 + first_bucket]
            hi = starts[1 + min(first_bucket + per_block, n_buckets)]
            step = max(CHUNK_POINTS, -(-(hi - lo) // max_threads()))
            for a in range(lo, hi, step):
                tasks.append((a, min(a + step, hi), first_bucket << BUCKET_ROWS_LOG2))
        tasks = [t for t in tasks if t[1] > t[0]]
        releasing = release is not None and n >= RELEASE_MIN_POINTS
        pending: dict[int, int] = {}
        for _, _, first in tasks:
            pending[first] = pending.get(first, 0) + 1
        lock = threading.Lock()

        def run(task):
            lo, hi, first = task
            serial(order[lo:hi], *arrays, rows, dist, has_dist, *outs)
            if releasing and first >= 0:
                with lock:
                    pending[first] -= 1
                    done = pending[first] == 0
                if done:
                    release(first, min(first + (1 << BLOCK_ROWS_LOG2), rec.shape[0]))

        run_tasks(run, tasks, parallel=n >= PARALLEL_MIN_POINTS)

    if not components:
        return outs[0]
    return {
        "ebv": fo[0], "density": fo[1], "sigma": fo[2], "max_distance": fo[3],
        "distance": fo[4], "reliable": bo[0], "bubble_distance": fo[5],
        "scale_height": fo[6], "n_clouds": io[0], "in_cloud": bo[1], "cloud_index": io[1],
        "cloud_distance": fo[7], "cloud_size": fo[8], "cloud_column": fo[9],
    }


def cloud_profiles(records: tuple[np.ndarray, np.ndarray], row: int,
                   distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E(B-V) and density of each component of one sightline on a distance grid.

    Parameters
    ----------
    records : (ndarray, ndarray)
        ``(ebv_records, aux_records)`` (see :func:`evaluate`).
    row : int
        Row of the sightline.
    distances : ndarray of float64
        Finite, non-negative distances (kpc).

    Returns
    -------
    ebv, density : ndarray, shape (n, 1 + N_CLOUDS)
        Column 0: diffuse dust with its bubble (mag, mag/kpc); column k: cloud k.
        Their sums over columns are the sightline's E(B-V) and density.
    """
    x = np.ascontiguousarray(distances, dtype=np.float64)
    ebv = np.empty((x.size, 1 + N_CLOUDS))
    dens = np.empty((x.size, 1 + N_CLOUDS))
    _profiles(records[0], records[1], int(row), x, ebv, dens)
    return ebv, dens
