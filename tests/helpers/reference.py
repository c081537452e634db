"""Independent reference computations shared by the tests (plain numpy, dustmaps' formulas)."""

from __future__ import annotations

import contextlib
import io
import warnings

import h5py
import numpy as np


def quiet(fn, *args, **kwargs):
    """Run a dustmaps call without its prints and RuntimeWarnings (all-NaN slices)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def interpolate_like_dustmaps(profiles, rows, dm, edges, dtype):
    """Values at distance modulus ``dm`` computed row by row in dustmaps' order of operations.

    ``profiles`` has shape (n_rows, n_slots, n_dist) (float64 values); rows of -1 and NaN
    distance moduli give NaN. Results are stored into an array of ``dtype`` (so rounded to it).
    """
    k = np.searchsorted(edges, dm)
    want = np.full((rows.size, profiles.shape[1]), np.nan, dtype=dtype)
    n_dist = len(edges)
    for i in range(rows.size):
        if rows[i] < 0 or np.isnan(dm[i]):
            continue
        prof = profiles[rows[i]]
        if k[i] == 0:
            want[i] = 10.0 ** (0.2 * (dm[i] - edges[0])) * prof[:, 0]
        elif k[i] == n_dist:
            want[i] = prof[:, -1]
        else:
            a = (edges[k[i]] - dm[i]) / (edges[k[i]] - edges[k[i] - 1])
            want[i] = (1.0 - a) * prof[:, k[i]] + a * prof[:, k[i] - 1]
    return want


def hdf5_content(path):
    """Every dataset (values, dtype, chunks, filters) and attribute of an HDF5 file."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            attrs = {k: np.asarray(v) for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj[()], obj.dtype, obj.chunks, obj.compression,
                             obj.compression_opts, obj.shuffle, attrs)
            else:
                out[name] = attrs
        f.visititems(visit)
    return out


def assert_same_hdf5(a, b, layout: bool = True):
    """Assert two HDF5 files hold the same datasets (values, dtype; with ``layout`` also chunks
    and filters) and attributes."""
    ca, cb = hdf5_content(a), hdf5_content(b)
    assert sorted(ca) == sorted(cb)
    for name in ca:
        if isinstance(ca[name], dict):
            assert sorted(ca[name]) == sorted(cb[name]), name
            for k in ca[name]:
                np.testing.assert_array_equal(ca[name][k], cb[name][k], err_msg=f"{name}.{k}")
            continue
        np.testing.assert_array_equal(ca[name][0], cb[name][0], err_msg=name)
        assert ca[name][1] == cb[name][1], name
        if layout:
            assert ca[name][2:] == cb[name][2:], name
