"""Line-of-sight numerics of voxel maps: distance interpolation and sample reductions.

The kernels work on plain arrays. A map's values are a 3D array ``data[row, slot, k]``;
``slot`` selects the mean (or best fit) or one posterior sample and ``k`` the
distance-modulus edge. ``data`` may be an array in RAM or a memory map. Two storage types
share every kernel (numba compiles one specialisation per type):

* float16 *bit patterns* (uint16; numba has no float16 on the CPU), decoded through a
  65,536-entry lookup table (DECaPS);
* float32 values, used as they are (Bayestar19).

Interpolation in distance modulus ``dm`` follows the DECaPS/Bayestar convention of dustmaps:

* below the first edge: ``10**(0.2 (dm - edge_0)) * value_0``;
* beyond the last edge: the last value;
* between edges: ``(1 - a) * value_ceil + a * value_floor`` with
  ``a = (edge_ceil - dm) / (edge_ceil - edge_floor)``, ``edge_ceil`` the first edge >= dm.

Arithmetic is float64 and each result is rounded to the storage precision (float16 or
float32, ties to even), exactly as dustmaps 1.0.14 stores its answers (float16 for DECaPS,
float32 for Bayestar); a NaN ``dm`` or a row of -1 gives NaN.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import overload

__all__ = ["F16_TO_F64", "F16_NAN_BITS", "values_at_distmod", "profiles", "median_of_values",
           "median_of_profiles", "round_to_float16", "stored_type", "place_scaled"]

#: float16 bit pattern -> float64 value.
F16_TO_F64 = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float64)
#: The float16 quiet NaN bit pattern.
F16_NAN_BITS = np.uint16(0x7E00)

_F16_MIN_NORMAL = 2.0 ** -14
_F16_OVERFLOW = 65520.0  # values at or above this round to infinity


@numba.njit(cache=True, nogil=True, inline="always")
def _round_f16(x):
    """Round a float64 to the nearest float16 value (ties to even), returned as float64."""
    if not math.isfinite(x):
        return x
    ax = abs(x)
    if ax >= _F16_OVERFLOW:
        return math.copysign(math.inf, x)
    if ax < _F16_MIN_NORMAL:
        return math.copysign(np.rint(ax * 16777216.0) / 16777216.0, x)
    exponent = math.frexp(ax)[1]
    q = np.rint(math.ldexp(ax, 11 - exponent))
    return math.copysign(math.ldexp(q, exponent - 11), x)


def _decode(x, lut):
    """Stored value -> float64: a LUT lookup for float16 bit patterns, a cast for floats."""


@overload(_decode, inline="always")
def _decode_impl(x, lut):
    if isinstance(x, types.Integer):
        return lambda x, lut: lut[x]
    return lambda x, lut: np.float64(x)


def _round_as(v, stored):
    """Round a float64 result to the precision of the stored type (``stored`` only gives the type)."""


@overload(_round_as, inline="always")
def _round_as_impl(v, stored):
    if isinstance(stored, types.Integer):
        return lambda v, stored: _round_f16(v)
    return lambda v, stored: np.float64(np.float32(v))


@numba.njit(cache=True, nogil=True)
def _round_f16_array(x, out):
    for i in range(x.size):
        out[i] = _round_f16(x[i])


def round_to_float16(x: np.ndarray) -> np.ndarray:
    """Round float64 values to the float16 grid (as float64); exposed for tests."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    _round_f16_array(x.ravel(), out.ravel())
    return out


@numba.njit(cache=True, nogil=True)
def _values_at_distmod(data, rows, slot_first, slot_per_coord, dm, edges, lut, out):
    """out[i, j] = map value of row rows[i], slot (slot_first + j or slot_per_coord[i]) at dm[i]."""
    n_edges = edges.size
    n_out = out.shape[1]
    per_coord = slot_per_coord.size > 0
    for i in range(rows.size):
        r = rows[i]
        m = dm[i]
        if r < 0 or math.isnan(m):
            for j in range(n_out):
                out[i, j] = math.nan
            continue
        lo = 0
        hi = n_edges
        while lo < hi:  # first edge >= m ("left" insertion point)
            mid = (lo + hi) >> 1
            if edges[mid] < m:
                lo = mid + 1
            else:
                hi = mid
        k = lo
        a = 0.0
        if k == 0:
            a = 10.0 ** (0.2 * (m - edges[0]))
        elif k < n_edges:
            a = (edges[k] - m) / (edges[k] - edges[k - 1])
        for j in range(n_out):
            s = slot_per_coord[i] if per_coord else slot_first + j
            if k == 0:
                v = a * _decode(data[r, s, 0], lut)
            elif k == n_edges:
                v = _decode(data[r, s, n_edges - 1], lut)
            else:
                v = (1.0 - a) * _decode(data[r, s, k], lut) + a * _decode(data[r, s, k - 1], lut)
            # rounded to the stored precision afterwards, in a separate pass: rounding here
            # (libm calls) stalls the random reads of ``data`` and made this loop 2-3x slower
            out[i, j] = v


