"""Random sky positions for the DECaPS tests: in and out of the footprint, at distances from
below the first distance edge to beyond the last."""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord


def decaps_coords(n: int, seed: int, with_distance: bool = True) -> SkyCoord:
    """``n`` Galactic coordinates with 230 < l < 370 deg, |b| < 12 deg (in and out of the
    DECaPS footprint) and, with ``with_distance``, 10**-2.5 to 10**2.2 kpc."""
    rng = np.random.default_rng(seed)
    l = rng.uniform(230.0, 370.0, n) % 360.0  # noqa: E741  (in and out of the footprint)
    b = rng.uniform(-12.0, 12.0, n)
    if not with_distance:
        return SkyCoord(l * u.deg, b * u.deg, frame="galactic")
    d = 10.0 ** rng.uniform(-2.5, 2.2, n)  # below the first edge to beyond the last
    return SkyCoord(l * u.deg, b * u.deg, distance=d * u.kpc, frame="galactic")
