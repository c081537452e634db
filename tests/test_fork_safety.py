"""Queries in a process forked after the parent ran threaded ones.

``multiprocessing`` forks by default on Linux. numba picks its OpenMP threading layer there
when TBB is not installed, and GNU OpenMP cannot be used after ``fork()``: numba kills a
child that runs a parallel kernel once the parent has started that layer's threads. The
Wang et al. (2025) query runs one parallel kernel (the RING pixel lookup, for 4,096 points
or more) and its model kernels on a pool of Python threads. The end-to-end check with a
full-size map is ``test_wang2025.py::test_query_in_a_forked_child``.
"""

from __future__ import annotations


import astropy.units as u
import numba
import numpy as np
import pytest
from astropy_healpix import HEALPix

from dustmaps_ext._core import parametric
from dustmaps_ext.wang2025 import NSIDE, _pixel_rows
from helpers.parametric_cases import random_columns
from helpers.processes import in_forked_child

# Python >= 3.12 warns that fork() in a multi-threaded process may deadlock; that is the
# situation under test
pytestmark = pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")


def sky(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))


def test_ring_lookup_in_a_child_forked_after_a_threaded_one():
    l_deg, b_deg = sky(100_000, 16)
    reference = np.asarray(HEALPix(nside=NSIDE, order="ring").lonlat_to_healpix(
        l_deg * u.deg, b_deg * u.deg))
    assert np.array_equal(_pixel_rows(l_deg, b_deg), reference)
    layer = numba.threading_layer()  # raises unless the parent started numba's threads
    child = in_forked_child(_pixel_rows, l_deg[:10_000], b_deg[:10_000])
    assert np.array_equal(child, reference[:10_000])

    def slot_in_child():
        with parametric.parallel_slot(10_000) as parallel:
            return parallel

    # the child runs the serial kernel exactly when the parent's threads are OpenMP's
    assert in_forked_child(slot_in_child) == (layer != "omp")
    with parametric.parallel_slot(10_000) as parallel:  # the parent keeps its threads
        assert parallel


def test_threaded_model_in_a_child_forked_after_a_threaded_one():
    rng = np.random.default_rng(9)
    records = parametric.build_records(random_columns(50_000, rng, np.float32))
    rows = rng.integers(-1, 50_000, 100_000)
    dist = rng.uniform(0, 15, rows.size)
    parent = parametric.evaluate(records, rows, dist)
    assert np.isnan(parent[rows < 0]).all() and np.isfinite(parent[rows >= 0]).mean() > 0.9
    child = in_forked_child(parametric.evaluate, records, rows[:10_000], dist[:10_000])
    serial = parametric.evaluate(records, rows[:10_000], dist[:10_000])
    np.testing.assert_array_equal(child, parent[:10_000])
    np.testing.assert_array_equal(child, serial)
