"""The sampler's vector helpers against numpy's own half-float arithmetic."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from dustmaps_ext_build.decaps import _simd


@numba.njit
def _add(diff, start, data, new_row, old_row, n_vec):
    _simd.add_row_difference(diff, start, data, new_row, old_row, n_vec)


@numba.njit
def _set(diff, start, data, new_row, old_row, n_vec):
    _simd.set_row_difference(diff, start, data, new_row, old_row, n_vec)


@numba.njit
def _read(data, index):
    _simd.prefetch(data, index)
    _simd.prefetch_once(data, index)
    return _simd.half_to_float(data, index)


def _half_bits(rng, n):
    # normal and subnormal halves, zeros and a few exact powers of two
    values = rng.random(n) * np.exp2(-rng.integers(0, 26, n))
    values[::17] = 0.0
    values[5::23] = 2.0 ** -3
    return values.astype(np.float16).view(np.uint16)


@pytest.mark.parametrize("n_vec", [0, 1, 3, 6])
def test_row_differences_match_numpy(n_vec):
    rng = np.random.default_rng(n_vec)
    data = _half_bits(rng, 400)
    halves = data.view(np.float16).astype(np.float32)
    start, new_row, old_row = 16, 200, 137  # any offsets, not only multiples of 8
    n = _simd.LANES * n_vec
    diff = rng.random(80).astype(np.float32)
    expect = diff.copy()
    expect[start:start + n] += halves[new_row:new_row + n] - halves[old_row:old_row + n]
    _add(diff, start, data, new_row, old_row, n_vec)
    np.testing.assert_array_equal(diff, expect)  # same float32 operations, same order
    expect[start:start + n] = halves[new_row:new_row + n] - halves[old_row:old_row + n]
    _set(diff, start, data, new_row, old_row, n_vec)
    np.testing.assert_array_equal(diff, expect)  # untouched outside the n values


def test_half_to_float_matches_numpy_on_every_finite_half():
    bits = np.arange(1 << 16, dtype=np.uint16)
    finite = np.isfinite(bits.view(np.float16))
    got = np.array([_read(bits, i) for i in np.flatnonzero(finite)], np.float32)
    np.testing.assert_array_equal(got, bits.view(np.float16)[finite].astype(np.float32))


def test_wrong_dtypes_are_refused_at_compile_time():
    data = np.zeros(16, np.float32)  # not half bits
    with pytest.raises(numba.core.errors.TypingError):
        _add(np.zeros(16, np.float32), 0, data, 8, 0, 1)
    with pytest.raises(numba.core.errors.TypingError):
        _read(data, 0)
