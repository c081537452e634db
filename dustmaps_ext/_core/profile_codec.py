"""Lossless coding of monotone float16 distance profiles (the compact DECaPS layout's kernels).

One pixel's record is a byte-aligned bit string (most significant bit first) holding the
6-bit headers of its slots (slot 0 the mean, then the samples) -- each a 2-bit mode and a
4-bit parameter ``m`` --, then the mean's ``n_dist`` values, then the samples' values
interleaved by distance (value 0 of every sample, then value 1 of every sample, ...). A
reader that wants the mean stops after it; one that wants the values up to some distance
(a query with distances: the profiles are running sums) stops after that distance. Each
slot's values are coded in its mode:

* mode 0, **cents, context order**: the values are ``CENT_TABLE[c]`` (the float16 nearest to
  ``c / 100``) for non-decreasing integers ``c``; coded are ``c[0]`` and the steps
  ``c[i] - c[i-1]``, value ``i`` in Exp-Golomb order ``k_i = clip(L_i + m - 8, 0, 15)``,
  where ``L_i`` is the bit length of ``floor(100 (mean[i] - mean[i-1]))`` (0 for ``i = 0``
  or a step that is not finite and positive), computed from the already decoded slot 0
  as float32. The samples follow the mean, so the mean's step predicts their steps' size;
  only slots after slot 0 use this mode;
* mode 1, **bits, previous-step order**: the float16 bit patterns ``u`` (unsigned 16-bit
  integers) are non-decreasing; coded are ``u[0]`` and the steps ``u[i] - u[i-1]``, value
  ``i`` in order ``k_i = clip(P_i + m - 8, 0, 15)`` where ``P_i`` is the bit length of the
  previous step (0 for ``i = 0``): a smooth profile's steps change slowly;
* mode 2, **raw**: the 16-bit patterns themselves, 16 bits each (``m`` is 0);
* mode 3, **cents, fixed order**: as mode 0, in order ``k = m``.

A number ``x >= 0`` in Exp-Golomb order ``k``: with ``q = (x >> k) + 1`` of ``n`` bits,
``n - 1`` zero bits, then ``q`` in ``n`` bits, then the low ``k`` bits of ``x``. The encoder
picks, per slot, the mode and parameter that give the fewest bits among those it tries
(modes 0 or 3 when the values are cents, mode 1 otherwise); every float16 profile has
a valid mode (raw), and the non-negative non-decreasing ones (the DECaPS values, infilled
pixels included) have mode 1 at least.

The decoders check every read against the record's end and every decoded value against the
16-bit range, and report a corrupt record by a negative return value instead of reading
out of bounds: the caller raises the error.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["CODEC_NAME", "DECODE_ERRORS", "CENT_TABLE", "FLOAT_TABLE", "MODE_BITS", "MODE_CENTS", "MODE_CENTS_CONTEXT", "MODE_RAW",
           "decode_rows", "encode_pixels", "max_record_bytes"]

#: Name (and version) of this coding, recorded in the files that use it.
CODEC_NAME = "monotone-exp-golomb-2"

MODE_CENTS_CONTEXT, MODE_BITS, MODE_RAW, MODE_CENTS = 0, 1, 2, 3
_MAX_K = 15
_MAX_ZEROS = 16  # x < 2**16: at most 16 leading zeros (keeps every read within the 49+ bits held)
_CONTEXT_BIAS = 8

#: Bit patterns of the float16 nearest to c / 100, for c = 0 .. 65535.
CENT_TABLE = (np.arange(65536, dtype=np.float64) / 100.0).astype(np.float16).view(np.uint16)
#: float32 value of every float16 bit pattern.
FLOAT_TABLE = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
# leading zero bits of a byte (8 for 0)
_LEADING_ZEROS = np.array([8 - int(b).bit_length() for b in range(256)], dtype=np.int64)

# error codes of the decoders (negative)
_ERR_OVERRUN, _ERR_CODE, _ERR_RANGE, _ERR_MODE = -1, -2, -3, -4
#: What each negative return value of :func:`decode_rows` means.
DECODE_ERRORS = {_ERR_OVERRUN: "a record runs past its end", _ERR_CODE: "a record holds an invalid code",
                 _ERR_RANGE: "a decoded value is out of range", _ERR_MODE: "a record has an unknown mode"}


def max_record_bytes(n_slots: int, n_dist: int) -> int:
    """Upper bound of one pixel's record: every slot raw."""
    return -(-(n_slots * (6 + 16 * n_dist)) // 8)


@numba.njit(cache=True, nogil=True)
def _bit_length(x):
    """Bit length of 0 <= x (three byte lookups, then a loop beyond 2**24)."""
    if x < 256:
        return 8 - _LEADING_ZEROS[x]
    if x < 65536:
        return 16 - _LEADING_ZEROS[x >> 8]
    if x < 16777216:
        return 24 - _LEADING_ZEROS[x >> 16]
    n = 24
    x >>= 24
    while x:
        n += 1
        x >>= 1
    return n


@numba.njit(cache=True, nogil=True)
def _context_lengths(mean_bits, floats, out, count):
    """L_i of mode 0 from slot 0's bit patterns, for i < count."""
    out[0] = 0
    for i in range(1, count):
        step = (floats[mean_bits[i]] - floats[mean_bits[i - 1]]) * np.float32(100.0)
        if step >= 1.0 and step < 1e9:
            out[i] = _bit_length(np.int64(step))
        else:
            out[i] = 0


@numba.njit(cache=True, nogil=True)
def _eg_cost(x, k):
    return 2 * _bit_length((x >> k) + 1) - 1 + k


@numba.njit(cache=True, nogil=True)
def _cost_fixed(steps, k):
    cost = 0
    for i in range(steps.size):
        cost += _eg_cost(steps[i], k)
    return cost


@numba.njit(cache=True, nogil=True)
def _context_k(length, m):
    return min(_MAX_K, max(0, length + m - _CONTEXT_BIAS))


@numba.njit(cache=True, nogil=True)
def _cost_context(steps, lengths, m):
    cost = 0
    for i in range(steps.size):
        cost += _eg_cost(steps[i], _context_k(lengths[i], m))
    return cost


@numba.njit(cache=True, nogil=True)
def _previous_lengths(steps, out):
    """P_i of mode 1: bit length of the previous step (0 for the first)."""
    out[0] = 0
    for i in range(1, steps.size):
        out[i] = _bit_length(steps[i - 1])


@numba.njit(cache=True, nogil=True)
def _best_fixed(steps):
    """Best fixed order, searched near log2 of the mean step."""
    total = 0
    for i in range(steps.size):
        total += steps[i]
    centre = _bit_length(total // steps.size)
    best_k, best = 0, 1 << 60
    for k in range(max(0, centre - 3), min(_MAX_K, centre + 1) + 1):
        cost = _cost_fixed(steps, k)
        if cost < best:
            best, best_k = cost, k
    return best_k, best


@numba.njit(cache=True, nogil=True)
def _choose_mode(values, s, table, floats, lengths, steps_c, steps_b, previous):
    """Mode and parameter of slot ``s`` of one pixel's values (n_slots, n_dist) with the fewest
    bits; fills ``steps_c`` (cent steps) or ``steps_b`` (bit-pattern steps) for the chosen mode."""
    n_dist = values.shape[1]
    ok_c = True  # every value is CENT_TABLE[c] for non-decreasing c?
    prev = 0
    for i in range(n_dist):
        f = floats[values[s, i]]
        if not (f >= 0.0 and f < 655.0):
            ok_c = False
            break
        c = np.int64(np.rint(np.float64(f) * 100.0))
        if c < prev or table[c] != values[s, i]:
            ok_c = False
            break
        steps_c[i] = c - prev
        prev = c
    ok_b = True
    prev = 0
    for i in range(n_dist):
        u = np.int64(values[s, i])
        if u < prev:
            ok_b = False
            break
        steps_b[i] = u - prev
        prev = u
    mode = MODE_RAW
    m = 0
    best = 16 * n_dist
    if ok_c:
        if s > 0:  # samples: the order predicted by the mean's steps
            for mc in range(6, 12):
                cost = _cost_context(steps_c, lengths, mc)
                if cost < best:
                    mode, m, best = MODE_CENTS_CONTEXT, mc, cost
        else:
            kc, cost = _best_fixed(steps_c)
            if cost < best:
                mode, m, best = MODE_CENTS, kc, cost
    # bit-pattern steps of a cents profile are 10-20 times its cent steps: not tried
    if ok_b and mode == MODE_RAW:
        _previous_lengths(steps_b, previous)
        for mb in range(5, 12):
            cost = _cost_context(steps_b, previous, mb)
            if cost < best:
                mode, m, best = MODE_BITS, mb, cost
    return mode, m


@numba.njit(cache=True, nogil=True, inline="always")
def _flush(acc, nacc, out, pos):
    while nacc >= 8:
        out[pos] = (acc >> (nacc - 8)) & 255
        pos += 1
        nacc -= 8
    return acc & ((1 << nacc) - 1), nacc, pos


@intrinsic
def _leading_zeros64(typingctx, x):
    """Leading zero bits of a 64-bit integer (64 for 0): one instruction."""
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))

    return types.int64(x), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _order(mode, m, context, last):
    """Exp-Golomb order of a value: from the mean's step length (mode 0), the previous step
    (mode 1) or fixed (mode 3)."""
    if mode == MODE_CENTS_CONTEXT:
        return min(_MAX_K, max(0, context + m - _CONTEXT_BIAS))
    if mode == MODE_BITS:
        return min(_MAX_K, max(0, 64 - _leading_zeros64(last) + m - _CONTEXT_BIAS))
    return m


