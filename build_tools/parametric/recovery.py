"""How well a parametric build recovers the simulated galaxy it was made from.

Two figures (issue 6, point 5):

* the median of ``|E_fit - E_true|`` over sightlines and distances inside each sightline's
  reliable range (``0 < d <= max_distance``), split at ``|b| = 10`` deg;
* the fraction of injected clouds found: for every fitted sightline and every cloud of the
  galaxy whose column along the sightline centre is at least ``min_column`` (0.05 mag)
  and whose distance lies inside the reliable range, the cloud counts as found when a
  fitted component (column >= the fit's drop threshold) has its centre
  ``distance_k + 2 span_k + bubble`` within ``tolerance`` (15%) of the cloud's distance.
"""

from __future__ import annotations

import numpy as np

from dustmaps_ext.parametric_model import CLOUD_MIN_COLUMN

from ..galaxy import SimulatedGalaxy
from .model import cloud_centres, evaluate_model
from .sightlines import sightline_centres

__all__ = ["recovery_metrics"]


def recovery_metrics(results: dict, galaxy: SimulatedGalaxy, *, n_grid: int = 40,
                     d_min_kpc: float = 0.05, b_split_deg: float = 10.0,
                     min_column: float = 0.05, tolerance: float = 0.15,
                     min_component: float = CLOUD_MIN_COLUMN) -> dict:
    """Compare per-sightline build results with the galaxy's truth.

    Parameters
    ----------
    results : dict
        Per-sightline results (``nside``, ``ipix``, ``b_lim``, ``params``,
        ``max_distance``, ``fitted``), as returned by
        :func:`~dustmaps_ext_build.parametric.pipeline.build_parametric_map`.
    galaxy : SimulatedGalaxy
        The truth.
    n_grid : int
        Distances per sightline, evenly spaced from ``d_min_kpc`` to ``max_distance``.
    b_split_deg : float
        Latitude separating the low- and high-latitude figures.
    min_column, tolerance, min_component : float
        Cloud detection settings (see the module notes).

    Returns
    -------
    dict
        ``median_abs_err_low_b``, ``median_abs_err_high_b`` (mag; NaN when no sightline),
        ``p90_abs_err_low_b``, ``p90_abs_err_high_b``, ``n_sightlines_low_b``,
        ``n_sightlines_high_b``, ``clouds_injected``, ``clouds_found``,
        ``cloud_recovery`` (fraction, NaN when no cloud is in range), and
        ``cloud_distance_rel_err`` (array, for the found clouds).
    """
    fitted = np.asarray(results["fitted"], dtype=bool)
    nside = np.asarray(results["nside"])[fitted]
    ipix = np.asarray(results["ipix"])[fitted]
    params = np.asarray(results["params"])[fitted]
    b_lim = np.asarray(results["b_lim"])[fitted]
    dmax = np.asarray(results["max_distance"])[fitted]
    l, b = sightline_centres(nside, ipix)
    errs = {True: [], False: []}
    counts = {True: 0, False: 0}
    injected = found = 0
    rel_err = []
    for i in range(nside.size):
        if dmax[i] <= d_min_kpc:
            continue
        grid = np.linspace(d_min_kpc, dmax[i], n_grid)
        truth = galaxy.cumulative_profile([l[i]], [b[i]], grid)[0]
        fit = evaluate_model(params[i], b_lim[i], grid)
        low = abs(b[i]) < b_split_deg
        errs[low].append(np.abs(fit - truth))
        counts[low] += 1
        centres = cloud_centres(params[i])[params[i][5::3] >= min_component]
        for dist, _ in galaxy.cloud_distances_along(l[i], b[i], min_column):
            if dist > dmax[i]:
                continue
            injected += 1
            if centres.size:
                rel = np.min(np.abs(centres - dist)) / dist
                if rel <= tolerance:
                    found += 1
                    rel_err.append(rel)

    def stat(low, fn):
        return float(fn(np.concatenate(errs[low]))) if errs[low] else float("nan")

    return {
        "median_abs_err_low_b": stat(True, np.median),
        "median_abs_err_high_b": stat(False, np.median),
        "p90_abs_err_low_b": stat(True, lambda a: np.percentile(a, 90)),
        "p90_abs_err_high_b": stat(False, lambda a: np.percentile(a, 90)),
        "n_sightlines_low_b": counts[True],
        "n_sightlines_high_b": counts[False],
        "clouds_injected": injected,
        "clouds_found": found,
        "cloud_recovery": found / injected if injected else float("nan"),
        "cloud_distance_rel_err": np.asarray(rel_err),
    }