@numba.njit(cache=True, nogil=True)
def _profiles(data, rows, slot_first, slot_per_coord, nan_bits, out):
    """out[i, j, :] = stored values (as stored) of the whole profile of row rows[i], slot j."""
    n_out = out.shape[1]
    n_dist = out.shape[2]
    per_coord = slot_per_coord.size > 0
    for i in range(rows.size):
        r = rows[i]
        for j in range(n_out):
            if r < 0:
                for k in range(n_dist):
                    out[i, j, k] = nan_bits
                continue
            s = slot_per_coord[i] if per_coord else slot_first + j
            for k in range(n_dist):
                out[i, j, k] = data[r, s, k]


@numba.njit(cache=True, nogil=True, inline="always")
def _median_sorted(buf, n, stored):
    """numpy's median of n stored values held (as float64) in buf[:n]; NaN if any is NaN.

    ``stored`` is a value of the storage type (uint16 bits: float16; float32).
    """
    for t in range(n):
        if math.isnan(buf[t]):
            return math.nan
    for t in range(1, n):  # insertion sort: n is a handful of samples
        v = buf[t]
        u = t - 1
        while u >= 0 and buf[u] > v:
            buf[u + 1] = buf[u]
            u -= 1
        buf[u + 1] = v
    half = n // 2
    if n % 2 == 1:
        return buf[half]
    # numpy averages the two middle values in float32 (float16 or float32 input), then
    # rounds to the input's type
    s = np.float32(buf[half - 1]) + np.float32(buf[half])
    return _round_as(np.float64(s / np.float32(2.0)), stored)


@numba.njit(cache=True, nogil=True)
def _median_of_values(values, stored, out):
    n = values.shape[1]
    buf = np.empty(n)
    for i in range(values.shape[0]):
        for t in range(n):
            buf[t] = values[i, t]
        out[i] = _median_sorted(buf, n, stored)


@numba.njit(cache=True, nogil=True)
def _median_of_profiles(data, rows, slot_first, n_slots, lut, out):
    n_dist = out.shape[1]
    buf = np.empty(n_slots)
    for i in range(rows.size):
        r = rows[i]
        for k in range(n_dist):
            if r < 0:
                out[i, k] = math.nan
                continue
            for t in range(n_slots):
                buf[t] = _decode(data[r, slot_first + t, k], lut)
            out[i, k] = _median_sorted(buf, n_slots, data[r, slot_first, k])


_NO_SLOTS = np.empty(0, dtype=np.int64)


def stored_type(data: np.ndarray) -> np.dtype:
    """The value type a data array stands for: float16 for uint16 bit patterns, else its dtype."""
    return np.dtype(np.float16) if data.dtype == np.uint16 else data.dtype


def _check_data(data: np.ndarray) -> None:
    if data.dtype not in (np.uint16, np.float32):
        raise TypeError(f"map values must be float16 bit patterns (uint16) or float32; got {data.dtype}")


def values_at_distmod(data: np.ndarray, rows: np.ndarray, dm: np.ndarray, edges: np.ndarray,
                      *, slot_first: int = 0, n_slots: int = 1,
                      slot_per_coord: np.ndarray | None = None) -> np.ndarray:
    """Map values interpolated at one distance modulus per coordinate.

    Parameters
    ----------
    data : numpy.ndarray of uint16 or float32, shape (n_rows, n_slots_total, n_dist)
        float16 bit patterns or float32 values (array or memory map).
    rows : numpy.ndarray of int64, shape (n,)
        Row of each coordinate; -1 gives NaN.
    dm : numpy.ndarray of float64, shape (n,)
        Distance modulus of each coordinate; NaN gives NaN.
    edges : numpy.ndarray, shape (n_dist,)
        Distance-modulus edges, increasing.
    slot_first, n_slots : int
        Slots returned for every coordinate: ``slot_first .. slot_first + n_slots - 1``.
    slot_per_coord : numpy.ndarray of int64, shape (n,), optional
        One slot per coordinate instead (then ``n_slots`` is 1).

    Returns
    -------
    numpy.ndarray of float64, shape (n, n_slots)
        Values on the grid of the stored type (float16 or float32).
    """
    _check_data(data)
    if slot_per_coord is None:
        slot_per_coord = _NO_SLOTS
    else:
        n_slots = 1
    out = np.empty((rows.size, n_slots), dtype=np.float64)
    _values_at_distmod(data, rows, int(slot_first), np.asarray(slot_per_coord, dtype=np.int64),
                       dm, np.asarray(edges, dtype=np.float64), F16_TO_F64, out)
    with np.errstate(over="ignore"):  # beyond 65504 rounds to inf, as float16 does
        out[...] = out.astype(np.float16 if data.dtype == np.uint16 else np.float32)
    return out


