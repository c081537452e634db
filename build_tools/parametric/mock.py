"""Mock star catalogs drawn from the simulated galaxy, with realistic measurement errors.

Stars come from :func:`dustmaps_ext_build.galaxy.draw_observed_stars` (true positions and
reddening plus Gaia-like distance errors and LAMOST/XP-like E(B-V) errors), and are turned
into a :class:`~dustmaps_ext_build.parametric.catalog.StarCatalog` that the build reads like a
real one.
"""

from __future__ import annotations

import numpy as np

from ..galaxy import SimulatedGalaxy, draw_observed_stars
from .catalog import StarCatalog

__all__ = ["mock_catalog"]


def mock_catalog(galaxy: SimulatedGalaxy, n: int, seed: int | np.random.SeedSequence, *,
                 l_range_deg=(0.0, 360.0), b_range_deg=(-90.0, 90.0),
                 d_range_kpc=(0.05, 8.0), return_truth: bool = False, **error_kwargs):
    """A star catalog drawn in ``galaxy``, ready for the parametric build.

    Parameters
    ----------
    galaxy : SimulatedGalaxy
        The known dust distribution.
    n : int
        Number of stars drawn before the parallax quality cut (see
        :func:`~dustmaps_ext_build.galaxy.draw_observed_stars`).
    seed : int or numpy.random.SeedSequence
        Seed of the draw (the same seed gives the same catalog).
    l_range_deg, b_range_deg, d_range_kpc : tuple of float
        Sky patch and true-distance range.
    return_truth : bool
        Also return the true distances and reddening of the kept stars.
    **error_kwargs
        Passed to :func:`~dustmaps_ext_build.galaxy.draw_observed_stars` (error model settings).

    Returns
    -------
    StarCatalog, or (StarCatalog, dict) with ``d_true`` and ``ebv_true`` when
    ``return_truth``.
    """
    rng = np.random.default_rng(seed)
    stars = draw_observed_stars(galaxy, n, rng, l_range_deg=l_range_deg,
                                b_range_deg=b_range_deg, d_range_kpc=d_range_kpc,
                                **error_kwargs)
    cat = StarCatalog.from_arrays({
        "l": stars["l"], "b": stars["b"], "ebv": stars["ebv"], "ebv_err": stars["ebv_err"],
        "distance": stars["distance"], "distance_err_lo": stars["distance_err_lo"],
        "distance_err_hi": stars["distance_err_hi"]}, source="mock catalog", drop_invalid=False)
    if return_truth:
        return cat, {"d_true": stars["d"], "ebv_true": stars["ebv_true"]}
    return cat
