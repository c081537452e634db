"""Lossless coding of monotone float16 distance profiles (the compact DECaPS layout's kernels).

One pixel's record is a byte-aligned bit string (most significant bit first) holding its
slots (mean, then samples) one after another. Each slot is a 6-bit header -- a 2-bit mode and
a 4-bit Exp-Golomb order ``k`` -- followed by its ``n_dist`` values:

* mode 0, **cents**: the values are ``CENT_TABLE[c]`` for non-decreasing integers ``c`` (the
  float16 nearest to ``c / 100``); coded are ``c[0]`` and the differences ``c[i] - c[i-1]``;
* mode 1, **bits**: the float16 bit patterns ``u`` (as unsigned 16-bit integers) are
  non-decreasing; coded are ``u[0]`` and the differences ``u[i] - u[i-1]``;
* mode 2, **raw**: the 16-bit patterns themselves, 16 bits each (``k`` is 0).

A number ``x >= 0`` in Exp-Golomb order ``k``: with ``q = (x >> k) + 1`` of ``n`` bits,
``n - 1`` zero bits, then ``q`` in ``n`` bits, then the low ``k`` bits of ``x``. The encoder
picks, per slot, the mode and ``k`` that give the fewest bits; every float16 profile has a
valid mode (raw), and the non-negative non-decreasing ones (the DECaPS values, infilled
pixels included) have mode 1 at least.

The decoders check every read against the record's end and every decoded value against the
16-bit range, and report a corrupt record by a negative return value instead of reading
out of bounds: the caller raises the error.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["CENT_TABLE", "MODE_CENTS", "MODE_BITS", "MODE_RAW", "encode_pixels", "decode_rows",
           "decode_range", "max_record_bytes"]

MODE_CENTS, MODE_BITS, MODE_RAW = 0, 1, 2
_MAX_K = 15
_MAX_ZEROS = 20  # a valid code has at most 16 leading zeros

#: Bit patterns of the float16 nearest to c / 100, for c = 0 .. 65535.
CENT_TABLE = (np.arange(65536, dtype=np.float64) / 100.0).astype(np.float16).view(np.uint16)

# error codes of the decoders (negative)
_ERR_OVERRUN, _ERR_CODE, _ERR_RANGE, _ERR_MODE = -1, -2, -3, -4


def max_record_bytes(n_slots: int, n_dist: int) -> int:
    """Upper bound of one pixel's record: every slot raw."""
    return -(-(n_slots * (6 + 16 * n_dist)) // 8)


@numba.njit(cache=True, nogil=True)
def _bit_length(x):
    n = 0
    while x:
        n += 1
        x >>= 1
    return n


@numba.njit(cache=True, nogil=True)
def _eg_cost(x, k):
    return 2 * _bit_length((x >> k) + 1) - 1 + k


@numba.njit(cache=True, nogil=True)
def _best_k(first, deltas, n):
    # the best order lies near log2 of the mean value: search a few orders around it
    total = first
    for i in range(n):
        total += deltas[i]
    centre = _bit_length(total // (n + 1))
    best_k, best = 0, 1 << 60
    for k in range(max(0, centre - 3), min(_MAX_K, centre + 1) + 1):
        cost = _eg_cost(first, k)
        for i in range(n):
            cost += _eg_cost(deltas[i], k)
        if cost < best:
            best, best_k = cost, k
    return best_k, best


@numba.njit(cache=True, nogil=True)
def encode_pixels(values, cents, table, out, offsets, start_offset):
    """Encode pixels into ``out``; record p starts at ``offsets[p]`` (``offsets[n]`` = end).

    Parameters
    ----------
    values : uint16 array (n, n_slots, n_dist)
        float16 bit patterns.
    cents : int32 array (n, n_slots, n_dist)
        ``rint(value * 100)`` (any integers: the mode is used only where it reproduces).
    table : uint16 array (65536,)
        :data:`CENT_TABLE`.
    out : uint8 array
        At least ``n * max_record_bytes`` long; filled from 0.
    offsets : int64 array (n + 1,)
        Written: ``start_offset`` plus the byte position of each record.
    """
    n, n_slots, n_dist = values.shape
    deltas = np.empty(n_dist, dtype=np.int64)
    pos = 0
    for p in range(n):
        offsets[p] = start_offset + pos
        acc = 0
        nacc = 0
        for s in range(n_slots):
            # cents mode possible?
            ok_c = True
            for i in range(n_dist):
                c = cents[p, s, i]
                if c < 0 or c > 65535 or table[c] != values[p, s, i] or (i > 0 and c < cents[p, s, i - 1]):
                    ok_c = False
                    break
            ok_b = True
            for i in range(1, n_dist):
                if values[p, s, i] < values[p, s, i - 1]:
                    ok_b = False
                    break
            mode = MODE_RAW
            k = 0
            best = 16 * n_dist
            if ok_c:
                for i in range(1, n_dist):
                    deltas[i - 1] = cents[p, s, i] - cents[p, s, i - 1]
                kc, cost = _best_k(np.int64(cents[p, s, 0]), deltas, n_dist - 1)
                if cost < best:
                    mode, k, best = MODE_CENTS, kc, cost
            if ok_b:
                for i in range(1, n_dist):
                    deltas[i - 1] = np.int64(values[p, s, i]) - np.int64(values[p, s, i - 1])
                kb, cost = _best_k(np.int64(values[p, s, 0]), deltas, n_dist - 1)
                if cost < best:
                    mode, k, best = MODE_BITS, kb, cost
            # header: 2-bit mode, 4-bit k
            acc = (acc << 6) | (mode << 4) | k
            nacc += 6
            prev = 0
            for i in range(n_dist):
                if mode == MODE_RAW:
                    acc = (acc << 16) | np.int64(values[p, s, i])
                    nacc += 16
                else:
                    cur = np.int64(cents[p, s, i]) if mode == MODE_CENTS else np.int64(values[p, s, i])
                    x = cur - prev
                    prev = cur
                    q = (x >> k) + 1
                    nb = _bit_length(q)
                    acc = (acc << (2 * nb - 1)) | q
                    nacc += 2 * nb - 1
                    while nacc >= 8:
                        out[pos] = (acc >> (nacc - 8)) & 255
                        pos += 1
                        nacc -= 8
                    acc &= (1 << nacc) - 1
                    if k:
                        acc = (acc << k) | (x & ((1 << k) - 1))
                        nacc += k
                while nacc >= 8:
                    out[pos] = (acc >> (nacc - 8)) & 255
                    pos += 1
                    nacc -= 8
                acc &= (1 << nacc) - 1
        if nacc:  # pad the record to a whole byte
            out[pos] = (acc << (8 - nacc)) & 255
            pos += 1
    offsets[n] = start_offset + pos
    return pos


@numba.njit(cache=True, nogil=True)
def _decode_record(stream, start, end, n_slots_read, n_dist, table, dest):
    """Decode the first ``n_slots_read`` slots of the record [start, end) into dest (slots, dist).

    Returns 0, or a negative error code.
    """
    acc = 0
    nacc = 0
    bp = start
    for s in range(n_slots_read):
        for i in range(-1, n_dist):
            while nacc <= 48:  # refill; past the record's end zeros come in
                byte = stream[bp] if bp < end else 0
                acc = (acc << 8) | byte
                bp += 1
                nacc += 8
            if i == -1:
                header = (acc >> (nacc - 6)) & 63
                nacc -= 6
                mode = header >> 4
                k = header & 15
                if mode > MODE_RAW:
                    return _ERR_MODE
                prev = 0
                continue
            if mode == MODE_RAW:
                dest[s, i] = (acc >> (nacc - 16)) & 0xFFFF
                nacc -= 16
            else:
                z = 0
                while ((acc >> (nacc - 1 - z)) & 1) == 0:
                    z += 1
                    if z > _MAX_ZEROS:
                        return _ERR_CODE
                nb = z + 1
                q = (acc >> (nacc - z - nb)) & ((1 << nb) - 1)
                nacc -= z + nb
                low = 0
                if k:
                    low = (acc >> (nacc - k)) & ((1 << k) - 1)
                    nacc -= k
                cur = prev + (((q - 1) << k) | low)
                if cur > 65535:
                    return _ERR_RANGE
                prev = cur
                dest[s, i] = table[cur] if mode == MODE_CENTS else cur
            acc &= (1 << nacc) - 1
    used_bytes = bp - start - (nacc // 8)
    if used_bytes > end - start:
        return _ERR_OVERRUN
    return 0


@numba.njit(cache=True, nogil=True)
def decode_rows(stream, offsets, rows, n_slots_read, n_dist, table, out):
    """Decode the records of ``rows`` into ``out[j, :n_slots_read]`` (uint16).

    Returns the number of rows decoded, or a negative error code (the first bad row's
    error; ``out`` is then incomplete).
    """
    n_rec = offsets.size - 1
    for j in range(rows.size):
        r = rows[j]
        if r < 0 or r >= n_rec:
            return _ERR_RANGE
        a = offsets[r]
        b = offsets[r + 1]
        if a < 0 or b < a or b > stream.size:
            return _ERR_OVERRUN
        err = _decode_record(stream, a, b, n_slots_read, n_dist, table, out[j])
        if err < 0:
            return err
    return rows.size


@numba.njit(cache=True, nogil=True)
def decode_range(stream, offsets, first, n_slots_read, n_dist, table, out):
    """Decode records ``first .. first + len(out)`` into ``out`` (uint16); see decode_rows."""
    for j in range(out.shape[0]):
        r = first + j
        a = offsets[r]
        b = offsets[r + 1]
        if a < 0 or b < a or b > stream.size:
            return _ERR_OVERRUN
        err = _decode_record(stream, a, b, n_slots_read, n_dist, table, out[j])
        if err < 0:
            return err
    return out.shape[0]
