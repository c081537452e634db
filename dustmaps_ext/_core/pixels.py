"""Sky position -> HEALPix pixel -> row of a sorted pixel table, for any set of nsides.

A voxel map stores one row per HEALPix NESTED pixel, sorted by pixel index. DECaPS uses a
single nside (8192); Bayestar19 mixes several. Both are served by :class:`PixelIndex`: every
pixel is expressed as the range of pixels it covers at the finest nside, and a lookup is a
binary search for the last range that starts at or before the query pixel, restricted to a
short stretch of the table by a small coarse index (one entry per pixel at ``coarse_nside``).
The table itself may be a memory map: a lookup touches a few pages of it.

All HEALPix arithmetic of the package goes through :func:`lb_to_nested` and
:func:`nested_to_lb` (healpy) and :func:`lb_to_ring` (compiled, with astropy-healpix at
pixel boundaries).
"""

from __future__ import annotations

import math

import healpy as hp
import numba
import numpy as np

__all__ = ["check_nside", "in_lon_lat_box", "lb_to_nested", "nested_to_lb", "lb_to_ring", "PixelIndex",
           "stable_order", "first_unsorted_row", "lb_to_unit_vectors"]


def stable_order(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` for integer keys >= -1 (pixels or rows; -1 absent).

    Each key and its position are packed into one int64 and sorted by value, which numpy
    does several times faster than an argsort. Keys too large to pack with the positions
    fall back to the argsort.
    """
    keys = np.asarray(keys)
    n = keys.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    shift = max(1, int(n - 1).bit_length())
    top = int(keys.max()) + 1
    if keys.ndim != 1 or int(keys.min()) < -1 or (top + 1).bit_length() + shift > 62:
        return np.argsort(keys, kind="stable")
    packed = keys.astype(np.int64) + 1
    packed <<= shift
    packed |= np.arange(n, dtype=np.int64)
    packed.sort()
    packed &= (1 << shift) - 1
    return packed


def _lb_arrays(l_deg, b_deg):
    """Galactic longitude and latitude as float64 arrays of one shape (0-d stays 0-d)."""
    l_deg = np.asarray(l_deg, dtype=np.float64)
    b_deg = np.asarray(b_deg, dtype=np.float64)
    if l_deg.shape != b_deg.shape:
        raise ValueError(f"l and b must have one shape; got {l_deg.shape} and {b_deg.shape}")
    return l_deg, b_deg


def check_nside(nside, name: str = "nside") -> int:
    """``nside`` as an int, checked to be a positive power of two (the HEALPix rule).

    Parameters
    ----------
    nside : int
        The value to check.
    name : str
        What to call it in the error message.

    Raises
    ------
    ValueError
        If it is not a positive power of two (the message names ``name`` and the value).
    """
    value = int(nside)
    if value != nside or value < 1 or value & (value - 1):
        raise ValueError(f"{name} must be a positive power of two; got {nside}")
    return value



def in_lon_lat_box(l_deg, b_deg, l_range_deg, b_range_deg) -> np.ndarray:
    """Whether Galactic directions lie inside a longitude-latitude box (open boundaries).

    The one boundary rule of the package: ``l_lo < l < l_hi`` along increasing longitude
    (the range may wrap through l = 0, e.g. ``(239, 366)``; a range of 360 deg or more takes
    every longitude) and ``b_lo < b < b_hi``. NaN directions are outside.

    Parameters
    ----------
    l_deg, b_deg : array_like
        Galactic longitude and latitude (deg), broadcastable.
    l_range_deg : (float, float)
        ``(l_lo, l_hi)`` with ``l_lo < l_hi``; ``l_hi`` may exceed 360.
    b_range_deg : (float, float)
        ``(b_lo, b_hi)``.

    Returns
    -------
    numpy.ndarray of bool
    """
    l_lo, l_hi = (float(v) for v in l_range_deg)
    b_lo, b_hi = (float(v) for v in b_range_deg)
    if not (l_hi > l_lo and b_hi > b_lo):
        raise ValueError(f"need l_lo < l_hi and b_lo < b_hi; got l {l_range_deg}, b {b_range_deg}")
    l_deg = np.asarray(l_deg, dtype=np.float64)
    b_deg = np.asarray(b_deg, dtype=np.float64)
    span = l_hi - l_lo
    with np.errstate(invalid="ignore"):
        dl = np.mod(l_deg - l_lo, 360.0)
        in_l = np.isfinite(l_deg) if span >= 360.0 else (dl > 0.0) & (dl < span)
        return in_l & (b_deg > b_lo) & (b_deg < b_hi)


def lb_to_unit_vectors(l_deg, b_deg) -> np.ndarray:
    """Unit vectors, shape (..., 3), of Galactic directions (deg): (cos b cos l, cos b sin l, sin b)."""
    lr, br = np.radians(l_deg), np.radians(b_deg)
    return np.stack([np.cos(br) * np.cos(lr), np.cos(br) * np.sin(lr), np.sin(br)], axis=-1)


def lb_to_nested(nside: int, l_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
    """HEALPix NESTED pixel of Galactic (l, b); -1 where the position is not a valid one.

    The pixel is the one healpy's ``ang2pix(nside, radians(90 - b), radians(l), nest=True)``
    gives -- which is how dustmaps looks pixels up --, computed by a compiled port of the
    HEALPix C++ ``loc2pix`` (Gorski et al. 2005) that releases the GIL and makes no
    temporary arrays. The test suite checks it against healpy on tens of millions of
    directions, grids through pixel boundaries and the poles included.

    Parameters
    ----------
    nside : int
        HEALPix nside (a power of two).
    l_deg, b_deg : numpy.ndarray
        Galactic longitude and latitude (deg), same shape.

    Returns
    -------
    numpy.ndarray of int64
        Pixel indices; -1 where l or b is not finite or |b| > 90 deg.
    """
    nside = check_nside(nside)
    l_deg, b_deg = _lb_arrays(l_deg, b_deg)
    pix = np.empty(l_deg.shape, dtype=np.int64)
    _lb_to_nested(np.int64(nside), np.int64(nside.bit_length() - 1),
                  np.ascontiguousarray(l_deg).ravel(), np.ascontiguousarray(b_deg).ravel(),
                  pix.reshape(-1))
    return pix


_INV_HALFPI = 0.6366197723675813430755350534900574
_TWOTHIRD = 2.0 / 3.0


@numba.njit(cache=True, nogil=True, inline="always")
def _spread_bits(v):
    v = v & 0xFFFFFFFF
    v = (v | (v << 16)) & 0x0000FFFF0000FFFF
    v = (v | (v << 8)) & 0x00FF00FF00FF00FF
    v = (v | (v << 4)) & 0x0F0F0F0F0F0F0F0F
    v = (v | (v << 2)) & 0x3333333333333333
    v = (v | (v << 1)) & 0x5555555555555555
    return v


@numba.njit(cache=True, nogil=True, inline="always")
def _xyf_to_nested(ix, iy, face, order):
    return (np.int64(face) << (2 * order)) + _spread_bits(np.int64(ix)) + (_spread_bits(np.int64(iy)) << 1)


@numba.njit(cache=True, nogil=True, inline="always")
def _fmodulo(v1, v2):
    if v1 >= 0:
        return v1 if v1 < v2 else np.fmod(v1, v2)
    tmp = np.fmod(v1, v2) + v2
    return 0.0 if tmp == v2 else tmp


@numba.njit(cache=True, nogil=True)
def _lb_to_nested(nside, order, l_deg, b_deg, out):
    for i in range(l_deg.size):
        l = l_deg[i]
        b = b_deg[i]
        if not (math.isfinite(l) and math.isfinite(b)) or abs(b) > 90.0:
            out[i] = -1
            continue
        theta = math.radians(90.0 - b)
        z = math.cos(theta)
        have_sth = theta < 0.01 or theta > 3.14159 - 0.01
        za = abs(z)
        tt = _fmodulo(math.radians(l) * _INV_HALFPI, 4.0)
        if za <= _TWOTHIRD:  # equatorial region
            temp1 = nside * (0.5 + tt)
            temp2 = nside * (z * 0.75)
            jp = np.int64(temp1 - temp2)  # ascending edge line
            jm = np.int64(temp1 + temp2)  # descending edge line
            ifp = jp >> order
            ifm = jm >> order
            if ifp == ifm:
                face = ifp | 4
            elif ifp < ifm:
                face = ifp
            else:
                face = ifm + 8
            out[i] = _xyf_to_nested(jm & (nside - 1), nside - (jp & (nside - 1)) - 1, face, order)
        else:  # polar caps
            ntt = min(3, np.int64(tt))
            tp = tt - ntt
            if za < 0.99 or not have_sth:
                tmp = nside * math.sqrt(3.0 * (1.0 - za))
            else:
                tmp = nside * math.sin(theta) / math.sqrt((1.0 + za) / 3.0)
            jp = min(np.int64(tp * tmp), nside - 1)
            jm = min(np.int64((1.0 - tp) * tmp), nside - 1)
            if z > 0:
                out[i] = _xyf_to_nested(nside - jm - 1, nside - jp - 1, ntt, order)
            else:
                out[i] = _xyf_to_nested(jp, jm, ntt + 8, order)


def nested_to_lb(nside: int, pix: np.ndarray):
    """Galactic (l, b) in deg of the centres of HEALPix NESTED pixels at ``nside``."""
    nside = check_nside(nside)
    return hp.pix2ang(nside, np.asarray(pix, dtype=np.int64), nest=True, lonlat=True)


def lb_to_ring(nside: int, l_deg: np.ndarray, b_deg: np.ndarray, *,
               parallel: bool = False) -> np.ndarray:
    """HEALPix RING pixel of Galactic (l, b), exactly as astropy-healpix finds it.

    dustmaps3d (the reference of the Wang et al. 2025 map) looks its sightlines up with
    astropy-healpix; healpy puts ~40% of the points that lie exactly on a pixel boundary
    (e.g. b = 0, l = 45 deg, or regular grids through boundaries) in the neighbouring
    pixel. The pixel is computed by a compiled kernel (Gorski et al. 2005, eqs. 4-9
    inverted); the few directions within 1e-6 pixel of a boundary are then looked up with
    astropy-healpix itself.

    Parameters
    ----------
    nside : int
        HEALPix nside (a power of two).
    l_deg, b_deg : numpy.ndarray
        Galactic longitude (any finite value) and latitude (deg), same shape.
    parallel : bool
        Run the kernel on all cores. numba's default threading layer runs one parallel
        kernel at a time: callers that may run concurrently must serialise (see
        :func:`dustmaps_ext._core.threads.parallel_slot`).

    Returns
    -------
    numpy.ndarray of int64
        Pixel indices; -1 where l or b is not finite or |b| > 90 deg.
    """
    nside = check_nside(nside)
    l_deg, b_deg = _lb_arrays(l_deg, b_deg)
    lf = np.ascontiguousarray(l_deg).ravel()
    bf = np.ascontiguousarray(b_deg).ravel()
    pix = np.empty(lf.shape, np.int64)
    flags = np.empty(lf.shape, np.bool_)
    (_ring_pixels_parallel if parallel else _ring_pixels_serial)(nside, lf, bf, pix, flags)
    near = np.flatnonzero(flags)
    if near.size:
        import astropy.units as u
        from astropy_healpix.core import lonlat_to_healpix

        pix[near] = lonlat_to_healpix(u.Quantity(lf[near], u.deg), u.Quantity(bf[near], u.deg),
                                      nside, order="ring")
    return pix.reshape(l_deg.shape)


#: Points closer than this to a pixel boundary (in units of a pixel's width in the RING
#: scheme's coordinates) are flagged for an exact lookup by astropy-healpix.
_EDGE_MARGIN = 1e-6


@numba.njit(inline="always", cache=True, error_model="numpy")
def _near_integer(v):
    f = v - math.floor(v)
    return f < _EDGE_MARGIN or f > 1.0 - _EDGE_MARGIN


@numba.njit(inline="always", cache=True, error_model="numpy")
def _ring_pixel(nside, l_deg, b_deg, pix, flags, i):
    """RING pixel of one direction, by the HEALPix scheme (Gorski et al. 2005, eqs. 4-9
    inverted); ``flags[i]`` marks directions within ``_EDGE_MARGIN`` of a boundary."""
    lon = l_deg[i]
    lat = b_deg[i]
    flags[i] = False
    if not (math.isfinite(lon) and math.isfinite(lat)) or abs(lat) > 90.0:
        pix[i] = -1
        return
    z = math.sin(math.radians(lat))
    za = abs(z)
    tt = (lon % 360.0) / 90.0  # in [0, 4)
    if tt >= 4.0:
        tt -= 4.0
    near = abs(za - 2.0 / 3.0) < _EDGE_MARGIN
    if za <= 2.0 / 3.0:
        t1 = nside * (0.5 + tt)
        t2 = nside * 0.75 * z
        a = t1 - t2
        c = t1 + t2
        near = near or _near_integer(a) or _near_integer(c)
        jp = np.int64(math.floor(a))
        jm = np.int64(math.floor(c))
        ir = nside + 1 + jp - jm
        kshift = 1 - (ir & 1)
        ip = (jp + jm - nside + kshift + 1) // 2
        ip = ip % (4 * nside)
        pix[i] = 2 * nside * (nside - 1) + (ir - 1) * 4 * nside + ip
    else:
        tp = tt - math.floor(tt)
        tmp = nside * math.sqrt(3.0 * (1.0 - za))
        a = tp * tmp
        c = (1.0 - tp) * tmp
        jp = np.int64(math.floor(a))
        jm = np.int64(math.floor(c))
        ir = jp + jm + 1
        e = tt * ir
        near = near or _near_integer(a) or _near_integer(c) or _near_integer(e)
        ip = np.int64(math.floor(e)) % (4 * ir)
        if z > 0:
            pix[i] = 2 * ir * (ir - 1) + ip
        else:
            pix[i] = 12 * nside * nside - 2 * ir * (ir + 1) + ip
    flags[i] = near


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _ring_pixels_parallel(nside, l_deg, b_deg, pix, flags):
    for i in numba.prange(l_deg.size):
        _ring_pixel(nside, l_deg, b_deg, pix, flags, i)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _ring_pixels_serial(nside, l_deg, b_deg, pix, flags):
    for i in range(l_deg.size):
        _ring_pixel(nside, l_deg, b_deg, pix, flags, i)


def first_unsorted_row(pixels: np.ndarray, nside: int, previous: int = -1,
                       coarse_counts: np.ndarray | None = None) -> int:
    """First row of a table of NESTED pixels that breaks the rule of a sorted pixel table.

    The rule: every entry is a pixel at ``nside`` (0 to 12 nside^2 - 1) and greater than the
    one before it (``previous`` before row 0). One compiled pass, no temporary arrays: a
    memory-mapped table is read once.

    Parameters
    ----------
    pixels : numpy.ndarray of int, shape (n,)
        The table (uint64 entries of 2^63 or more count as out of range).
    nside : int
        Its nside.
    previous : int
        The pixel of the row before ``pixels[0]`` (when a table is checked in pieces).
    coarse_counts : numpy.ndarray of int64, optional
        One entry per pixel at a coarser nside (the size, 12 nside_c^2, sets it): the rows
        that fall in each coarse pixel are added to it (up to the first bad row).

    Returns
    -------
    int
        The first row that breaks the rule, or -1.
    """
    nside = check_nside(nside)
    values = np.asarray(pixels)
    if values.dtype == np.dtype(np.uint64):
        values = values.view(np.int64)
    elif values.dtype != np.dtype(np.int64):
        values = values.astype(np.int64)
    counts = _NO_COUNTS if coarse_counts is None else coarse_counts
    shift = 0
    if counts.size:
        coarse_nside = check_nside(math.isqrt(counts.size // 12), "coarse nside")
        if 12 * coarse_nside ** 2 != counts.size or coarse_nside > nside:
            raise ValueError("coarse_counts must have 12 nside_c^2 entries, nside_c <= nside")
        shift = 2 * (nside.bit_length() - coarse_nside.bit_length())
    return int(_first_unsorted_row(values, np.int64(12 * nside * nside), np.int64(previous),
                                   np.int64(shift), counts))


_NO_COUNTS = np.zeros(0, dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def _first_unsorted_row(values, n_total, previous, shift, counts):
    count = counts.size > 0
    for i in range(values.size):
        v = values[i]
        if v < 0 or v >= n_total or v <= previous:
            return i
        if count:
            counts[v >> shift] += 1
        previous = v
    return -1


class PixelIndex:
    """Finds the table row of sky positions in a sorted table of HEALPix NESTED pixels.

    Parameters
    ----------
    healpix_index : numpy.ndarray of int, shape (n_rows,)
        Pixel index of each row (NESTED), sorted by the sky position they cover. May be a
        memory map.
    nside : int or numpy.ndarray of int
        The nside of every row (a scalar when all rows share one nside).
    coarse_start : numpy.ndarray of int64, optional
        Precomputed coarse index (as returned by :meth:`coarse_index`), to avoid a pass
        over the table.
    coarse_nside : int, optional
        The nside of ``coarse_start``.
    sort : bool
        The table is in another order (Bayestar19 files list pixels nside by nside): sort
        a copy of the pixel ranges internally; :meth:`rows` still returns rows of the table
        as given. Costs 16 bytes per row.
    """

    def __init__(self, healpix_index: np.ndarray, nside, *, coarse_start: np.ndarray | None = None,
                 coarse_nside: int | None = None, sort: bool = False) -> None:
        nsides = np.atleast_1d(np.asarray(nside, dtype=np.int64))
        for n in np.unique(nsides):
            check_nside(int(n))
        self.nside_max = int(nsides.max())
        self.nside_min = int(nsides.min())
        self.n_rows = int(np.shape(healpix_index)[0])
        index = np.asarray(healpix_index)
        if index.dtype == np.uint64:
            index = index.view(np.int64)
        self._row_of = None
        if nsides.size == 1 and not sort:
            # one nside: the table is the range starts themselves, each range one pixel long
            self._starts = index.astype(np.int64, copy=False)
            self._shifts = np.zeros(1, dtype=np.int64)
            self._unit_span = True
        else:
            if nsides.size != 1 and nsides.shape[0] != self.n_rows:
                raise ValueError("nside must be a scalar or one value per row")
            shifts = 2 * (np.log2(self.nside_max // nsides)).astype(np.int64)
            starts = index.astype(np.int64) << shifts
            order = np.argsort(starts, kind="stable")
            if np.any(order != np.arange(self.n_rows)):
                if not sort:
                    raise ValueError("the pixel table must be sorted by the sky position it covers")
                starts = starts[order]
                shifts = np.broadcast_to(shifts, (self.n_rows,))[order]
                self._row_of = order.astype(np.int64)
            self._starts = starts
            self._shifts = np.broadcast_to(shifts, (self.n_rows,)).copy() if shifts.size == 1 else shifts
            self._unit_span = False
        self.coarse_nside = int(coarse_nside) if coarse_nside else min(self.nside_min, 256)
        self._coarse_shift = 2 * int(np.log2(self.nside_max // self.coarse_nside))
        if coarse_start is None:
            coarse_start = self.coarse_index(self._starts, self.nside_max, self.coarse_nside)
        self._coarse_start = np.asarray(coarse_start, dtype=np.int64)
        if self._coarse_start.shape != (12 * self.coarse_nside ** 2 + 1,):
            raise ValueError("coarse_start does not match coarse_nside")

    @staticmethod
    def coarse_index(starts: np.ndarray, nside_max: int, coarse_nside: int) -> np.ndarray:
        """Row where each ``coarse_nside`` pixel's stretch of the table begins.

        ``coarse_start[p]`` is the number of rows whose first covered pixel (at
        ``nside_max``) lies before coarse pixel ``p``; the array has one extra final entry.
        """
        shift = 2 * int(np.log2(nside_max // coarse_nside))
        bounds = np.arange(12 * coarse_nside ** 2 + 1, dtype=np.int64) << shift
        starts = np.asarray(starts)
        if starts.dtype == np.uint64:
            starts = starts.view(np.int64)
        return np.searchsorted(starts, bounds, side="left").astype(np.int64)

    def rows(self, l_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
        """Table row of each position (-1 outside the table or for invalid positions)."""
        pix = lb_to_nested(self.nside_max, l_deg, b_deg)
        return self.rows_of_pixels(pix)

    def rows_of_pixels(self, pix: np.ndarray) -> np.ndarray:
        """Table row of each pixel at ``nside_max`` (-1 where absent or for negative input)."""
        pix = np.ascontiguousarray(pix, dtype=np.int64)
        out = np.empty(pix.shape, dtype=np.int64)
        _lookup_rows(pix.ravel(), self._starts, self._shifts, self._unit_span,
                     self._coarse_start, self._coarse_shift, self._row_of_or_empty(), out.ravel())
        return out

    def _row_of_or_empty(self) -> np.ndarray:
        return _NO_PERMUTATION if self._row_of is None else self._row_of


_NO_PERMUTATION = np.empty(0, dtype=np.int64)


@numba.njit(cache=True, nogil=True, inline="always")
def _lookup_one(x, starts, shifts, unit_span, coarse_start, coarse_shift, row_of):
    """Row of pixel x (at the table's finest nside), or -1."""
    if x < 0:
        return -1
    p = x >> coarse_shift
    if p >= coarse_start.size - 1:
        return -1
    lo = coarse_start[p]
    hi = coarse_start[p + 1]
    # first row in [lo, hi) whose start is beyond x
    while lo < hi:
        mid = (lo + hi) >> 1
        if starts[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    cand = lo - 1
    if cand < 0:
        return -1
    s = starts[cand]
    if unit_span:
        return cand if s == x else -1
    if x < s + (np.int64(1) << shifts[cand]):
        return row_of[cand] if row_of.size > 0 else cand
    return -1


@numba.njit(cache=True, nogil=True)
def _lookup_rows(pix, starts, shifts, unit_span, coarse_start, coarse_shift, row_of, out):
    for i in range(pix.size):
        out[i] = _lookup_one(pix[i], starts, shifts, unit_span, coarse_start, coarse_shift, row_of)
