"""Every query class pickles to its file path and options, reopens in other processes, and has a
deterministic Dask token.

Reference for the answers: the original object in this process.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
from concurrent.futures import ProcessPoolExecutor

import astropy.units as u
import dask
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from dask.base import tokenize

from dustmaps_ext.bayestar import Bayestar19Query
from dustmaps_ext.combined import BayestarDECaPSQuery
from dustmaps_ext.decaps import DECaPSQuery, DECaPSQueryLite
from dustmaps_ext.wang2025 import Wang2025Query
from helpers.catalog_maps import make_map_files, star_positions

N_POINTS = 400


@pytest.fixture(scope="module")
def points():
    return star_positions(N_POINTS, seed=5)


@pytest.fixture(scope="module")
def maps(tmp_path_factory, points):
    return make_map_files(tmp_path_factory.mktemp("pickle_maps"), points[0], points[1])


def _open(kind: str, maps: dict):
    if kind == "DECaPSQuery":
        return DECaPSQuery(maps["decaps"], progress=False)
    if kind == "DECaPSQueryLite":
        return DECaPSQueryLite(maps["decaps_repacked"])
    if kind == "Bayestar19Query":
        return Bayestar19Query(maps["bayestar"], progress=False)
    if kind == "BayestarDECaPSQuery":
        return BayestarDECaPSQuery(maps["decaps_repacked"], maps["bayestar"], progress=False)
    return Wang2025Query(maps["wang"])


KINDS = ["DECaPSQuery", "DECaPSQueryLite", "Bayestar19Query", "BayestarDECaPSQuery", "Wang2025Query"]


def answer(query, l_deg, b_deg, d_kpc):
    """The object's answer, in whatever process it lives."""
    coords = SkyCoord(l_deg * u.deg, b_deg * u.deg, distance=d_kpc * u.kpc, frame="galactic")
    if isinstance(query, Wang2025Query):
        return query.query(coords)
    return query.query(coords, mode="mean")


@pytest.mark.parametrize("kind", KINDS)
def test_pickle_is_small_and_answers_the_same(kind, maps, points):
    query = _open(kind, maps)
    blob = pickle.dumps(query)
    assert len(blob) < 10_000, len(blob)
    again = pickle.loads(blob)
    assert type(again) is type(query)
    expected = answer(query, *points)
    assert np.isfinite(expected).sum() > 40  # the comparison is not all-NaN
    np.testing.assert_array_equal(answer(again, *points), expected)


def test_decaps_query_in_ram_does_not_pickle_its_arrays(maps):
    query = DECaPSQuery(maps["decaps"], progress=False)
    held = query._store.data.nbytes  # the demo map in RAM: ~1 MB of float16
    assert held > 100 * len(pickle.dumps(query))


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_process_pools_with_every_start_method(method, maps, points):
    queries = [_open(kind, maps) for kind in ("DECaPSQueryLite", "BayestarDECaPSQuery", "Wang2025Query")]
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        futures = [pool.submit(answer, q, *points) for q in queries]
        remote = [f.result(timeout=300) for f in futures]
    for query, got in zip(queries, remote):
        np.testing.assert_array_equal(got, answer(query, *points))


def test_tokens_are_deterministic_and_follow_file_and_options(maps, tmp_path):
    path = maps["decaps_repacked"]
    with dask.config.set({"tokenize.ensure-deterministic": True}):
        a, b = DECaPSQueryLite(path), DECaPSQueryLite(path)
        assert tokenize(a) == tokenize(b)
        assert tokenize(a) != tokenize(DECaPSQueryLite(path, mean_only=True))
        copy = shutil.copy(path, tmp_path / "copy.h5")
        assert tokenize(a) != tokenize(DECaPSQueryLite(copy))
        before = tokenize(DECaPSQueryLite(copy))
        stat = os.stat(copy)
        os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file changed
        assert tokenize(DECaPSQueryLite(copy)) != before
        for kind in KINDS:
            assert tokenize(_open(kind, maps)) == tokenize(_open(kind, maps)), kind
        assert tokenize(_open("Wang2025Query", maps)) != tokenize(a)
        combined = BayestarDECaPSQuery(path, maps["bayestar"], progress=False)
        other = BayestarDECaPSQuery(path, maps["bayestar"], prefer="bayestar", progress=False)
        assert tokenize(combined) != tokenize(other)


def test_threaded_dask_scheduler_accepts_the_objects(maps, points):
    query = _open("DECaPSQueryLite", maps)
    with dask.config.set({"tokenize.ensure-deterministic": True}):
        got = dask.delayed(answer)(query, *points).compute(scheduler="threads")
    np.testing.assert_array_equal(got, answer(query, *points))


def test_a_process_reopens_a_file_once_while_it_is_unchanged(maps, tmp_path):
    """A Dask worker unpickles the query once per task: the map must not load each time."""
    path = shutil.copy(maps["decaps"], tmp_path / "again.h5")
    blob = pickle.dumps(DECaPSQuery(path, progress=False))
    first, second = pickle.loads(blob), pickle.loads(blob)
    assert first is second
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file changed
    assert pickle.loads(blob) is not first