@numba.njit(cache=True, nogil=True, inline="always")
def _put_value(acc, nacc, out, pos, mode, k, x, raw):
    """Append one value (its step ``x`` in order ``k``, or the raw pattern in mode 2)."""
    if mode == MODE_RAW:
        acc = (acc << 16) | raw
        nacc += 16
    else:
        q = (x >> k) + 1
        nb = _bit_length(q)
        acc = (acc << (2 * nb - 1)) | q
        nacc += 2 * nb - 1
        acc, nacc, pos = _flush(acc, nacc, out, pos)
        if k:
            acc = (acc << k) | (x & ((1 << k) - 1))
            nacc += k
    return _flush(acc, nacc, out, pos)


@numba.njit(cache=True, nogil=True)
def encode_pixels(values, table, floats, out, offsets, start_offset):
    """Encode pixels into ``out``; record p starts at ``offsets[p]`` (``offsets[n]`` = end).

    A record holds the headers of all slots, the mean's values, then the samples' values
    interleaved by distance (value 0 of every sample, value 1 of every sample, ...), so
    that any prefix of distances can be decoded without the rest.

    Parameters
    ----------
    values : uint16 array (n, n_slots, n_dist)
        float16 bit patterns.
    table, floats : numpy.ndarray
        :data:`CENT_TABLE` and :data:`FLOAT_TABLE`.
    out : uint8 array
        At least ``n * max_record_bytes`` long; filled from 0.
    offsets : int64 array (n + 1,)
        Written: ``start_offset`` plus the byte position of each record.

    Returns
    -------
    int
        Bytes written.
    """
    n, n_slots, n_dist = values.shape
    steps = np.empty((n_slots, n_dist), dtype=np.int64)
    steps_c = np.empty(n_dist, dtype=np.int64)
    steps_b = np.empty(n_dist, dtype=np.int64)
    lengths = np.zeros(n_dist, dtype=np.int64)
    previous = np.zeros(n_dist, dtype=np.int64)
    modes = np.empty(n_slots, dtype=np.int64)
    params = np.empty(n_slots, dtype=np.int64)
    last = np.zeros(n_slots, dtype=np.int64)
    pos = 0
    for p in range(n):
        offsets[p] = start_offset + pos
        acc = 0
        nacc = 0
        _context_lengths(values[p, 0], floats, lengths, n_dist)
        for s in range(n_slots):
            mode, m = _choose_mode(values[p], s, table, floats, lengths, steps_c, steps_b, previous)
            modes[s] = mode
            params[s] = m
            chosen = steps_b if mode == MODE_BITS else steps_c
            for i in range(n_dist):
                steps[s, i] = chosen[i]
            acc = (acc << 6) | (mode << 4) | m
            nacc += 6
            acc, nacc, pos = _flush(acc, nacc, out, pos)
        for s in range(n_slots):
            last[s] = 0
        for i in range(n_dist):  # the mean, then the samples interleaved by distance
            mode = modes[0]
            k = _order(mode, params[0], 0, last[0])
            acc, nacc, pos = _put_value(acc, nacc, out, pos, mode, k, steps[0, i], np.int64(values[p, 0, i]))
            last[0] = steps[0, i]
        for i in range(n_dist):
            for s in range(1, n_slots):
                mode = modes[s]
                k = _order(mode, params[s], lengths[i], last[s])
                acc, nacc, pos = _put_value(acc, nacc, out, pos, mode, k, steps[s, i],
                                            np.int64(values[p, s, i]))
                last[s] = steps[s, i]
        if nacc:  # pad the record to a whole byte
            out[pos] = (acc << (8 - nacc)) & 255
            pos += 1
    offsets[n] = start_offset + pos
    return pos


