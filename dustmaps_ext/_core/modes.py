"""Query modes, percentiles, random draws and flag layouts shared by every voxel map.

The vocabulary is dustmaps': ``mean``, ``median``, ``samples``, ``random_sample``,
``random_sample_per_pix`` and ``percentile`` (with ``pct``).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["ALL_MODES", "BAYESTAR_MODES", "check_mode", "parse_pct", "as_generator", "draw_key",
           "per_pixel_draw", "FLAGS_WITH_DISTANCE", "FLAGS_WITHOUT_DISTANCE",
           "BAYESTAR_FLAGS_WITH_DISTANCE", "BAYESTAR_FLAGS_WITHOUT_DISTANCE"]

#: Every mode of a map with posterior samples, in dustmaps' order.
ALL_MODES = ("random_sample", "random_sample_per_pix", "samples", "median", "mean", "percentile")

#: Every mode of Bayestar19, in dustmaps' order (``best``: the best fit of the file).
BAYESTAR_MODES = ("random_sample", "random_sample_per_pix", "samples", "median", "mean", "best",
                  "percentile")

#: Flag fields returned with distances.
FLAGS_WITH_DISTANCE = np.dtype([("converged", bool), ("infilled", bool), ("reliable_dist", bool)])
#: Flag fields returned without distances. dustmaps 1.0.14 rounds the distance moduli to
#: float16; here they keep the file's float32 precision.
FLAGS_WITHOUT_DISTANCE = np.dtype([("converged", bool), ("infilled", bool),
                                   ("min_reliable_distmod", np.float32),
                                   ("max_reliable_distmod", np.float32)])
#: Bayestar19's flag fields (dustmaps' ``BayestarQuery``): no ``infilled``.
BAYESTAR_FLAGS_WITH_DISTANCE = np.dtype([("converged", bool), ("reliable_dist", bool)])
BAYESTAR_FLAGS_WITHOUT_DISTANCE = np.dtype([("converged", bool),
                                            ("min_reliable_distmod", np.float32),
                                            ("max_reliable_distmod", np.float32)])


def check_mode(mode: str, valid_modes) -> str:
    """Return ``mode`` if it is one of ``valid_modes``, else raise a ValueError naming them."""
    if not isinstance(mode, str) or mode not in valid_modes:
        raise ValueError(f"{mode!r} is not a valid mode; valid modes are: "
                         + ", ".join(repr(m) for m in valid_modes))
    return mode


def parse_pct(mode: str, pct):
    """Check ``pct`` for the percentile mode.

    Returns
    -------
    (pct, scalar) : (float or numpy.ndarray or None, bool)
        ``pct`` as a float (scalar) or a 1D float64 array, and whether it was a scalar;
        ``(None, True)`` for the other modes.

    Raises
    ------
    ValueError
        If ``pct`` is missing, not numeric, not finite, or outside [0, 100].
    """
    if mode != "percentile":
        return None, True
    if pct is None:
        raise ValueError("mode 'percentile' needs pct: a number or a list of numbers in [0, 100]")
    try:
        arr = np.asarray(pct, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"pct must be a number or a list of numbers in [0, 100]; got {pct!r}") from None
    if arr.ndim > 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any((arr < 0) | (arr > 100)):
        raise ValueError(f"pct must be a number or a list of numbers in [0, 100]; got {pct!r}")
    if arr.ndim == 0:
        return float(arr), True
    return arr, False


def as_generator(rng) -> np.random.Generator:
    """A numpy Generator from None (fresh entropy), an int seed or a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def draw_key(rng: np.random.Generator) -> int:
    """A random key for :func:`per_pixel_draw` (one per query)."""
    return int(rng.integers(0, 2 ** 63, dtype=np.int64))


def per_pixel_draw(rows: np.ndarray, n_choices: int, key: int) -> np.ndarray:
    """One draw in [0, n_choices) per row, shared by coordinates that fall in the same row.

    Rows are hashed with ``key`` (see :func:`draw_key`), so the cost is proportional to the
    number of coordinates, not to the number of pixels of the map, and a query answered in
    chunks draws the same sample for a row in every chunk.
    """
    out = np.empty(rows.shape, dtype=np.int64)
    _hash_draw(np.ascontiguousarray(rows, dtype=np.int64).ravel(), np.uint64(key),
               np.uint64(n_choices), out.ravel())
    return out


@numba.njit(cache=True, nogil=True)
def _hash_draw(rows, key, n_choices, out):
    for i in range(rows.size):
        z = np.uint64(rows[i]) ^ key  # splitmix64 finaliser
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        out[i] = np.int64(z % n_choices)
