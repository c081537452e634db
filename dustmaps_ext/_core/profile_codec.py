"""Lossless coding of monotone float16 distance profiles (the compact DECaPS layout's kernels).

A pixel's values (``n_slots`` slots -- slot 0 the mean, then the samples -- of ``n_dist``
float16 values each) are one byte-aligned record, read most significant bit first:

1. (only with samples) the byte length ``L`` of the mean section: one byte if below 128,
   else two, ``128 + L % 128`` and ``L // 128``;
2. the **mean section**: the slots' modes, 2 bits each (slot 0 first), then the mean's
   ``n_dist`` values; padded to a whole byte;
3. the **samples section**: the samples' values interleaved by distance (the values at
   distance 0 of every sample, then those at distance 1, ...); padded to a whole byte.

A reader that wants the mean stops after it; one that wants the values up to some distance
(a query with distances: the profiles are running sums) reads both sections up to that
distance, side by side. A slot's values are coded by its mode:

* mode 0, **cents** (samples only): the values are ``CENT_TABLE[c]`` (the float16 nearest
  to ``c / 100``) for non-decreasing integers ``c``; coded are the steps
  ``x_i = c[i] - c[i-1]`` (``c[-1] = 0``) under the **cents context** of distance ``i``,
  how much the mean rises there (:func:`_cents_contexts`): where the mean rises, the
  samples do;
* mode 1, **bits**: the float16 bit patterns ``u`` (unsigned 16-bit integers) are
  non-decreasing; coded are the steps ``x_i = u[i] - u[i-1]`` (``u[-1] = 0``) under the
  **bits context** of the previous step (:func:`_bits_context`; 0 for ``i = 0``): a smooth
  profile's steps change slowly. The mean and infilled samples use it;
* mode 2, **raw**: every value is its 16-bit pattern.

A step ``x`` (``0 <= x < 65536``) is one of :data:`N_SYMBOLS` **value symbols**: ``x``
itself below 16; else, for ``x`` of bit length ``n``, ``16 + 2 (n - 5) + b`` with ``b``
the bit of ``x`` below its leading 1, followed by the ``n - 2`` bits below that. When every sample of a pixel is in mode cents, the samples'
steps at one distance are coded together, in groups of :data:`GROUP` samples. Where the
mean rises by less than 1.5 cents (cents context below :data:`PAIR_CONTEXT`), by one
**tuple symbol**: ``sum_s d_s 3**s`` when every step ``d_s`` of the group is below 3, else
the escape symbol ``3**GROUP`` followed by the group's steps as value symbols: most steps
are then 0 or 1, and a group costs one short code instead of five. Where it rises more, by
**pair symbols** of consecutive samples, ``d_a + 16 d_b`` when both are below 16, else the
escape ``256`` followed by both as value symbols; an odd last sample of the group follows
the pairs as a value symbol.

Symbols are written in canonical prefix (Huffman) codes of at most :data:`MAX_CODE_BITS`
bits, one code per table: value symbols of the bits contexts (tables 0..33) and of the cents
contexts (34..69), tuple and pair symbols of the cents contexts. The codes' lengths are fitted to
the map when it is written (:func:`fit_code_lengths`) and stored beside the records; a
decoder reads a symbol with one lookup of the next :data:`MAX_CODE_BITS` bits.

The encoder picks, per slot, mode cents where it is valid, else the cheaper of bits (when
non-decreasing) and raw. The decoders never read past a record's end (bits beyond it read
as zeros), check every decoded value against the 16-bit range and that a record does not
run past its end, and, when they read a record whole, that it ends in its last byte; a
corrupt record is reported by a negative return value (the caller raises the error).
"""

from __future__ import annotations

import heapq

import numba
import numpy as np

__all__ = ["CODEC_NAME", "DECODE_ERRORS", "CENT_TABLE", "FLOAT_TABLE", "MODE_BITS", "MODE_CENTS", "MODE_RAW",
           "N_SYMBOLS", "GROUP", "N_TUPLES", "N_PAIRS", "PAIR_CONTEXT", "MAX_CODE_BITS", "BITS_CONTEXTS",
           "CENTS_CONTEXTS", "VALUE_TABLES",
           "PrefixCodes", "count_symbols", "fit_code_lengths", "check_code_lengths", "decode_rows",
           "encode_pixels", "max_record_bytes"]

#: Name (and version) of this coding, recorded in the files that use it.
CODEC_NAME = "monotone-prefix-3"

MODE_CENTS, MODE_BITS, MODE_RAW = 0, 1, 2
#: Value symbols: steps 0..15 themselves; 16..39 a bit length n of 5..16 and the bit below
#: the leading 1 (symbol ``16 + 2 (n - 5) + bit``), followed by the ``n - 2`` bits below.
N_SYMBOLS = 40
_DIRECT = 16
#: Samples coded together by one tuple symbol.
GROUP = 5
_DIGITS = 3
#: Tuple symbols: 3**GROUP tuples of steps below 3, then the escape.
N_TUPLES = _DIGITS ** GROUP + 1
_ESCAPE = N_TUPLES - 1
#: Cents contexts from which a group's samples are coded in pairs (the mean rises by 1.5
#: cents or more: steps of 3 or more are common and five-tuples would mostly escape).
PAIR_CONTEXT = 5
_PAIR_BASE = 16
#: Pair symbols: ``x_a + 16 x_b`` for two steps below 16, then the escape.
N_PAIRS = _PAIR_BASE ** 2 + 1
_PAIR_ESCAPE = N_PAIRS - 1
#: Longest code, in bits (the decoders' lookup tables have 2**MAX_CODE_BITS entries).
MAX_CODE_BITS = 11
_PEEK_MASK = (1 << MAX_CODE_BITS) - 1
#: Bits contexts (after a previous step of bit length n and next bit b: 2 n + b, 0..33):
#: value tables 0..33.
BITS_CONTEXTS = 34
#: Cents contexts (how much the mean rises): value tables 34..69, tuple and pair tables 0..35.
CENTS_CONTEXTS = 36
VALUE_TABLES = BITS_CONTEXTS + CENTS_CONTEXTS
# kinds of the symbol list's entries
_VALUE, _TUPLE, _RAW, _PAIR = 0, 1, 2, 3