@numba.njit(cache=True, nogil=True, inline="always")
def _read_value(stream, end, bp, acc, nacc, mode, k, prev):
    """Read one value after the running value ``prev``: ``(acc, nacc, bp, value)``; the value
    is negative (an error code) for an invalid code or one out of range."""
    while nacc <= 48:  # refill; past the record's end zeros come in
        byte = stream[bp] if bp < end else 0
        acc = (acc << 8) | byte
        bp += 1
        nacc += 8
    if mode == MODE_RAW:
        return acc, nacc - 16, bp, (acc >> (nacc - 16)) & 0xFFFF
    z = _leading_zeros64(acc << (64 - nacc))  # the nacc fresh bits at the top, zeros below
    if z > _MAX_ZEROS:
        return acc, nacc, bp, _ERR_CODE
    width = 2 * z + 1 + k
    code = (acc >> (nacc - width)) & ((1 << width) - 1)
    cur = prev + code - (1 << k)  # code = q << k | low, q = (x >> k) + 1
    if cur > 65535:
        return acc, nacc - width, bp, _ERR_RANGE
    return acc, nacc - width, bp, cur


@numba.njit(cache=True, nogil=True)
def _decode_record(stream, start, end, n_slots, n_read, upto, n_dist, table, floats, dest,
                   lengths, modes, params, running, last):
    """Decode values ``0 .. upto - 1`` of the first ``n_read`` slots of the record
    [start, end) (holding ``n_slots`` slots) into dest (slots, dist).

    Returns 0, or a negative error code.
    """
    acc = 0  # bits above the lowest nacc are stale (never masked: shifts wrap)
    nacc = 0
    bp = start
    for s in range(n_slots):
        if nacc < 6:
            byte = stream[bp] if bp < end else 0
            acc = (acc << 8) | byte
            bp += 1
            nacc += 8
        header = (acc >> (nacc - 6)) & 63
        nacc -= 6
        modes[s] = header >> 4
        params[s] = header & 15
        running[s] = 0
        last[s] = 0
    if modes[0] == MODE_CENTS_CONTEXT:
        return _ERR_MODE
    samples = n_read > 1 and n_slots > 1
    # the mean: all of it when samples follow (they come after it), else the prefix asked
    mean_upto = n_dist if samples else upto
    mode = modes[0]
    m = params[0]
    prev = 0
    step = 0
    for i in range(mean_upto):
        k = _order(mode, m, 0, step)
        acc, nacc, bp, cur = _read_value(stream, end, bp, acc, nacc, mode, k, prev)
        if cur < 0:
            return cur
        step = cur - prev
        prev = cur
        dest[0, i] = cur if mode != MODE_CENTS else table[cur]
    if samples:
        _context_lengths(dest[0], floats, lengths, upto)
        for i in range(upto):
            for s in range(1, n_slots):
                mode = modes[s]
                k = _order(mode, params[s], lengths[i], last[s])
                prev = running[s]
                acc, nacc, bp, cur = _read_value(stream, end, bp, acc, nacc, mode, k, prev)
                if cur < 0:
                    return cur
                if mode != MODE_RAW:
                    last[s] = cur - prev
                    running[s] = cur
                if s < n_read:
                    dest[s, i] = cur if mode == MODE_BITS or mode == MODE_RAW else table[cur]
    used_bytes = bp - start - (nacc // 8)
    if used_bytes > end - start:
        return _ERR_OVERRUN
    return 0


@numba.njit(cache=True, nogil=True)
def decode_rows(stream, offsets, rows, n_slots, n_read, upto, n_dist, table, floats, out):
    """Decode the records of ``rows`` into ``out[j, :n_read, :upto[j]]`` (uint16).

    ``n_slots`` is the slots of each record; ``upto`` (int64, one per row) the number of
    leading distances wanted, or empty for all of them.

    Returns the number of rows decoded, or a negative error code (the first bad row's
    error; ``out`` is then incomplete).
    """
    n_rec = offsets.size - 1
    lengths = np.zeros(n_dist, dtype=np.int64)
    modes = np.empty(n_slots, dtype=np.int64)
    params = np.empty(n_slots, dtype=np.int64)
    running = np.empty(n_slots, dtype=np.int64)
    last = np.empty(n_slots, dtype=np.int64)
    full = upto.size == 0
    for j in range(rows.size):
        r = rows[j]
        if r < 0 or r >= n_rec:
            return _ERR_RANGE
        a = offsets[r]
        b = offsets[r + 1]
        if a < 0 or b < a or b > stream.size:
            return _ERR_OVERRUN
        want = n_dist if full else min(max(upto[j], 0), n_dist)
        err = _decode_record(stream, a, b, n_slots, n_read, want, n_dist, table, floats, out[j],
                             lengths, modes, params, running, last)
        if err < 0:
            return err
    return rows.size