def profiles(data: np.ndarray, rows: np.ndarray, *, slot_first: int = 0, n_slots: int = 1,
             slot_per_coord: np.ndarray | None = None) -> np.ndarray:
    """Whole distance profiles of each coordinate's row, in the stored type; NaN for row -1.

    Returns an array of shape (n, n_slots, n_dist) (``n_slots`` is 1 with ``slot_per_coord``),
    float16 for uint16 data, float32 for float32 data.
    """
    _check_data(data)
    if slot_per_coord is None:
        slot_per_coord = _NO_SLOTS
    else:
        n_slots = 1
    out = np.empty((rows.size, n_slots, data.shape[2]), dtype=data.dtype)
    fill = F16_NAN_BITS if data.dtype == np.uint16 else data.dtype.type(np.nan)
    _profiles(data, rows, int(slot_first), np.asarray(slot_per_coord, dtype=np.int64), fill, out)
    return out.view(np.float16) if data.dtype == np.uint16 else out


def median_of_values(values: np.ndarray, stored=np.float16) -> np.ndarray:
    """Median over axis 1 of values on the ``stored`` grid (float16 or float32), as
    ``numpy.median`` of an array of that type gives it (returned as float64)."""
    witness = np.uint16(0) if np.dtype(stored) == np.float16 else np.float32(0)
    out = np.empty(values.shape[0], dtype=np.float64)
    _median_of_values(np.ascontiguousarray(values), witness, out)
    return out


def median_of_profiles(data: np.ndarray, rows: np.ndarray, slot_first: int,
                       n_slots: int) -> np.ndarray:
    """Median over samples of whole profiles, shape (n, n_dist), in the stored type; NaN for row -1."""
    _check_data(data)
    out = np.empty((rows.size, data.shape[2]), dtype=np.float64)
    _median_of_profiles(data, rows, int(slot_first), int(n_slots), F16_TO_F64, out)
    return out.astype(stored_type(data))


@numba.njit(cache=True, nogil=True)
def _place_scaled(out, index, values, lut, scale):
    for i in range(index.size):
        o = index[i]
        for j in range(values.shape[1]):
            out[o, j] = _decode(values[i, j], lut) * scale


@numba.njit(cache=True, nogil=True)
def _place_scaled_f32(out, index, values, scale):
    for i in range(index.size):
        o = index[i]
        for j in range(values.shape[1]):
            out[o, j] = values[i, j] * scale


def place_scaled(out: np.ndarray, index: np.ndarray, values: np.ndarray, scale: float = 1.0) -> None:
    """``out[index] = values * scale`` in one pass, in the precision of ``values``.

    float32 values are multiplied by ``float32(scale)`` in float32, float64 values by
    ``scale`` in float64, and each product is rounded to float32: the result equals numpy's
    ``vals *= vals.dtype.type(scale); out[index] = vals`` bit for bit, without the
    intermediate arrays. float16 values are written as they are (``scale`` must be 1).

    Parameters
    ----------
    out : numpy.ndarray of float32, shape (N, ...)
        Destination, C-contiguous.
    index : numpy.ndarray of int, shape (n,)
        Distinct rows of ``out`` to write, each in ``[0, N)``.
    values : numpy.ndarray of float16, float32 or float64, shape (n,) + out.shape[1:]
        What to write.
    scale : float
        Factor (1 writes the values as they are).
    """
    if out.dtype != np.float32 or not out.flags.c_contiguous:
        raise TypeError("out must be a C-contiguous float32 array")
    index = np.asarray(index, dtype=np.int64)
    if values.shape != index.shape + out.shape[1:]:
        raise ValueError(f"values of shape {values.shape} do not fit out{list(out.shape)}[index of {index.size}]")
    n = index.size
    if n == 0:
        return
    flat_out = out.reshape(out.shape[0], -1)
    flat = values.reshape(n, -1)
    if values.dtype == np.float32:
        _place_scaled_f32(flat_out, index, flat, np.float32(scale))
    elif values.dtype == np.float16:
        if scale != 1.0:
            raise ValueError("float16 values are placed unscaled (scale must be 1)")
        _place_scaled(flat_out, index, flat.view(np.uint16), F16_TO_F64, 1.0)
    elif values.dtype == np.float64:
        _place_scaled(flat_out, index, flat, F16_TO_F64, float(scale))
    else:
        raise TypeError(f"values must be float16, float32 or float64; got {values.dtype}")