#: Bit patterns of the float16 nearest to c / 100, for c = 0 .. 65535.
CENT_TABLE = (np.arange(65536, dtype=np.float64) / 100.0).astype(np.float16).view(np.uint16)
#: float32 value of every float16 bit pattern.
FLOAT_TABLE = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
# the digits of every tuple symbol (escape: none)
_TUPLE_DIGITS = np.array([[(t // _DIGITS ** s) % _DIGITS for s in range(GROUP)] for t in range(N_TUPLES - 1)]
                         + [[0] * GROUP], dtype=np.int64)
_ESCAPE_BIT = 1 << 14
_PAIR_ESCAPE_BIT = 1 << 12
# lowest set bit of every 5-bit mask (of the samples whose value codes follow)
_LOWEST_BIT = np.array([(m & -m).bit_length() - 1 for m in range(1 << GROUP)], dtype=np.int64)
# bits of the digits beyond the first w of a tuple entry (shifted down), for w = 0..GROUP
_SPARE_DIGITS = np.array([((1 << 2 * GROUP) - 1) >> (2 * w) for w in range(GROUP + 1)], dtype=np.int64)

# error codes of the decoders (negative)
_ERR_OVERRUN, _ERR_CODE, _ERR_RANGE, _ERR_MODE = -1, -2, -3, -4
#: What each negative return value of :func:`decode_rows` means.
DECODE_ERRORS = {_ERR_OVERRUN: "a record runs past its end", _ERR_CODE: "a record holds an invalid code",
                 _ERR_RANGE: "a decoded value is out of range", _ERR_MODE: "a record has an unknown mode"}


@numba.njit(cache=True, nogil=True)
def max_record_bytes(n_slots: int, n_dist: int) -> int:
    """Upper bound of one pixel's record: every value a longest code plus 15 bits, and two
    tuple or pair codes per group and distance. (Real records are far smaller: a slot is
    never coded dearer than raw unless it is in mode cents.)"""
    bits = n_slots * (2 + (MAX_CODE_BITS + 15) * n_dist) + n_dist * 2 * (n_slots // GROUP + 1) * MAX_CODE_BITS
    return -(-bits // 8) + 3  # the mean section's length and its padding


# --------------------------------------------------------------------------- shared pieces
@numba.njit(cache=True, nogil=True)
def _bit_length(x):
    """Bit length of 0 <= x < 2**32."""
    n = 0
    if x >= 65536:
        x >>= 16
        n = 16
    if x >= 256:
        x >>= 8
        n += 8
    if x >= 16:
        x >>= 4
        n += 4
    if x >= 4:
        x >>= 2
        n += 2
    if x >= 2:
        x >>= 1
        n += 1
    return n + x


def _context_of_rise_table() -> np.ndarray:
    """Cents context of every float32 ``d`` by its top 10 bits (sign, exponent, the first
    mantissa bit): ``floor(4 d)`` for ``0 <= d < 1``; ``4 + 2 E + M`` for ``d = (1 + f) 2**E``
    with ``E >= 0`` and ``M = [f >= 1/2]``, at most CENTS_CONTEXTS - 1 (also for +inf);
    0 for a negative ``d`` or NaN."""
    top = np.arange(1024)
    sign, exponent, half = top >> 9, ((top >> 1) & 255) - 127, top & 1
    ctx = np.where(exponent >= 0, 4 + 2 * exponent + half,
                   np.where(exponent == -1, 2 + half, np.where(exponent == -2, 1, 0)))
    ctx = np.minimum(ctx, CENTS_CONTEXTS - 1)
    nan = (exponent == 128) & (half == 1)  # (a NaN with a zero first mantissa bit has some other bit set)
    return np.where((sign == 1) | nan, 0, ctx).astype(np.int64)


_CONTEXT_OF_RISE = _context_of_rise_table()


@numba.njit(cache=True, nogil=True)
def _cents_contexts(floats, mean_bits, count, rise, contexts):
    """Cents contexts of distances ``0 .. count - 1`` from the mean's bit patterns: by
    ``d_i = (float32(mean[i]) - float32(mean[i-1])) * float32(100)`` (``mean[-1] = 0``), the
    mean's rise in cents (:func:`_context_of_rise_table`). ``rise`` is float32 scratch."""
    prev = np.float32(0.0)
    for i in range(count):
        cur = floats[mean_bits[i]]
        rise[i] = (cur - prev) * np.float32(100.0)
        prev = cur
    top = rise[:count].view(np.uint32)
    for i in range(count):
        contexts[i] = _CONTEXT_OF_RISE[top[i] >> 22]


@numba.njit(cache=True, nogil=True)
def _symbol(x):
    """Value symbol of a step, the count of its low bits and their value."""
    if x < _DIRECT:
        return x, 0, 0
    n = _bit_length(x)
    return _DIRECT + 2 * (n - 5) + ((x >> (n - 2)) & 1), n - 2, x & ((1 << (n - 2)) - 1)


@numba.njit(cache=True, nogil=True)
def _bits_context(x):
    """Bits context after a step ``x``: twice its bit length plus its bit below the leading 1."""
    n = _bit_length(x)
    return 2 * n + ((x >> (n - 2)) & 1 if n >= 2 else 0)


@numba.njit(cache=True, nogil=True)
def _cents_steps(values, table, floats, steps):
    """Cent steps of a profile of bit patterns; False if it is not CENT_TABLE[c] for
    non-decreasing c."""
    prev = 0
    for i in range(values.size):
        f = floats[values[i]]
        if not (f >= 0.0 and f < 655.0):
            return False
        c = np.int64(np.rint(np.float64(f) * 100.0))
        if c < prev or table[c] != values[i]:
            return False
        steps[i] = c - prev
        prev = c
    return True


@numba.njit(cache=True, nogil=True)
def _bits_steps(values, steps):
    """Bit-pattern steps of a profile; False if the patterns decrease somewhere."""
    prev = 0
    for i in range(values.size):
        u = np.int64(values[i])
        if u < prev:
            return False
        steps[i] = u - prev
        prev = u
    return True




@numba.njit(cache=True, nogil=True)
def _slot_cost(steps, lengths):
    """Bits of a slot's steps in mode bits under value code lengths ``lengths``."""
    total = 0
    last = 0
    for i in range(steps.size):
        sym, nb, _ = _symbol(steps[i])
        total += lengths[_bits_context(last), sym] + nb
        last = steps[i]
    return total


@numba.njit(cache=True, nogil=True)
def _slot_symbols(values, steps, mode, contexts, out):
    """Per value of one slot: ``out[i] = (table, symbol, n low bits, low bits)`` of its
    value symbol, or (-1, 0, 16, pattern) in mode raw."""
    last = 0
    for i in range(values.size):
        if mode == MODE_RAW:
            out[i, 0], out[i, 1], out[i, 2], out[i, 3] = -1, 0, 16, values[i]
            continue
        x = steps[i]
        out[i, 0] = BITS_CONTEXTS + contexts[i] if mode == MODE_CENTS else _bits_context(last)
        last = x
        out[i, 1], out[i, 2], out[i, 3] = _symbol(x)


@numba.njit(cache=True, nogil=True)
def _pixel_symbols(values, table, floats, lengths, scratch, entries):
    """The symbols of one pixel (values (n_slots, n_dist) uint16) in writing order.

    Entry ``j`` is ``(kind, table, symbol)``: kind 0 a value symbol, 1 a tuple symbol, 3 a
    pair symbol, or ``(2, n, bits)``: ``n`` raw bits. With ``lengths`` (value code lengths)
    empty, a slot's mode is the first valid of cents (samples), bits, raw (what
    :func:`count_symbols` counts); else bits and raw are compared by cost. Returns the
    number of entries and that of the mean section's (the modes and the mean's values).
    """
    rise, contexts, steps, symbols, pending = scratch
    n_slots, n_dist = values.shape
    _cents_contexts(floats, values[0], n_dist, rise, contexts)
    by_cost = lengths.shape[0] > 0
    joint = n_slots > 1
    j = 0
    for s in range(n_slots):
        mode = MODE_RAW
        if s > 0 and _cents_steps(values[s], table, floats, steps[s]):
            mode = MODE_CENTS
        elif _bits_steps(values[s], steps[s]):
            if not by_cost or _slot_cost(steps[s], lengths) < 16 * n_dist:
                mode = MODE_BITS
        if s > 0 and mode != MODE_CENTS:
            joint = False
        _slot_symbols(values[s], steps[s], mode, contexts, symbols[s])
        entries[j, 0], entries[j, 1], entries[j, 2] = _RAW, 2, mode
        j += 1
    split = j  # (set after the mean's values below)
    # the mean, then per distance and group of samples a tuple symbol or pair symbols and
    # (after an escape, for an odd last sample of pairs, or if not every sample is in mode
    # cents) the samples' value symbols
    for i in range(-n_dist, n_dist):
        first, stop = (0, 1) if i < 0 else (1, n_slots)
        d = i + n_dist if i < 0 else i
        if i == 0:
            split = j
        for g in range(first, stop, GROUP):
            end = min(stop, g + GROUP)
            n_values = 0  # slots whose value symbols follow
            if joint and i >= 0 and contexts[d] < PAIR_CONTEXT:
                t = 0
                for s in range(end - 1, g - 1, -1):
                    x = steps[s, d]
                    t = t * _DIGITS + x if t >= 0 and x < _DIGITS else -1
                entries[j, 0], entries[j, 1], entries[j, 2] = _TUPLE, contexts[d], t if t >= 0 else _ESCAPE
                j += 1
                if t < 0:
                    for s in range(g, end):
                        pending[n_values] = s
                        n_values += 1
            elif joint and i >= 0:
                for s in range(g, end, 2):
                    if s + 1 == end:  # an odd sample at the end of the group: its value symbol
                        pending[n_values] = s
                        n_values += 1
                        continue
                    xa, xb = steps[s, d], steps[s + 1, d]
                    fits = xa < _PAIR_BASE and xb < _PAIR_BASE
                    entries[j, 0], entries[j, 1] = _PAIR, contexts[d]
                    entries[j, 2] = xa + _PAIR_BASE * xb if fits else _PAIR_ESCAPE
                    j += 1
                    if not fits:
                        pending[n_values], pending[n_values + 1] = s, s + 1
                        n_values += 2
            else:
                for s in range(g, end):
                    pending[n_values] = s
                    n_values += 1
            for k in range(n_values):
                s = pending[k]
                tab, sym, nb, low = symbols[s, d, 0], symbols[s, d, 1], symbols[s, d, 2], symbols[s, d, 3]
                if tab >= 0:
                    entries[j, 0], entries[j, 1], entries[j, 2] = _VALUE, tab, sym
                    j += 1
                if nb:
                    entries[j, 0], entries[j, 1], entries[j, 2] = _RAW, nb, low
                    j += 1
    return j, split if n_slots > 1 else j


@numba.njit(cache=True, nogil=True)
def _scratch(n_slots, n_dist):
    """Work arrays of :func:`_pixel_symbols`: its scratch and entries."""
    size = n_slots + n_dist * (2 * n_slots + n_slots // GROUP + 1)
    scratch = (np.empty(n_dist, np.float32), np.empty(n_dist, np.int64), np.empty((n_slots, n_dist), np.int64),
               np.empty((n_slots, n_dist, 4), np.int64), np.empty(GROUP, np.int64))
    return scratch, np.empty((size, 3), np.int64)


# --------------------------------------------------------------------------- code tables
@numba.njit(cache=True, nogil=True)
def _count_kernel(values, table, floats, value_counts, tuple_counts, pair_counts):
    scratch, entries = _scratch(values.shape[1], values.shape[2])
    no_lengths = np.empty((0, 0), dtype=np.int64)
    for p in range(values.shape[0]):
        for j in range(_pixel_symbols(values[p], table, floats, no_lengths, scratch, entries)[0]):
            if entries[j, 0] == _VALUE:
                value_counts[entries[j, 1], entries[j, 2]] += 1
            elif entries[j, 0] == _TUPLE:
                tuple_counts[entries[j, 1], entries[j, 2]] += 1
            elif entries[j, 0] == _PAIR:
                pair_counts[entries[j, 1], entries[j, 2]] += 1


def count_symbols(values: np.ndarray, counts: tuple | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add the symbols of pixels ``values`` (uint16, (n, n_slots, n_dist)) to ``counts``
    (value counts (VALUE_TABLES, N_SYMBOLS), tuple counts (CENTS_CONTEXTS, N_TUPLES) and
    pair counts (CENTS_CONTEXTS, N_PAIRS), int64; new if None) and return them."""
    values = np.ascontiguousarray(values)
    if counts is None:
        counts = (np.zeros((VALUE_TABLES, N_SYMBOLS), np.int64), np.zeros((CENTS_CONTEXTS, N_TUPLES), np.int64),
                  np.zeros((CENTS_CONTEXTS, N_PAIRS), np.int64))
    _count_kernel(values, CENT_TABLE, FLOAT_TABLE, *counts)
    return counts


def _huffman_lengths(counts: np.ndarray) -> np.ndarray:
    """Prefix code lengths (every symbol coded) of at most MAX_CODE_BITS bits."""
    weights = np.asarray(counts, dtype=np.int64) + 1  # every symbol gets a code
    while True:
        heap = [(int(w), k, (k,)) for k, w in enumerate(weights)]
        heapq.heapify(heap)
        lengths = np.zeros(weights.size, dtype=np.int64)
        serial = weights.size
        while len(heap) > 1:
            wa, _, a = heapq.heappop(heap)
            wb, _, b = heapq.heappop(heap)
            lengths[list(a + b)] += 1
            heapq.heappush(heap, (wa + wb, serial, a + b))
            serial += 1
        if lengths.max() <= MAX_CODE_BITS:
            return lengths
        weights = (weights + 1) // 2  # flatten the distribution until the longest code fits


def fit_code_lengths(counts: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Code lengths (uint8) of the value, tuple and pair tables from symbol counts
    (:func:`count_symbols`): Huffman codes of at most MAX_CODE_BITS bits in which every
    symbol has a code (so every step can be coded, also one the counts never saw)."""
    return tuple(np.array([_huffman_lengths(row) for row in c], dtype=np.uint8) for c in counts)


def check_code_lengths(value_lengths: np.ndarray, tuple_lengths: np.ndarray, pair_lengths: np.ndarray) -> str | None:
    """What is wrong with code lengths read from a file (None if they are valid)."""
    for name, lengths, shape in (("value_code_lengths", value_lengths, (VALUE_TABLES, N_SYMBOLS)),
                                 ("tuple_code_lengths", tuple_lengths, (CENTS_CONTEXTS, N_TUPLES)),
                                 ("pair_code_lengths", pair_lengths, (CENTS_CONTEXTS, N_PAIRS))):
        lengths = np.asarray(lengths)
        if lengths.shape != shape or lengths.dtype.kind not in "ui":
            return f"{name} is {lengths.dtype} {lengths.shape}, expected uint8 {shape}"
        if np.any(lengths < 1) or np.any(lengths > MAX_CODE_BITS):
            return f"{name} holds lengths outside 1..{MAX_CODE_BITS}"
        if np.any((2.0 ** -lengths.astype(np.float64)).sum(axis=1) > 1.0):
            return f"{name} holds a table that is no prefix code"
    return None


def _canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical prefix codes of one table: symbols by (length, symbol), each code the
    previous one plus 1, shifted left by the growth in length."""
    codes = np.zeros(lengths.size, dtype=np.int64)
    code, prev_len = 0, 0
    for sym in sorted(range(lengths.size), key=lambda k: (int(lengths[k]), k)):
        code <<= int(lengths[sym]) - prev_len
        codes[sym] = code
        code += 1
        prev_len = int(lengths[sym])
    return codes


class PrefixCodes:
    """The value, tuple and pair codes of a compact file: per table the codes and lengths
    (int64) for the encoder, and for the decoder the lookup of the next MAX_CODE_BITS
    bits (0 where no code starts). A value entry (uint32) packs the code's length (bits
    0-3), the count of low bits that follow (4-7), the step's leading part (8-23) and the
    next bits context (24-29; the low bits do not change it); a tuple entry (uint16) the code's
    length (0-3), the group's steps (2 bits each from bit 4) and the escape (bit 14); a
    pair entry (uint16) the length, the two steps (4 bits each from bit 4) and the escape
    (bit 12)."""

    def __init__(self, value_lengths: np.ndarray, tuple_lengths: np.ndarray, pair_lengths: np.ndarray) -> None:
        problem = check_code_lengths(value_lengths, tuple_lengths, pair_lengths)
        if problem:
            raise ValueError(problem)
        self.value_lengths = np.ascontiguousarray(value_lengths, dtype=np.int64)
        self.tuple_lengths = np.ascontiguousarray(tuple_lengths, dtype=np.int64)
        self.pair_lengths = np.ascontiguousarray(pair_lengths, dtype=np.int64)
        value_entry = np.zeros(N_SYMBOLS, dtype=np.int64)
        for sym in range(N_SYMBOLS):  # a step whose leading part is `lead`, then `nb` low bits
            if sym < _DIRECT:
                nb, lead = 0, sym
            else:
                n, bit = 5 + (sym - _DIRECT) // 2, (sym - _DIRECT) % 2
                nb, lead = n - 2, (2 | bit) << (n - 2)
            value_entry[sym] = nb << 4 | lead << 8 | _bits_context(lead) << 24
        tuples = np.arange(N_TUPLES)
        tuple_entry = np.where(tuples == _ESCAPE, _ESCAPE_BIT,
                               (_TUPLE_DIGITS << (4 + 2 * np.arange(GROUP))).sum(axis=1))
        self.value_codes, self.value_lookup = self._tables(self.value_lengths, value_entry, np.uint32)
        self.tuple_codes, self.tuple_lookup = self._tables(self.tuple_lengths, tuple_entry, np.uint16)
        pairs = np.arange(N_PAIRS)
        pair_entry = np.where(pairs == _PAIR_ESCAPE, _PAIR_ESCAPE_BIT,
                              (pairs % _PAIR_BASE) << 4 | (pairs // _PAIR_BASE) << 8)
        self.pair_codes, self.pair_lookup = self._tables(self.pair_lengths, pair_entry, np.uint16)

    @staticmethod
    def _tables(lengths: np.ndarray, entry: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
        codes = np.array([_canonical_codes(row) for row in lengths], dtype=np.int64)
        lookup = np.zeros((lengths.shape[0], 1 << MAX_CODE_BITS), dtype=dtype)
        for t in range(lengths.shape[0]):
            for sym in range(lengths.shape[1]):
                shift = MAX_CODE_BITS - int(lengths[t, sym])
                lookup[t, codes[t, sym] << shift:(codes[t, sym] + 1) << shift] = entry[sym] | int(lengths[t, sym])
        return codes, lookup

    @classmethod
    def fit(cls, values: np.ndarray) -> "PrefixCodes":
        """Codes fitted to pixels ``values`` (uint16, (n, n_slots, n_dist))."""
        return cls(*fit_code_lengths(count_symbols(values)))


# --------------------------------------------------------------------------- encoding
@numba.njit(cache=True, nogil=True)
def encode_pixels(values, table, floats, value_codes, value_lengths, tuple_codes, tuple_lengths, pair_codes,
                  pair_lengths, out, offsets, start_offset):
    """Encode pixels into ``out``; record p starts at ``offsets[p]`` (``offsets[n]`` = end).

    Parameters
    ----------
    values : uint16 array (n, n_slots, n_dist)
        float16 bit patterns.
    table, floats : numpy.ndarray
        :data:`CENT_TABLE` and :data:`FLOAT_TABLE`.
    value_codes, value_lengths, tuple_codes, tuple_lengths, pair_codes, pair_lengths : numpy.ndarray
        Of :class:`PrefixCodes`.
    out : uint8 array
        At least ``n * max_record_bytes`` long; filled from 0.
    offsets : int64 array (n + 1,)
        Written: ``start_offset`` plus the byte position of each record.

    Returns
    -------
    int
        Bytes written; -1 if a mean section exceeds 32,767 bytes (far more distances than
        a map has).
    """
    n = values.shape[0]
    scratch, entries = _scratch(values.shape[1], values.shape[2])
    pos = 0
    for p in range(n):
        offsets[p] = start_offset + pos
        m, split = _pixel_symbols(values[p], table, floats, value_lengths, scratch, entries)
        sections = values.shape[1] > 1  # a mean section and a samples section
        pos += 2 if sections else 0  # (the mean section's length, written below)
        mean_start = pos
        acc = 0
        nacc = 0
        for j in range(m + 1):
            if j == split or j == m:  # the end of a section: pad it to a whole byte
                if nacc:
                    out[pos] = (acc << (8 - nacc)) & 255
                    pos += 1
                    nacc = 0
                if j == split and sections:  # the mean section's length in 1 or 2 bytes
                    length = pos - mean_start
                    if length > 32767:
                        return -1  # (far more distances than a map has)
                    if length < 128:  # one byte: move the section down by one
                        out[mean_start - 2] = length
                        out[mean_start - 1:pos - 1] = out[mean_start:pos].copy()
                        pos -= 1
                    else:
                        out[mean_start - 2] = 128 | (length & 127)
                        out[mean_start - 1] = length >> 7
                if j == m:
                    break
            kind, a, b = entries[j, 0], entries[j, 1], entries[j, 2]
            if kind == _VALUE:
                code, length = value_codes[a, b], value_lengths[a, b]
            elif kind == _TUPLE:
                code, length = tuple_codes[a, b], tuple_lengths[a, b]
            elif kind == _PAIR:
                code, length = pair_codes[a, b], pair_lengths[a, b]
            else:
                code, length = b, a
            acc = (acc << length) | code
            nacc += length
            while nacc >= 8:
                nacc -= 8
                out[pos] = (acc >> nacc) & 255
                pos += 1
    offsets[n] = start_offset + pos
    return pos


# --------------------------------------------------------------------------- decoding
@numba.njit(cache=True, nogil=True)
def _refill_tail(stream, end, bp, acc, nacc):
    """Refill byte by byte near the record's end (zeros past it)."""
    while nacc < 32:
        acc = (acc << 8) | (np.int64(stream[bp]) if bp < end else 0)
        bp += 1
        nacc += 8
    return acc, nacc, bp


# The decoder's hot loops keep the bit reader in local variables: the low ``nacc`` bits of
# ``acc`` are the next bits of the record (the bits above are stale, never masked: shifts
# wrap). Before each symbol it refills to at least 32 bits (a 4-byte big-endian word while
# 4 bytes remain, else :func:`_refill_tail`); a value symbol with its low bits needs at most
# MAX_CODE_BITS + 15. (Written out in each loop: numba compiles helpers returning the
# reader's state into code several times slower.)
@numba.njit(cache=True, nogil=True)
def _decode_interleaved(stream, mean_start, mean_end, end, acc, nacc, bp, upto, n_dist, table, floats, value_lookup,
                        tuple_lookup, pair_lookup, dest, rise, rise_bits, steps):
    """The release's records -- the mean in mode bits, one group of five samples in mode
    cents, all of them read -- decoded as :func:`_decode_record` decodes any record, but
    the mean's value ``i`` (reader at ``bp`` in the mean section) and the samples' values
    ``i`` (a second reader in the samples section) in one loop: the two chains of
    dependent reads overlap, and the samples' running values stay in registers. Returns
    0 or a negative error code."""
    acc2, nacc2, bp2 = _refill_tail(stream, end, mean_end, 0, 0)
    prev = 0
    row = 0
    r1 = r2 = r3 = r4 = r5 = 0
    for i in range(upto):
        if nacc < 32:
            if bp + 4 <= mean_end:
                acc = (acc << 32) | ((np.int64(stream[bp]) << 24) | (np.int64(stream[bp + 1]) << 16)
                                     | (np.int64(stream[bp + 2]) << 8) | np.int64(stream[bp + 3]))
                bp += 4
                nacc += 32
            else:
                acc, nacc, bp = _refill_tail(stream, mean_end, bp, acc, nacc)
        e = np.int64(value_lookup[row, (acc >> (nacc - MAX_CODE_BITS)) & _PEEK_MASK])
        if e & 15 == 0:
            return _ERR_CODE
        nacc -= e & 15
        nb = (e >> 4) & 15
        nacc -= nb
        rise[i] = floats[prev]
        prev += ((e >> 8) & 0xFFFF) | ((acc >> nacc) & ((1 << nb) - 1))
        row = e >> 24
        if prev > 65535:
            return _ERR_RANGE
        dest[0, i] = prev
        rise[i] = (floats[prev] - rise[i]) * np.float32(100.0)  # as in _cents_contexts
        ctx = _CONTEXT_OF_RISE[rise_bits[i] >> 22]
        need = 0  # bit k: sample k's step follows as a value code
        if nacc2 < 32:
            if bp2 + 4 <= end:
                acc2 = (acc2 << 32) | ((np.int64(stream[bp2]) << 24) | (np.int64(stream[bp2 + 1]) << 16)
                                       | (np.int64(stream[bp2 + 2]) << 8) | np.int64(stream[bp2 + 3]))
                bp2 += 4
                nacc2 += 32
            else:
                acc2, nacc2, bp2 = _refill_tail(stream, end, bp2, acc2, nacc2)
        if ctx < PAIR_CONTEXT:
            e = np.int64(tuple_lookup[ctx, (acc2 >> (nacc2 - MAX_CODE_BITS)) & _PEEK_MASK])
            if e & 15 == 0:
                return _ERR_CODE
            nacc2 -= e & 15
            steps[0] = (e >> 4) & 3
            steps[1] = (e >> 6) & 3
            steps[2] = (e >> 8) & 3
            steps[3] = (e >> 10) & 3
            steps[4] = (e >> 12) & 3
            if e & _ESCAPE_BIT:
                need = 31
        else:
            need = 16  # the fifth sample, after two pairs (22 bits at most: no refill between)
            for k in range(0, 4, 2):
                e = np.int64(pair_lookup[ctx, (acc2 >> (nacc2 - MAX_CODE_BITS)) & _PEEK_MASK])
                if e & 15 == 0:
                    return _ERR_CODE
                nacc2 -= e & 15
                steps[k] = (e >> 4) & 15
                steps[k + 1] = (e >> 8) & 15
                if e & _PAIR_ESCAPE_BIT:
                    need |= 3 << k
        t = BITS_CONTEXTS + ctx
        while need:
            k = _LOWEST_BIT[need]
            need &= need - 1
            if nacc2 < 32:
                if bp2 + 4 <= end:
                    acc2 = (acc2 << 32) | ((np.int64(stream[bp2]) << 24) | (np.int64(stream[bp2 + 1]) << 16)
                                           | (np.int64(stream[bp2 + 2]) << 8) | np.int64(stream[bp2 + 3]))
                    bp2 += 4
                    nacc2 += 32
                else:
                    acc2, nacc2, bp2 = _refill_tail(stream, end, bp2, acc2, nacc2)
            e = np.int64(value_lookup[t, (acc2 >> (nacc2 - MAX_CODE_BITS)) & _PEEK_MASK])
            if e & 15 == 0:
                return _ERR_CODE
            nacc2 -= e & 15
            nb = (e >> 4) & 15
            nacc2 -= nb
            steps[k] = ((e >> 8) & 0xFFFF) | ((acc2 >> nacc2) & ((1 << nb) - 1))
        r1 += steps[0]
        r2 += steps[1]
        r3 += steps[2]
        r4 += steps[3]
        r5 += steps[4]
        if (r1 | r2 | r3 | r4 | r5) > 65535:
            return _ERR_RANGE
        dest[1, i] = table[r1]
        dest[2, i] = table[r2]
        dest[3, i] = table[r3]
        dest[4, i] = table[r4]
        dest[5, i] = table[r5]
    err = _record_end(mean_start, mean_end, bp, nacc, upto == n_dist)
    return err if err else _record_end(mean_end, end, bp2, nacc2, upto == n_dist)


@numba.njit(cache=True, nogil=True)
def _record_end(start, end, bp, nacc, whole):
    """0, or the error of a record that ran past its end or, read whole, did not end in its
    last byte."""
    used_bits = (bp - start) * 8 - nacc
    if used_bits > (end - start) * 8:
        return _ERR_OVERRUN
    if whole and used_bits <= (end - start - 1) * 8:
        return _ERR_CODE
    return 0


@numba.njit(cache=True, nogil=True)
def _decode_record(stream, start, end, n_slots, n_read, upto, n_dist, table, floats, value_lookup, tuple_lookup,
                   pair_lookup, dest, rise, rise_bits, contexts, modes, running, last, step_at, pending):
    """Decode values ``0 .. upto - 1`` of the first ``n_read`` slots of the record
    [start, end) (holding ``n_slots`` slots) into dest (slots, dist).

    Returns 0, or a negative error code.
    """
    mean_start, mean_end = start, end
    if n_slots > 1:  # the mean section's length (1 or 2 bytes), the mean section, the samples'
        if end - start < 1:
            return _ERR_OVERRUN
        length = np.int64(stream[start])
        mean_start = start + 1
        if length >= 128:
            if end - start < 2:
                return _ERR_OVERRUN
            length = (length & 127) | (np.int64(stream[start + 1]) << 7)
            mean_start += 1
        mean_end = mean_start + length
        if mean_end > end:
            return _ERR_OVERRUN
    acc, nacc, bp = _refill_tail(stream, mean_end, mean_start, 0, 0)
    joint = n_slots > 1
    for s in range(n_slots):
        if nacc < 2:
            acc, nacc, bp = _refill_tail(stream, mean_end, bp, acc, nacc)
        mode = (acc >> (nacc - 2)) & 3
        nacc -= 2
        if mode > MODE_RAW or (s == 0 and mode == MODE_CENTS):
            return _ERR_MODE
        modes[s] = mode
        running[s] = 0
        last[s] = 0
        if s > 0 and mode != MODE_CENTS:
            joint = False
    samples = n_read > 1 and n_slots > 1
    if samples and joint and n_slots == 1 + GROUP and n_read == n_slots and modes[0] == MODE_BITS:
        return _decode_interleaved(stream, mean_start, mean_end, end, acc, nacc, bp, upto, n_dist, table, floats,
                                   value_lookup, tuple_lookup, pair_lookup, dest, rise, rise_bits, step_at)
    prev = 0
    row = 0
    raw_mean = modes[0] == MODE_RAW
    for i in range(upto):
        if nacc < 32:
            if bp + 4 <= mean_end:
                acc = (acc << 32) | ((np.int64(stream[bp]) << 24) | (np.int64(stream[bp + 1]) << 16)
                                     | (np.int64(stream[bp + 2]) << 8) | np.int64(stream[bp + 3]))
                bp += 4
                nacc += 32
            else:
                acc, nacc, bp = _refill_tail(stream, mean_end, bp, acc, nacc)
        if raw_mean:
            prev = (acc >> (nacc - 16)) & 0xFFFF
            nacc -= 16
        else:
            e = np.int64(value_lookup[row, (acc >> (nacc - MAX_CODE_BITS)) & _PEEK_MASK])
            if e & 15 == 0:
                return _ERR_CODE
            nacc -= e & 15
            nb = (e >> 4) & 15
            nacc -= nb
            prev += ((e >> 8) & 0xFFFF) | ((acc >> nacc) & ((1 << nb) - 1))
            row = e >> 24
            if prev > 65535:
                return _ERR_RANGE
        dest[0, i] = prev
    err = _record_end(mean_start, mean_end, bp, nacc, upto == n_dist)
    if err or not samples:
        return err
    acc, nacc, bp = _refill_tail(stream, end, mean_end, 0, 0)
    _cents_contexts(floats, dest[0], upto, rise, contexts)
    for i in range(upto):
        ctx = contexts[i]
        for g in range(1, n_slots, GROUP):
            stop = min(n_slots, g + GROUP)
            # the group's steps at distance i into step_at: from a tuple or pair codes, and
            # value codes for the slots listed in pending
            n_pending = 0
            if joint and ctx < PAIR_CONTEXT:
                if nacc < 32:
                    if bp + 4 <= end:
                        acc = (acc << 32) | ((np.int64(stream[bp]) << 24) | (np.int64(stream[bp + 1]) << 16)
                                             | (np.int64(stream[bp + 2]) << 8) | np.int64(stream[bp + 3]))
                        bp += 4
                        nacc += 32
                    else:
                        acc, nacc, bp = _refill_tail(stream, end, bp, acc, nacc)
                e = np.int64(tuple_lookup[ctx, (acc >> (nacc - MAX_CODE_BITS)) & _PEEK_MASK])
                nacc -= e & 15
                if e & 15 == 0 or (e >> (4 + 2 * (stop - g))) & _SPARE_DIGITS[stop - g]:
                    return _ERR_CODE  # no code, or steps of samples beyond the last
                for s in range(g, stop):
                    step_at[s] = (e >> (4 + 2 * (s - g))) & 3
                    if e & _ESCAPE_BIT:
                        pending[n_pending] = s
                        n_pending += 1
            elif joint:
                for s in range(g, stop, 2):
                    if s + 1 == stop:
                        pending[n_pending] = s
                        n_pending += 1
                        continue
                    if nacc < 32:
                        if bp + 4 <= end:
                            acc = (acc << 32) | ((np.int64(stream[bp]) << 24) | (np.int64(stream[bp + 1]) << 16)
                                                 | (np.int64(stream[bp + 2]) << 8) | np.int64(stream[bp + 3]))
                            bp += 4
                            nacc += 32
                        else:
                            acc, nacc, bp = _refill_tail(stream, end, bp, acc, nacc)
                    e = np.int64(pair_lookup[ctx, (acc >> (nacc - MAX_CODE_BITS)) & _PEEK_MASK])
                    if e & 15 == 0:
                        return _ERR_CODE
                    nacc -= e & 15
                    step_at[s] = (e >> 4) & 15
                    step_at[s + 1] = (e >> 8) & 15
                    if e & _PAIR_ESCAPE_BIT:
                        pending[n_pending] = s
                        pending[n_pending + 1] = s + 1
                        n_pending += 2
            else:
                for s in range(g, stop):
                    pending[n_pending] = s
                    n_pending += 1
            for k in range(n_pending):
                s = pending[k]
                if nacc < 32:
                    if bp + 4 <= end:
                        acc = (acc << 32) | ((np.int64(stream[bp]) << 24) | (np.int64(stream[bp + 1]) << 16)
                                             | (np.int64(stream[bp + 2]) << 8) | np.int64(stream[bp + 3]))
                        bp += 4
                        nacc += 32
                    else:
                        acc, nacc, bp = _refill_tail(stream, end, bp, acc, nacc)
                mode = modes[s]
                if mode == MODE_RAW:  # the value itself: a running value of 0 plus the pattern
                    step_at[s] = (acc >> (nacc - 16)) & 0xFFFF
                    nacc -= 16
                    continue
                e = np.int64(value_lookup[BITS_CONTEXTS + ctx if mode == MODE_CENTS else last[s],
                                          (acc >> (nacc - MAX_CODE_BITS)) & _PEEK_MASK])
                if e & 15 == 0:
                    return _ERR_CODE
                nacc -= e & 15
                nb = (e >> 4) & 15
                nacc -= nb
                step_at[s] = ((e >> 8) & 0xFFFF) | ((acc >> nacc) & ((1 << nb) - 1))
                last[s] = e >> 24
            for s in range(g, stop):
                cur = running[s] + step_at[s]
                if cur > 65535:
                    return _ERR_RANGE
                if modes[s] != MODE_RAW:
                    running[s] = cur
                if s < n_read:
                    dest[s, i] = table[cur] if modes[s] == MODE_CENTS else cur
    return _record_end(mean_end, end, bp, nacc, upto == n_dist and n_read == n_slots)


@numba.njit(cache=True, nogil=True)
def decode_rows(stream, offsets, rows, n_slots, n_read, upto, n_dist, table, floats, value_lookup, tuple_lookup,
                pair_lookup, out):
    """Decode the records of ``rows`` into ``out[j, :n_read, :upto[j]]`` (uint16).

    ``n_slots`` is the slots of each record; ``upto`` (int64, one per row) the number of
    leading distances wanted, or empty for all of them; ``value_lookup``, ``tuple_lookup``
    and ``pair_lookup`` those of :class:`PrefixCodes`.

    Returns the number of rows decoded, or a negative error code (the first bad row's
    error; ``out`` is then incomplete).
    """
    n_rec = offsets.size - 1
    rise = np.zeros(n_dist, dtype=np.float32)
    rise_bits = rise.view(np.uint32)
    contexts = np.zeros(n_dist, dtype=np.int64)
    modes = np.empty(n_slots, dtype=np.int64)
    running = np.empty(n_slots, dtype=np.int64)
    last = np.empty(n_slots, dtype=np.int64)
    step_at = np.zeros(n_slots, dtype=np.int64)
    pending = np.empty(GROUP, dtype=np.int64)
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
        err = _decode_record(stream, a, b, n_slots, n_read, want, n_dist, table, floats, value_lookup, tuple_lookup,
                             pair_lookup, out[j], rise, rise_bits, contexts, modes, running, last, step_at, pending)
        if err < 0:
            return err
    return rows.size
