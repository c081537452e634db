"""How well a parametric build recovers the simulated galaxy it was made from.

Figures, for every fitted sightline (compared along its centre):

* ``|E_fit - E_true|`` on ``n_grid`` distances from ``d_min_kpc`` to the sightline's
  ``max_distance``: median and 90th percentile, split at ``|b| = 10`` deg, next to two
  baselines on the same points: a map of zeros (``|E_true|``; a map that knows nothing),
  and the truth averaged over the sightline's own HEALPix pixel (what a perfect map at the
  sightline's resolution would score: the part of the error that only a finer resolution
  can remove);
* the (sightline, cloud) pairs: every cloud of the galaxy whose column along the sightline
  centre is at least ``min_column`` (0.05 mag) and whose distance lies inside the reliable
  range. A cloud's fitted column is the sum of the columns of the fitted components
  (column >= ``min_component``) whose centres ``distance_k + 2 span_k + bubble`` lie
  within ``tolerance`` (15%) of the cloud's distance. The cloud is *found* when that set is
  not empty, and *recovered* when moreover the fitted column is within ``column_tolerance``
  (30%) of the cloud's true column along the sightline.

Given the star catalog of the build, each pair is also marked *locatable* when the stars
of the sightline's fit (:func:`~dustmaps_ext_build.parametric.pipeline.neighbour_stars`)
pin the cloud's distance down to the tolerance: the nearest star in front of the cloud
(``a``) and the nearest behind it (``b``) satisfy ``(b - a) / (b + a) <= tolerance``. Between
two consecutive stars the data say only that the rise happens somewhere in the gap, and
``(b - a) / (b + a)`` is the smallest largest relative error that any placement in the gap
can promise (reached at ``2 a b / (a + b)``); with no star in front of the cloud (``a = 0``)
no placement can promise anything. Pairs that are not locatable test where the fit
guesses, not what the data say; the figures are given over all pairs and over the
locatable ones. For each pair, ``hit_bound`` is the probability that the best placement in
its gap lands within the tolerance when clouds lie in the gap as the prior of
:func:`~dustmaps_ext_build.parametric.fit.most_probable_in_gap` says (1 for a locatable
pair; the gap in front of the nearest star starts at the fit's bubble wall): its mean over
the pairs, ``cloud_recovery_bound``, is the fraction of pairs that a fit can be expected to
find, in distance, when the stars are those of the build.
"""

from __future__ import annotations

import healpy as hp
import numpy as np

from dustmaps_ext.parametric_model import CLOUD_MIN_COLUMN

from ..galaxy import SimulatedGalaxy
from .catalog import StarCatalog
from .fit import FitConfig, gap_hit_probability, most_probable_in_gap
from .model import cloud_centres, evaluate_model
from .pipeline import ParametricBuildConfig, neighbour_stars, unit_vectors
from .sightlines import sightline_centres

__all__ = ["recovery_metrics", "pixel_average_profile", "miss_causes", "recovered_against",
           "MISS_CAUSES"]

#: Causes of a missed (sightline, cloud) pair, in the order :func:`miss_causes` tests them.
MISS_CAUSES = (
    "not locatable: the stars leave a gap around the cloud wider than the tolerance",
    "locatable, but no fitted component within the distance tolerance",
    "column too high, diffuse density at or above its Table 3 bound",
    "column too high",
    "column too low",
)

#: The pixel-averaged truth samples each sightline pixel at this many sub-pixels (4^k).
_SUBPIXEL_LEVELS = 2


def pixel_average_profile(galaxy: SimulatedGalaxy, nside: int, ipix: int,
                          grid: np.ndarray) -> np.ndarray:
    """The galaxy's cumulative E(B-V) at ``grid`` averaged over a NESTED HEALPix pixel.

    The pixel is sampled at the centres of its ``4**2 = 16`` sub-pixels.
    """
    sub = int(ipix) * 4 ** _SUBPIXEL_LEVELS + np.arange(4 ** _SUBPIXEL_LEVELS)
    l, b = hp.pix2ang(int(nside) * 2 ** _SUBPIXEL_LEVELS, sub, nest=True, lonlat=True)
    return galaxy.cumulative_profile(l, b, grid).mean(axis=0)


