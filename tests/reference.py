"""Independent reference computations shared by the tests (plain numpy, dustmaps' formulas)."""

from __future__ import annotations

import contextlib
import io
import warnings

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