def recovery_metrics(results: dict, galaxy: SimulatedGalaxy, *, n_grid: int = 40,
                     d_min_kpc: float = 0.05, b_split_deg: float = 10.0,
                     min_column: float = 0.05, tolerance: float = 0.15,
                     column_tolerance: float = 0.30,
                     min_component: float = CLOUD_MIN_COLUMN,
                     catalog: StarCatalog | None = None,
                     config: ParametricBuildConfig | None = None) -> dict:
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
    min_column, tolerance, column_tolerance, min_component : float
        Cloud detection settings (see the module notes).
    catalog : StarCatalog, optional
        The stars of the build: marks the locatable pairs (see the module notes). Without
        it every pair counts as locatable.
    config : ParametricBuildConfig, optional
        The build's settings (which stars take part in a sightline's fit; default: the
        paper's).

    Returns
    -------
    dict
        For ``X`` in ``low_b``/``high_b``: ``median_abs_err_X``, ``p90_abs_err_X`` (the
        fit), ``median_zero_map_X``, ``p90_zero_map_X`` (a map of zeros),
        ``median_pixel_truth_X``, ``p90_pixel_truth_X`` (the truth averaged over the
        pixel), ``n_sightlines_X`` (NaN figures when no sightline). Clouds:
        ``clouds_injected``, ``clouds_found`` (distance within ``tolerance``),
        ``clouds_recovered`` (and column within ``column_tolerance``),
        ``cloud_recovery`` (distance only) and ``cloud_full_recovery`` (both; fractions,
        NaN when no cloud is in range), ``clouds_locatable`` and the same two fractions
        over the locatable pairs (``cloud_recovery_locatable``,
        ``cloud_full_recovery_locatable``), ``cloud_recovery_bound`` (the mean
        ``hit_bound``), ``cloud_distance_rel_err`` (array, found
        clouds), and ``pairs``: a structured array with one row per (sightline, cloud) pair
        (``sightline``, ``distance``, ``column``, ``rel_distance_err`` (nearest fitted
        centre, inf without one), ``fitted_column``, ``found``, ``recovered``,
        ``locatable``, ``star_gap`` (``(b - a) / (b + a)`` of the stars around the cloud;
        1 without a star in front or behind, NaN without a catalog), ``star_front`` and
        ``star_behind`` (``a``, 0 without a star in front, and ``b``, inf without one
        behind; NaN without a catalog), ``hit_bound`` (see the module notes; 1 without a
        catalog), ``diffuse_at_bound`` (the fitted diffuse density is at or
        above Table 3's bound), ``truth_rise_cloud`` (the true E(B-V) rise across the cloud,
        ``E_true(d + 2 r) - E_true(d - 2 r)`` with ``r`` its radius: the cloud plus the
        diffuse dust inside it), ``truth_rise_window`` (the true rise over the distance
        window ``(1 -/+ tolerance) d`` in which components count as the cloud's)), for
        looking at the misses (:func:`miss_causes`, :func:`recovered_against`).
    """
    fitted = np.asarray(results["fitted"], dtype=bool)
    nside = np.asarray(results["nside"])[fitted]
    ipix = np.asarray(results["ipix"])[fitted]
    params = np.asarray(results["params"])[fitted]
    b_lim = np.asarray(results["b_lim"])[fitted]
    dmax = np.asarray(results["max_distance"])[fitted]
    index = np.flatnonzero(fitted)
    l, b = sightline_centres(nside, ipix)
    star_gap = _star_gaps(catalog, config, nside, l, b) if catalog is not None else None
    fit_config = config.fit if config is not None else FitConfig()
    rho_max = fit_config.rho_bounds[1]
    errs = {(low, kind): [] for low in (True, False) for kind in ("fit", "zero", "pixel")}
    counts = {True: 0, False: 0}
    pairs = []
    for i in range(nside.size):
        if dmax[i] <= d_min_kpc:
            continue
        grid = np.linspace(d_min_kpc, dmax[i], n_grid)
        truth = galaxy.cumulative_profile([l[i]], [b[i]], grid)[0]
        fit = evaluate_model(params[i], b_lim[i], grid)
        low = bool(abs(b[i]) < b_split_deg)
        errs[low, "fit"].append(np.abs(fit - truth))
        errs[low, "zero"].append(np.abs(truth))
        errs[low, "pixel"].append(np.abs(pixel_average_profile(galaxy, nside[i], ipix[i], grid)
                                         - truth))
        counts[low] += 1
        keep = params[i][5::3] >= min_component
        centres = cloud_centres(params[i])[keep]
        columns = params[i][5::3][keep]
        for dist, col, radius in galaxy.cloud_crossings(l[i], b[i], min_column):
            if dist > dmax[i]:
                continue
            rel = np.abs(centres - dist) / dist
            near = rel <= tolerance
            fitted_col = float(columns[near].sum())
            found = bool(near.any())
            front, behind = star_gap(i, dist) if star_gap is not None else (np.nan, np.nan)
            gap = (float((behind - front) / (behind + front))
                   if front > 0 and np.isfinite(behind) else 1.0 if star_gap is not None
                   else float("nan"))
            locatable = bool(star_gap is None or gap <= tolerance)
            hit = 1.0 if locatable else _best_hit(front, behind, params[i][0], b_lim[i],
                                                  tolerance, fit_config)
            rises = np.diff(galaxy.cumulative_profile(
                [l[i]], [b[i]], [max(dist - 2.0 * radius, 0.0), dist + 2.0 * radius,
                                 (1.0 - tolerance) * dist, (1.0 + tolerance) * dist])[0])
            pairs.append((index[i], dist, col, float(rel.min()) if rel.size else np.inf,
                          fitted_col, found, False, locatable, gap, front, behind, hit,
                          bool(params[i][2] >= rho_max), float(rises[0]), float(rises[2])))
    pairs = np.array(pairs, dtype=[("sightline", np.int64), ("distance", float),
                                   ("column", float), ("rel_distance_err", float),
                                   ("fitted_column", float), ("found", bool),
                                   ("recovered", bool), ("locatable", bool),
                                   ("star_gap", float), ("star_front", float),
                                   ("star_behind", float), ("hit_bound", float),
                                   ("diffuse_at_bound", bool),
                                   ("truth_rise_cloud", float), ("truth_rise_window", float)])
    pairs["recovered"] = recovered_against(pairs, "column", column_tolerance)

    out = {}
    for low, tag in ((True, "low_b"), (False, "high_b")):
        for kind, name in (("fit", "abs_err"), ("zero", "zero_map"), ("pixel", "pixel_truth")):
            values = np.concatenate(errs[low, kind]) if errs[low, kind] else None
            out[f"median_{name}_{tag}"] = (float(np.median(values)) if values is not None
                                           else float("nan"))
            out[f"p90_{name}_{tag}"] = (float(np.percentile(values, 90))
                                        if values is not None else float("nan"))
        out[f"n_sightlines_{tag}"] = counts[low]
    injected = int(pairs.size)
    loc = pairs[pairs["locatable"]]
    out.update(
        clouds_injected=injected,
        clouds_found=int(pairs["found"].sum()),
        clouds_recovered=int(pairs["recovered"].sum()),
        cloud_recovery=float(pairs["found"].mean()) if injected else float("nan"),
        cloud_full_recovery=float(pairs["recovered"].mean()) if injected else float("nan"),
        clouds_locatable=int(loc.size),
        cloud_recovery_locatable=float(loc["found"].mean()) if loc.size else float("nan"),
        cloud_full_recovery_locatable=(float(loc["recovered"].mean()) if loc.size
                                       else float("nan")),
        cloud_recovery_bound=float(pairs["hit_bound"].mean()) if injected else float("nan"),
        cloud_distance_rel_err=pairs["rel_distance_err"][pairs["found"]],
        pairs=pairs,
    )
    return out


def recovered_against(pairs: np.ndarray, reference: str = "column",
                      column_tolerance: float = 0.30) -> np.ndarray:
    """Which pairs of :func:`recovery_metrics` are found with a fitted column within
    ``column_tolerance`` of ``pairs[reference]``.

    ``reference="column"`` is the criterion of :func:`recovery_metrics` (the cloud's own
    column); ``"truth_rise_cloud"`` and ``"truth_rise_window"`` compare the components
    with the true rise of E(B-V) across the cloud or across the distance window instead,
    i.e. they count the diffuse dust there as part of what the components must carry
    (the model's diffuse term cannot hold a disk denser than its Table 3 bound).
    """
    ref = pairs[reference]
    return pairs["found"] & (np.abs(pairs["fitted_column"] - ref) <= column_tolerance * ref)


def miss_causes(pairs: np.ndarray, column_tolerance: float = 0.30) -> dict[str, int]:
    """Count the missed pairs of :func:`recovery_metrics` by cause (:data:`MISS_CAUSES`).

    A pair that is not recovered is put under the first cause that applies: not
    locatable; no component within the distance tolerance; the fitted column above
    ``1 + column_tolerance`` times the true one, with the diffuse density at or above its
    Table 3 bound (the diffuse dust around the cloud went into the cloud components) or
    not;
    the fitted column too low (the rest of the cases).
    """
    counts = dict.fromkeys(MISS_CAUSES, 0)
    for row in pairs[~pairs["recovered"]]:
        if not row["locatable"]:
            cause = MISS_CAUSES[0]
        elif not row["found"]:
            cause = MISS_CAUSES[1]
        elif row["fitted_column"] > (1.0 + column_tolerance) * row["column"]:
            cause = MISS_CAUSES[2] if row["diffuse_at_bound"] else MISS_CAUSES[3]
        else:
            cause = MISS_CAUSES[4]
        counts[cause] += 1
    return counts


def _best_hit(front, behind, bubble, b_lim_deg, tolerance, fit_config):
    """Prior probability that the best placement in the gap (front, behind) lands within
    ``tolerance`` of the cloud (the gap in front of the nearest star starts at the bubble
    wall; 0 without a star behind)."""
    if not np.isfinite(behind):
        return 0.0
    a = max(front, bubble) if max(front, bubble) < behind else front
    sin_b = abs(float(np.sin(np.radians(b_lim_deg))))
    best = most_probable_in_gap(a, behind, tolerance, sin_b, fit_config.cloud_scale_height)
    return gap_hit_probability(a, behind, best, tolerance, sin_b, fit_config.cloud_scale_height)


def _star_gaps(catalog, config, nside, l_deg, b_deg):
    """A function ``(sightline i, distance) -> (a, b)`` for the stars of each sightline's
    fit: ``a`` the nearest star in front of the distance (0 if none), ``b`` the nearest
    behind it (inf if none)."""
    from scipy.spatial import cKDTree

    config = config or ParametricBuildConfig()
    star_vectors = unit_vectors(catalog.l, catalog.b)
    tree = cKDTree(star_vectors) if len(catalog) else None
    centres = unit_vectors(l_deg, b_deg)
    distance = np.asarray(catalog.distance, dtype=np.float64)
    cache = {}

    def gap(i, dist):
        if i not in cache:
            sel = neighbour_stars(tree, star_vectors, centres[i], int(nside[i]), config)[0]
            cache[i] = np.sort(distance[sel])
        x = cache[i]
        k = int(np.searchsorted(x, dist))
        return (float(x[k - 1]) if k > 0 else 0.0), (float(x[k]) if k < x.size else np.inf)

    return gap
