"""Fitting one sightline as Wang et al. (2025, §3.3) do.

Steps, for the stars of one sightline (its own and its weighted neighbours):

1. L-BFGS-B fits of the eq. 15 loss (weighted L1 + ``lam`` x L1 on the cloud columns,
   each column's penalty weighed by the share of the stars' weight behind it:
   ``FitConfig.penalty_share_exp``) within the Table 3 bounds, the bound on the diffuse
   density made soft (rho may exceed 0.04 mag/kpc, and the diffuse column it adds beyond
   the bound pays the cloud penalty: ``FitConfig.rho_soft_limit``; not in the paper), from
   three fixed sets of starting cloud distances and one
   set placed at the steepest rises of the stars' reddening, with the diffuse density the
   rest of their rise implies (:func:`data_start_parameters`);
2. the start with the smallest residual sigma (weighted standard deviation) wins;
3. its cloud components are placed by the stars (:func:`place_components`: moved to the
   best gap between stars, merged where no star separates them, centred in the gap that
   holds them) and the fit redone from there; this step is not in the paper: L-BFGS-B
   cannot move a narrow rise that no star lies on (the gradient is zero there), and the
   paper's four starts leave such components where they began;
4. iterative clipping: stars more than 3 sigma from the fit are removed and the fit is
   redone from the current parameters, until no more star is removed; then step 3 once
   more on the kept stars;
5. with the stars' distance errors (``distance_err``), the cloud rises are placed and
   sized once more under a likelihood in which each star may lie on either side of a
   rise (:func:`.distance_errors.refine_rises`; ``FitConfig.distance_error_model``; not
   in the paper): the stars in front of a far cloud, far more numerous than those behind
   it, otherwise push its rise outwards and its column down;
6. cloud components with a column under 0.001 mag, or whose centre lies beyond the
   farthest kept star (no star sees even half of their rise), are dropped (column set
   to 0);
7. the residual sigmas (overall and for 0-2, 1-4 and > 2 kpc) and the maximum reliable
   distance come from the stars of the line of sight itself (``reliable``: the stars of
   the sightline's pixel, not its weighted neighbours) that survived the clipping: the
   sigmas are the Gaussian sigmas of their residuals (:func:`clipped_gaussian_sigma`),
   the maximum reliable distance is the farthest of those stars (§4.1).

Parameters are those of the released table (:data:`~dustmaps_ext_build.parametric.model.PARAM_NAMES`):
a cloud's ``distance_k`` is measured from the bubble wall to where the cloud begins, its
centre being ``distance_k + 2 span_k + bubble``. Table 3 gives the bounds in the paper's
terms (cloud centre in [d_bubble, 15] kpc, extent in [0.01, 0.5 x centre] kpc); in the
released parametrisation they become ``distance_k`` in [0, 15] and ``span_k`` in
[0.01, 7.5], and the centre is then >= bubble + 2 span_k, so both of the paper's
constraints hold automatically (``span_k <= 0.5 centre`` always).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np
from scipy.optimize import minimize

from dustmaps_ext.parametric_model import CLOUD_MIN_COLUMN

from .distance_errors import refine_rises
from .model import (N_CLOUDS, N_PARAMS, _loss_grad_kernel, _model_kernel,
                    _weighted_diffuse_kernel)

__all__ = ["FitConfig", "SightlineFit", "fit_sightline", "residual_sigma", "clipped_gaussian_sigma",
           "data_start_centres", "data_start_parameters", "initial_parameters", "parameter_bounds",
           "place_components", "most_probable_in_gap", "gap_hit_probability",
           "GAP_PLACEMENTS"]

#: Half-width of a cloud component's rise in units of its span: the logistic
#: ``S(5 (x - m) / span)`` goes from 4.7% to 95.3% of the column over ``m -+ 0.6 span``.
RISE_HALF_WIDTH = 0.6

#: The paper gives four sets of four starting cloud distances without listing them; these
#: three fixed sets (kpc, cloud centres) spread the starts over the near, middle and far
#: disk, and the fourth start is placed on the data (``FitConfig.data_start``).
DEFAULT_START_DISTANCES = (
    (0.2, 0.5, 1.0, 2.0),
    (0.3, 0.8, 1.5, 3.0),
    (0.5, 1.2, 2.5, 5.0),
)

#: Where :func:`place_components` puts a rise that lies in a gap between stars
#: (``FitConfig.gap_placement``): ``"prior"`` the most probable point under the prior of
#: cloud distances (:func:`most_probable_in_gap`, also in the gap in front of the nearest
#: star), ``"minimax"`` the point of smallest worst-case relative error ``2 a b / (a + b)``
#: (gaps with a star in front only), ``"none"`` where the optimiser left it.
GAP_PLACEMENTS = ("prior", "minimax", "none")


@dataclass(frozen=True)
class FitConfig:
    """Settings of the sightline fit (defaults: Wang et al. 2025, §3.3 and Table 3).

    Distances in kpc, densities in mag/kpc, columns in mag.
    """

    #: weight of the L1 penalty on the cloud columns (eq. 15; the paper uses 0.1:
    #: ``FitConfig(lam=0.1)`` or ``--lam 0.1``)
    lam: float = 0.05
    #: each column's penalty is ``lam |Cum_EBV_k| F_k^penalty_share_exp``, ``F_k`` the share
    #: of the stars' weight behind cloud ``k`` (0: eq. 15 as printed, every column
    #: penalised alike). Only the stars behind a cloud support its column: under eq. 15 a
    #: cloud survives only where their weighted residuals outweigh ``lam`` (summed weight
    #: above ``lam``), which the few low-weight stars behind a cloud at 3-4 kpc do not
    #: reach. With the exponent 1/2 the threshold scales as the random imbalance of the
    #: residuals of those stars (sqrt of their number), so a spurious component is as
    #: unlikely far as near; a cloud in front of all the stars is penalised as in eq. 15
    penalty_share_exp: float = 0.5
    bubble_init: float = 0.1
    h_init: float = 0.12
    rho_init: float = 0.02
    bubble_bounds: tuple = (0.05, 1.0)
    h_bounds: tuple = (0.05, 0.5)
    #: Table 3's range of the diffuse density rho (mag/kpc); see ``rho_soft_limit``
    rho_bounds: tuple = (0.0, 0.04)
    #: Table 3's upper bound on rho made soft: rho may rise to this limit (mag/kpc), but
    #: the diffuse dust beyond the bound pays the L1 penalty that cloud dust pays
    #: (``lam`` x the excess diffuse column out to the farthest star). ``None`` keeps
    #: ``rho_bounds`` as a hard bound, as the paper does. Galactic dust in the plane is
    #: denser than the bound (tenths of a magnitude of E(B-V) per kpc); with the hard
    #: bound the cloud components nearest each cloud take that dust and their columns
    #: come out too high
    rho_soft_limit: float | None = 1.0
    distance_bounds: tuple = (0.0, 15.0)
    span_bounds: tuple = (0.01, 7.5)
    cum_bounds: tuple = (0.0, 3.0)
    #: fixed sets of four starting cloud centres (kpc); span starts at 0.1 x centre
    start_distances: tuple = field(default=DEFAULT_START_DISTANCES)
    #: the "approximate maximum extinction" of Table 3 is this percentile of the stars' E(B-V)
    ebv_max_percentile: float = 95.0
    #: add a start whose cloud centres and columns are the steepest rises of the stars'
    #: reddening and whose diffuse density is what the rest of their rise implies
    #: (:func:`data_start_parameters`); missing centres are taken from the last fixed set
    data_start: bool = True
    clip_sigma: float = 3.0
    #: place the cloud components by the stars (:func:`place_components`) and refit,
    #: after the choice of the start and after the clipping; each new fit is kept unless
    #: its loss exceeds the old one by more than ``gap_loss_tolerance`` (relative)
    place_in_gaps: bool = True
    gap_loss_tolerance: float = 1e-3
    #: where a rise lying in a gap between stars is put (:data:`GAP_PLACEMENTS`): by
    #: default at the point most likely to lie within ``placement_tolerance`` of the
    #: cloud under the prior of clouds spread uniformly through a disk of scale height
    #: ``cloud_scale_height`` (:func:`most_probable_in_gap`)
    gap_placement: str = "prior"
    #: relative distance precision that the ``"prior"`` placement maximises the
    #: probability of (15%: the precision asked of a found cloud)
    placement_tolerance: float = 0.15
    #: scale height (kpc) of the clouds' disk in the ``"prior"`` placement (the starting
    #: scale height of the diffuse dust in Table 3; ``math.inf``: clouds uniform in volume)
    cloud_scale_height: float = 0.12
    #: clipping rounds (clip, refit) at most; stops earlier when no star is removed
    max_clip_iter: int = 10
    drop_below: float = CLOUD_MIN_COLUMN
    #: L-BFGS-B stopping rules (scipy's ``maxiter``, ``ftol``, ``gtol``) of the refits
    maxiter: int = 300
    ftol: float = 1e-6
    gtol: float = 1e-6
    #: ``ftol`` and ``gtol`` of the multi-start fits, which only pick the best start (the
    #: refits from it use ``ftol``/``gtol``): 1.4x faster at the same recovery
    start_ftol: float = 1e-5
    #: residual sigma of a distance range needs at least this many stars, else NaN
    min_stars_sigma: int = 3
    #: with the stars' distance errors, place and size the cloud rises last under a
    #: likelihood in which each star may lie on either side of a rise
    #: (:func:`.distance_errors.refine_rises`; not in the paper)
    distance_error_model: bool = True

    def __post_init__(self):
        if len(self.start_distances) < 1 or any(len(s) != N_CLOUDS for s in self.start_distances):
            raise ValueError(f"start_distances must be sets of {N_CLOUDS} distances")
        for name in ("bubble_bounds", "h_bounds", "rho_bounds", "distance_bounds",
                     "span_bounds", "cum_bounds"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name}: lower bound {lo} exceeds upper bound {hi}")
        if self.rho_soft_limit is not None and not self.rho_soft_limit >= self.rho_bounds[1]:
            raise ValueError(f"rho_soft_limit ({self.rho_soft_limit}) must be at least the "
                             f"upper bound of rho_bounds ({self.rho_bounds[1]})")
        if self.h_bounds[0] <= 0 or self.span_bounds[0] <= 0:
            raise ValueError("h and span lower bounds must be positive")
        if self.clip_sigma <= 0 or self.lam < 0:
            raise ValueError("clip_sigma must be positive and lam non-negative")
        if not self.penalty_share_exp >= 0:
            raise ValueError("penalty_share_exp must be non-negative")
        if self.max_clip_iter < 1:
            raise ValueError("max_clip_iter must be at least 1")
        if not self.start_ftol > 0:
            raise ValueError("start_ftol must be positive")
        if not self.gap_loss_tolerance >= 0:
            raise ValueError("gap_loss_tolerance must be non-negative")
        if self.gap_placement not in GAP_PLACEMENTS:
            raise ValueError(f"gap_placement must be one of {GAP_PLACEMENTS}, "
                             f"got {self.gap_placement!r}")
        if not 0.0 < self.placement_tolerance < 1.0:
            raise ValueError("placement_tolerance must lie in (0, 1)")
        if not self.cloud_scale_height > 0:
            raise ValueError("cloud_scale_height must be positive (math.inf: no disk)")


@dataclass(frozen=True)
class SightlineFit:
    """Result of :func:`fit_sightline`.

    Attributes
    ----------
    params : numpy.ndarray, shape (15,)
        Final parameters (components under ``drop_below`` have a zero column), clouds sorted
        by centre distance.
    sigma : float
        Gaussian sigma (:func:`clipped_gaussian_sigma`) of the residuals of the line of sight's own
        (``reliable``) stars kept by the clipping (mag); when the clipping kept none of
        them, of all kept stars.
    sigma_0_2, sigma_1_4, sigma_2_max : float
        The same for those stars at d < 2, 1 <= d < 4 and d >= 2 kpc (NaN with fewer than
        ``min_stars_sigma`` stars).
    max_distance : float
        Distance of the farthest of those stars (kpc).
    n_stars, n_clipped : int
        Stars fitted, and stars removed by the clipping.
    start_sigmas : numpy.ndarray
        Residual sigma of each multi-start fit.
    loss : float
        Value of the eq. 15 loss (with the penalty on the diffuse dust beyond Table 3's
        bound, ``FitConfig.rho_soft_limit``) at the end of the refit (before negligible
        components are dropped).
    kept : numpy.ndarray of bool, shape (n,)
        The stars that survived the clipping (in the order given).
    """

    params: np.ndarray
    sigma: float
    sigma_0_2: float
    sigma_1_4: float
    sigma_2_max: float
    max_distance: float
    n_stars: int
    n_clipped: int
    start_sigmas: np.ndarray
    loss: float
    kept: np.ndarray


def parameter_bounds(config: FitConfig) -> list[tuple[float, float]]:
    """L-BFGS-B bounds for the 15 parameters (rho up to ``rho_soft_limit`` when set)."""
    rho = config.rho_bounds
    if config.rho_soft_limit is not None:
        rho = (rho[0], config.rho_soft_limit)
    return [config.bubble_bounds, config.h_bounds, rho] + [
        config.distance_bounds, config.span_bounds, config.cum_bounds] * N_CLOUDS


def initial_parameters(config: FitConfig, start: int, ebv_max: float,
                       centres=None) -> np.ndarray:
    """Starting parameters of multi-start ``start`` (Table 3, released parametrisation).

    ``centres`` (kpc, one per cloud) replaces ``config.start_distances[start]``.
    """
    p = np.empty(N_PARAMS)
    p[0], p[1], p[2] = config.bubble_init, config.h_init, config.rho_init
    cum0 = float(np.clip(ebv_max / N_CLOUDS, *config.cum_bounds))
    if centres is None:
        centres = config.start_distances[start]
    for k, centre in enumerate(centres):
        span = float(np.clip(0.1 * centre, *config.span_bounds))
        p[3 + 3 * k] = np.clip(centre - 2.0 * span - config.bubble_init, *config.distance_bounds)
        p[4 + 3 * k] = span
        p[5 + 3 * k] = cum0
    return p


@numba.njit(cache=True, nogil=True)
def _isotonic_kernel(y, w, out):
    """Weighted least-squares non-decreasing fit of ``y`` (pool adjacent violators)."""
    n = y.size
    level = np.empty(n)
    weight = np.empty(n)
    size = np.empty(n, dtype=np.int64)
    m = 0
    for i in range(n):
        level[m], weight[m], size[m] = y[i], w[i], 1
        m += 1
        while m > 1 and level[m - 2] > level[m - 1]:
            tw = weight[m - 2] + weight[m - 1]
            level[m - 2] = (weight[m - 2] * level[m - 2] + weight[m - 1] * level[m - 1]) / tw
            weight[m - 2] = tw
            size[m - 2] += size[m - 1]
            m -= 1
    j = 0
    for b in range(m):
        for _ in range(size[b]):
            out[j] = level[b]
            j += 1


def _isotonic_steps(distance, ebv, weight, n_clouds, min_ratio):
    """The ``n_clouds`` largest steps, at least a factor ``min_ratio`` apart in distance, of
    the weighted isotonic fit of the stars: their centres (midpoints between the two stars
    around each step; NaN where there are fewer steps) and sizes (0 there), sorted by
    centre, and the fit's level at the farthest star."""
    order = np.argsort(distance, kind="stable")
    x = np.ascontiguousarray(distance, dtype=np.float64)[order]
    fitted = np.empty(x.size)
    _isotonic_kernel(np.ascontiguousarray(ebv, dtype=np.float64)[order],
                     np.ascontiguousarray(weight, dtype=np.float64)[order], fitted)
    step = np.diff(fitted)
    mid = 0.5 * (x[1:] + x[:-1])
    centres = np.full(n_clouds, np.nan)
    sizes = np.zeros(n_clouds)
    k = 0
    for j in np.argsort(step)[::-1]:
        if k == n_clouds or step[j] <= 0:
            break
        if np.all(np.abs(np.log(mid[j] / centres[:k])) >= np.log(min_ratio)):
            centres[k], sizes[k] = mid[j], step[j]
            k += 1
    order = np.argsort(centres)      # NaN last
    return centres[order], sizes[order], float(fitted[-1])


def data_start_centres(distance, ebv, weight, n_clouds: int = N_CLOUDS,
                       min_ratio: float = 1.25) -> np.ndarray:
    """Starting cloud centres (kpc) where the stars' reddening rises most steeply.

    The stars (sorted by distance) get a weighted non-decreasing (isotonic) fit; the
    ``n_clouds`` largest steps of that fit, at least a factor ``min_ratio`` apart in
    distance, give the centres (midpoints between the two stars around each step). Fewer
    steps than ``n_clouds`` leave NaN entries.
    """
    return _isotonic_steps(distance, ebv, weight, n_clouds, min_ratio)[0]


def data_start_parameters(distance, ebv, weight, b_lim_deg: float,
                          config: FitConfig | None = None) -> np.ndarray:
    """The start placed on the stars: clouds at the steepest rises, diffuse dust from the rest.

    The isotonic fit of :func:`data_start_centres` gives the cloud centres and, as their
    starting columns, the sizes of its steps (a missing step: a centre of the last fixed
    start and a zero column). The rest of its rise, ``E_far - sum(steps)`` with ``E_far``
    its level at the farthest star ``x_far`` (the dust in front of the nearest star and
    between the steps), sets the starting diffuse density at the starting scale height
    ``h``: ``rho = rest / (s (1 - exp(-x_far / s)))``, ``s = h / sin|b|``, within the
    bounds of rho (up to ``rho_soft_limit`` when the bound is soft). The fixed starts keep
    Table 3's starting density.

    Returns
    -------
    numpy.ndarray, shape (15,)
    """
    config = config or FitConfig()
    x = np.asarray(distance, dtype=np.float64)
    centres, sizes, level_far = _isotonic_steps(x, ebv, weight, N_CLOUDS, 1.25)
    missing = ~np.isfinite(centres)
    centres = np.where(missing, np.asarray(config.start_distances[-1], dtype=np.float64),
                       centres)
    p = initial_parameters(config, 0, 0.0, centres=centres)
    p[5::3] = np.clip(np.where(missing, 0.0, sizes), *config.cum_bounds)
    span0 = config.h_init / abs(math.sin(math.radians(float(b_lim_deg))))
    rest = max(level_far - float(sizes.sum()), 0.0)
    rho_hi = config.rho_soft_limit if config.rho_soft_limit is not None else config.rho_bounds[1]
    p[2] = float(np.clip(rest / (span0 * -math.expm1(-float(x.max()) / span0)),
                         config.rho_bounds[0], rho_hi))
    return p


def place_components(params, distance, ebv, weight, b_lim_deg: float,
                     config: FitConfig | None = None, distance_err=None) -> np.ndarray:
    """Cloud components placed where the stars say, not where the optimiser stopped.

    A component's rise is narrow; when no star lies on it, the gradient of the eq. 15 loss
    with respect to its position is zero and L-BFGS-B leaves it wherever it stopped, even
    in the wrong gap between stars. Three steps fix what the gradient cannot see:

    1. **Relocation.** For each component (largest column first) whose column exceeds the
       scatter of the stars about the fit (:func:`residual_sigma`; a smaller step is not
       located by any one gap), with the others held, the loss of a sharp step of its
       column between every two consecutive stars is computed at once (prefix sums of
       ``w |r|`` in front of the step and ``w |r - column|`` behind it); the component
       moves to the best gap when that beats the gap it is in.
    2. **Merging.** Two consecutive components (by centre) become one, carrying their
       summed column, when a single sharp step of that column placed in the best gap
       between them costs no more than the two steps. With no star between them this
       always holds: every star then sees both steps or neither, the loss depends only on
       the sum, and the optimiser cannot split the column by the data (it keeps the equal
       shares of the starts).
    3. **Placement in the gap.** A component whose rise (centre +- ``RISE_HALF_WIDTH``
       span) lies between two consecutive stars ``a < b`` can sit anywhere in that gap at
       the same loss; the stars say only that the cloud lies somewhere in (a, b). With
       ``config.gap_placement == "prior"`` (default) it is moved to the point most likely
       to lie within ``placement_tolerance`` of the cloud when clouds are spread uniformly
       through the Galactic disk (:func:`most_probable_in_gap`; near the far end of a wide
       gap, since the volume of the cone grows as d^2). The gap in front of the nearest
       star is bounded by the bubble wall (``params[0]``: the model has no dust inside
       it) and is treated the same way. ``"minimax"`` moves it to ``2 a b / (a + b)``, the
       point whose largest relative distance error over the gap, ``(b - a) / (b + a)``, is
       the smallest, and leaves the gap in front of the nearest star alone; ``"none"``
       leaves it where the optimiser stopped. The span is shrunk if needed so that the
       rise still fits inside the gap.

    Parameters
    ----------
    params : array_like, shape (15,)
        Fitted parameters (:data:`~dustmaps_ext_build.parametric.model.PARAM_NAMES`).
    distance, ebv, weight : array_like, shape (n,)
        The stars of the fit (those kept by the clipping): distances (kpc), E(B-V) (mag)
        and total weights.
    b_lim_deg : float
        Latitude of the sightline for the diffuse term (deg, non-zero).
    config : FitConfig, optional
        For the bounds, ``drop_below`` (components under it are left alone) and the
        placement in the gaps (``gap_placement``, ``placement_tolerance``,
        ``cloud_scale_height``).

    Returns
    -------
    numpy.ndarray, shape (15,)
        The new parameters (a copy); freed components get a zero column.
    """
    return _place(params, distance, ebv, weight, b_lim_deg, config or FitConfig(),
                  distance_err)[0]


def _place(params, distance, ebv, weight, b_lim_deg, config, distance_err):
    """:func:`place_components`, and whether two rises closer than the stars' distance
    errors were merged."""
    p = np.array(params, dtype=np.float64)
    order = np.argsort(distance, kind="stable")
    x = np.ascontiguousarray(distance, dtype=np.float64)[order]
    e = np.ascontiguousarray(ebv, dtype=np.float64)[order]
    w = np.ascontiguousarray(weight, dtype=np.float64)[order]
    x_err = (None if distance_err is None
             else np.ascontiguousarray(distance_err, dtype=np.float64)[order])
    sin_b = abs(math.sin(math.radians(float(b_lim_deg))))
    bubble = p[0]
    p, unresolved = _merge_steps(_relocate(p, x, e, w, sin_b, config), x, e, w, sin_b,
                                 config, x_err)
    clouds = p[3:].reshape(N_CLOUDS, 3)
    live = [k for k in range(N_CLOUDS) if clouds[k, 2] >= config.drop_below]
    rows = []
    for k in live:
        span = clouds[k, 1]
        c = clouds[k, 0] + 2.0 * span + bubble
        i = int(np.searchsorted(x, c))
        front = _gap_front(x, i, bubble, config)
        if config.gap_placement != "none" and front is not None:
            a, b = front, x[i]
            if c - RISE_HALF_WIDTH * span >= a and c + RISE_HALF_WIDTH * span <= b:
                c, span = _placed_in_gap(a, b, span, sin_b, config)
        rows.append(_released_cloud(c, span, clouds[k, 2], bubble, config))
    return _with_clouds(p, live, rows, config), unresolved


def most_probable_in_gap(a, b, tolerance: float = 0.15, sin_b: float = 0.0,
                         scale_height: float = math.inf) -> float:
    """The distance in a gap (a, b) most likely to lie within ``tolerance`` of a cloud.

    Prior: the stars say only that the cloud lies somewhere between ``a`` and ``b``
    (kpc, ``0 <= a < b``), and clouds are taken to be spread uniformly through a disk of
    exponential scale height ``scale_height`` (kpc) about the Sun's plane, so that along a
    sightline of latitude ``b_lat`` the density of clouds per unit distance is::

        p(d) ~ d^2 exp(-d |sin b_lat| / scale_height),

    the volume of the cone (d^2) times the disk's vertical profile (``scale_height =
    inf`` or ``sin_b = 0``: uniform in volume, p(d) ~ d^2). A placement ``c`` is within
    ``tolerance`` of a cloud at ``d`` when ``|c - d| <= tolerance d``, i.e. when ``d`` lies
    in the window ``[c / (1 + t), c / (1 - t)]``, whose ends have the fixed ratio
    ``r = (1 + t) / (1 - t)``. The probability of that, ``P(u) = int_u^{r u} p``
    (``u = c / (1 + t)``), has ``dP/du = r p(r u) - p(u)``, which is positive below and
    negative above::

        u* = 3 ln r / (k (r - 1)),   k = |sin b_lat| / scale_height,

    so the best window inside the gap starts at ``u = clip(u*, a, b / r)`` and ``c = (1 +
    t) u``: in a gap nearer than ``u*`` (every gap, with no disk) the window ends at the
    far star, ``c = (1 - t) b``. A gap no wider than one window (``b <= r a``: the stars
    locate the cloud to ``tolerance``) is held whole by every window around
    ``[(1 - t) b, (1 + t) a]``; the point returned is then ``2 a b / (a + b)``, the one
    whose worst relative error over the gap is the smallest. ``a = 0`` (nothing in front)
    is allowed: the prior keeps the answer finite.

    Parameters
    ----------
    a, b : float
        The gap (kpc).
    tolerance : float
        Relative distance tolerance ``t`` in (0, 1).
    sin_b : float
        Sine of the sightline's latitude.
    scale_height : float
        Scale height of the clouds' disk (kpc, positive; ``math.inf`` for none).

    Returns
    -------
    float
        The placement ``c`` (kpc), inside [a, b].

    Raises
    ------
    ValueError
        ``a``, ``b`` not finite with ``0 <= a < b``, ``tolerance`` outside (0, 1), or a
        scale height that is not positive.
    """
    a, b, t = float(a), float(b), float(tolerance)
    _check_gap(a, b, t, scale_height)
    ratio = (1.0 + t) / (1.0 - t)
    if b <= ratio * a:
        return 2.0 * a * b / (a + b)
    k = abs(float(sin_b)) / float(scale_height)
    u_best = math.inf if k == 0.0 else 3.0 * math.log(ratio) / (k * (ratio - 1.0))
    return (1.0 + t) * min(max(u_best, a), b / ratio)


def gap_hit_probability(a, b, c, tolerance: float = 0.15, sin_b: float = 0.0,
                        scale_height: float = math.inf) -> float:
    """Prior probability that a cloud in the gap (a, b) lies within ``tolerance`` of ``c``.

    The prior of :func:`most_probable_in_gap`,
    ``p(d) ~ d^2 exp(-d |sin b| / scale_height)`` on (a, b); the cloud is within the tolerance when ``|c - d| <=
    tolerance d``. ``gap_hit_probability(a, b, most_probable_in_gap(a, b, ...), ...)`` is
    the best that any placement in the gap can do.

    Raises
    ------
    ValueError
        As :func:`most_probable_in_gap`.
    """
    a, b, t = float(a), float(b), float(tolerance)
    _check_gap(a, b, t, scale_height)
    lo = min(max(float(c) / (1.0 + t), a), b)
    hi = min(max(float(c) / (1.0 - t), a), b)
    k = abs(float(sin_b)) / float(scale_height)
    if k * b < 1e-6:  # no disk over the gap: uniform in volume
        return (hi ** 3 - lo ** 3) / (b ** 3 - a ** 3)
    from scipy.special import gammainc

    # int_0^d x^2 exp(-k x) dx = (2 / k^3) P(3, k d), P the regularised gamma function
    cdf = gammainc(3.0, k * np.array([a, lo, hi, b]))
    return float((cdf[2] - cdf[1]) / (cdf[3] - cdf[0]))


def _check_gap(a, b, tolerance, scale_height):
    if not (math.isfinite(a) and math.isfinite(b) and 0.0 <= a < b):
        raise ValueError(f"a gap needs finite 0 <= a < b, got a={a!r}, b={b!r}")
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must lie in (0, 1), got {tolerance!r}")
    if not scale_height > 0:
        raise ValueError(f"scale_height must be positive, got {scale_height!r}")


def _gap_front(x, i, bubble, config):
    """The star in front of the gap ``(x[i - 1], x[i])`` of sorted stars ``x``: ``x[i -
    1]`` when beyond the bubble wall, else (no star in front) the bubble wall itself with
    the ``"prior"`` placement, None with the others or when no star lies behind."""
    if i >= x.size:
        return None
    if i > 0 and x[i - 1] > bubble:
        return x[i - 1]
    return bubble if config.gap_placement == "prior" else None


def _placed_in_gap(a, b, span, sin_b, config):
    """Where a rise in the gap (a, b) goes (``config.gap_placement``; ``"minimax"`` for
    ``"none"``, whose components moved by the relocation or merging need a point too),
    and ``span`` shrunk to keep the rise inside the gap."""
    if config.gap_placement == "prior":
        c = most_probable_in_gap(a, b, config.placement_tolerance, sin_b,
                                 config.cloud_scale_height)
    else:
        c = 2.0 * a * b / (a + b)
    return c, min(span, (c - a) / RISE_HALF_WIDTH, (b - c) / RISE_HALF_WIDTH)


def _relocate(p, x, e, w, sin_b, config):
    """Step 1 of :func:`place_components` (stars sorted by distance)."""
    p = p.copy()
    bubble = p[0]
    # the gaps between consecutive distinct stars beyond the bubble wall
    gap = np.flatnonzero((x[1:] > x[:-1]) & (x[:-1] > bubble)) + 1   # step between i-1, i
    if gap.size == 0:
        return p
    # a step smaller than the scatter of the stars about the fit is not located by a gap
    scatter = residual_sigma(e - _model_values(p, sin_b, x), w)
    for k in np.argsort(-p[5::3], kind="stable"):
        column = p[5 + 3 * k]
        if column < max(config.drop_below, scatter):
            continue
        without = p.copy()
        without[5 + 3 * k] = 0.0
        r = e - _model_values(without, sin_b, x)
        front = np.concatenate([[0.0], np.cumsum(w * np.abs(r))])
        behind = np.concatenate([np.cumsum((w * np.abs(r - column))[::-1])[::-1], [0.0]])
        loss = front + behind   # loss[i]: sharp step between star i-1 and star i
        centre = p[3 + 3 * k] + 2.0 * p[4 + 3 * k] + bubble
        now = int(np.searchsorted(x, centre))
        best = gap[np.argmin(loss[gap])]
        if loss[best] < loss[now] * (1.0 - 1e-9) and best != now:
            c, span = _placed_in_gap(x[best - 1], x[best], p[4 + 3 * k], sin_b, config)
            p[3 + 3 * k], p[4 + 3 * k], _ = _released_cloud(c, span, column, bubble, config)
    return p


def _merge_steps(p, x, e, w, sin_b, config, x_err=None):
    """Step 2 of :func:`place_components` (stars sorted by distance).

    Two consecutive components ``i < j`` (by centre) become one when a single sharp step
    of their summed column, placed in the best gap from the one of ``i`` to the one of
    ``j``, costs no more loss than the two steps where they are (always the case when no
    star lies between them).
    """
    p = p.copy()
    bubble = p[0]
    unresolved = False
    while True:
        clouds = p[3:].reshape(N_CLOUDS, 3)
        centre = clouds[:, 0] + 2.0 * clouds[:, 1] + bubble
        live = [k for k in np.argsort(centre, kind="stable") if clouds[k, 2] >= config.drop_below]
        for i, j in zip(live[:-1], live[1:]):
            si, sj = (int(v) for v in np.searchsorted(x, centre[[i, j]]))
            without = p.copy()
            without[5 + 3 * i] = without[5 + 3 * j] = 0.0
            r = e - _model_values(without, sin_b, x)
            total = clouds[i, 2] + clouds[j, 2]
            front = np.concatenate([[0.0], np.cumsum(w * np.abs(r))])
            behind = np.concatenate([np.cumsum((w * np.abs(r - total))[::-1])[::-1], [0.0]])
            two = front[si] + (w * np.abs(r - clouds[i, 2]))[si:sj].sum() + behind[sj]
            one = front[si:sj + 1] + behind[si:sj + 1]
            close = False
            if x_err is not None and x.size:
                around = x_err[max(si - 1, 0):min(sj + 1, x.size)]
                close = around.size > 0 and centre[j] - centre[i] < float(np.median(around))
            if one.min() > two and not close:
                continue
            unresolved |= close
            split = si + int(np.argmin(one))
            span = float((clouds[i, 2] * clouds[i, 1] + clouds[j, 2] * clouds[j, 1]) / total)
            front = _gap_front(x, split, bubble, config)
            if front is not None:
                c, span = _placed_in_gap(front, x[split], span, sin_b, config)
            else:
                c = float(np.exp((clouds[i, 2] * np.log(centre[i])
                                  + clouds[j, 2] * np.log(centre[j])) / total))
            merged = _released_cloud(c, span, total, bubble, config)
            rest = [tuple(clouds[k]) for k in live if k not in (i, j)]
            p = _with_clouds(p, live, [merged] + rest, config)
            break
        else:
            return p, unresolved


def _released_cloud(c, span, column, bubble, config):
    """(distance_k, span_k, Cum_EBV_k) of a component centred at ``c``, within the bounds."""
    span = float(np.clip(min(span, 0.5 * (c - bubble)), *config.span_bounds))
    return float(np.clip(c - 2.0 * span - bubble, *config.distance_bounds)), span, column


def _with_clouds(p, slots, rows, config):
    """``p`` with the cloud slots ``slots`` replaced by ``rows`` (then zero columns)."""
    out = p[3:].reshape(N_CLOUDS, 3).copy()
    for k in slots:
        out[k] = (config.distance_bounds[0], config.span_bounds[0], 0.0)
    for k, row in zip(slots, rows):
        out[k] = row
    q = p.copy()
    q[3:] = out.ravel()
    return q


def clipped_gaussian_sigma(residual: np.ndarray, clip_sigma: float = 3.0) -> float:
    """Gaussian sigma of residuals that survived a ``clip_sigma`` clipping (NaN if empty).

    The root mean square of the residuals about the fitted curve (zero), divided by the
    RMS of a unit normal distribution truncated at +-``clip_sigma`` (0.9866 for 3): the
    sigma of the Gaussian whose clipped core has the residuals' spread, as a Gaussian fit
    to the residual histogram gives (Wang et al. 2025, Figure 14).
    """
    r = np.asarray(residual, dtype=np.float64)
    if r.size == 0:
        return float("nan")
    k = float(clip_sigma)
    inside = math.erf(k / math.sqrt(2.0))
    density = math.exp(-0.5 * k * k) / math.sqrt(2.0 * math.pi)
    truncated_rms = math.sqrt(max(1.0 - 2.0 * k * density / inside, 1e-12))
    return float(np.sqrt(np.mean(r * r)) / truncated_rms)


def residual_sigma(residual: np.ndarray, weight: np.ndarray) -> float:
    """Weighted standard deviation ``sqrt(sum w (r - rbar)^2 / sum w)`` (NaN if empty)."""
    wsum = weight.sum()
    if residual.size == 0 or wsum <= 0:
        return float("nan")
    mean = (weight * residual).sum() / wsum
    return float(np.sqrt((weight * (residual - mean) ** 2).sum() / wsum))


class _Objective:
    """Loss and gradient for scipy: eq. 15 (with the share-weighted penalty), plus the
    penalty on the diffuse dust beyond Table 3's bound when that bound is soft
    (``FitConfig.rho_soft_limit``)."""

    def __init__(self, sin_b, x, e, w, config):
        soft = config.rho_soft_limit is not None
        nodes, coef = (_diffuse_penalty_nodes(x, w, config.penalty_share_exp) if soft
                       else (np.zeros(0), np.zeros(0)))
        # rho above rho_free pays for its diffuse column; -1: the hard bound, no such term
        rho_free = config.rho_bounds[1] if soft else -1.0
        self.args = (sin_b, x, e, w, config.lam, config.penalty_share_exp, nodes, coef,
                     rho_free)

    def __call__(self, p):
        grad = np.empty(N_PARAMS)
        return _objective_kernel(p, *self.args, grad), grad


#: Nodes of the sum that weighs the excess diffuse dust by the share of the stars behind it
DIFFUSE_PENALTY_NODES = 16


def _diffuse_penalty_nodes(x, w, share_exp):
    """Distances ``t_m`` and coefficients ``c_m`` with ``sum_m c_m E(t_m)`` the diffuse
    column weighed as the cloud columns are: each increment of E(B-V) between ``t_{m-1}``
    and ``t_m`` times ``F^share_exp``, ``F`` the share of the stars' weight behind it
    (``t_m``: where ``m / M`` of the weight lies in front; ``F`` at the middle of the step,
    ``1 - (m - 1/2) / M``); ``share_exp = 0``: the column out to the farthest star."""
    if share_exp == 0.0:
        return np.array([x.max()]), np.ones(1)
    order = np.argsort(x, kind="stable")
    front = np.cumsum(w[order]) / w.sum()
    m = np.arange(1, DIFFUSE_PENALTY_NODES + 1)
    nodes = x[order][np.minimum(np.searchsorted(front, m / DIFFUSE_PENALTY_NODES), x.size - 1)]
    nodes[-1] = x.max()
    share = (1.0 - (m - 0.5) / DIFFUSE_PENALTY_NODES) ** share_exp
    # sum_m (E(t_m) - E(t_{m-1})) F_m = sum_m E(t_m) (F_m - F_{m+1}), F_{M+1} = 0
    return np.ascontiguousarray(nodes), share - np.r_[share[1:], 0.0]


@numba.njit(cache=True, nogil=True)
def _objective_kernel(p, sin_b, x, e, w, lam, share_exp, nodes, coef, rho_free, grad):
    """Eq. 15 with the share-weighted penalty (:func:`.model._loss_grad_kernel`) plus, when
    rho exceeds ``rho_free`` (>= 0), ``lam`` x the weighed diffuse column ``sum_m coef_m
    E_diffuse(nodes_m)`` carried by the density above it (the column is proportional to
    rho: ``(1 - rho_free / rho)`` of it); writes the gradient into ``grad``."""
    loss = _loss_grad_kernel(p, sin_b, x, e, w, lam, share_exp, grad)
    if rho_free >= 0.0 and p[2] > rho_free:
        column, d_bubble, d_h, _ = _weighted_diffuse_kernel(p, sin_b, nodes, coef)
        share = 1.0 - rho_free / p[2]
        grad[0] += lam * share * d_bubble
        grad[1] += lam * share * d_h
        grad[2] += lam * column / p[2]
        loss += lam * share * column
    return loss


def _minimise(p0, sin_b, x, e, w, config, bounds, tol=None):
    obj = _Objective(sin_b, x, e, w, config)
    res = minimize(obj, p0, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": config.maxiter, "ftol": tol or config.ftol,
                            "gtol": tol or config.gtol})
    # Non-smooth L1 losses often end on a failed line search; the last point is still the
    # best one found, so it is used either way.
    return np.clip(res.x, [b[0] for b in bounds], [b[1] for b in bounds]), float(res.fun)


def _model_values(p, sin_b, x):
    out = np.empty(x.size)
    _model_kernel(p, sin_b, x, out, np.empty((1, N_PARAMS)), False)
    return out


def _place_and_refit(p, loss, x, e, w, b_lim_deg, sin_b, config, bounds, x_err=None):
    """:func:`place_components`, refit; the new fit is kept unless its loss is worse by
    more than ``config.gap_loss_tolerance`` (always, when two rises closer than the stars'
    distance errors were merged: the stars cannot tell them apart)."""
    placed, unresolved = _place(p, x, e, w, b_lim_deg, config, x_err)
    if np.array_equal(placed, p):
        return p, loss
    p_new, loss_new = _minimise(placed, sin_b, x, e, w, config, bounds)
    if unresolved or loss_new <= loss * (1.0 + config.gap_loss_tolerance):
        return p_new, loss_new
    return p, loss


def _refined_under_distance_errors(p, x, e, w, x_err, keep, sin_b, config):
    """The cloud components of ``p`` placed and sized by :func:`.distance_errors.refine_rises`
    (all stars, the clipped ones included: the mixture likelihood has its own outlier
    floor; the Laplace scale from the kept stars' residual sigma)."""
    clouds = p[3:].reshape(N_CLOUDS, 3)
    bubble = p[0]
    centre = clouds[:, 0] + 2.0 * clouds[:, 1] + bubble
    live = [k for k in np.argsort(centre, kind="stable") if clouds[k, 2] >= config.drop_below]
    if not live:
        return p
    smooth = p.copy()
    smooth[5::3] = 0.0
    resid = e - _model_values(smooth, sin_b, x)
    sig = residual_sigma(e[keep] - _model_values(p, sin_b, x[keep]), w[keep])
    c_new, col_new, groups = refine_rises(x, resid, w, x_err, centre[live], clouds[live, 2],
                                          sig / math.sqrt(2.0))
    if c_new.size == len(live) and np.array_equal(c_new, centre[live]) \
            and np.array_equal(col_new, clouds[live, 2]):
        return p
    rows = []
    for c, col, members in zip(c_new, col_new, groups):
        k = np.array([live[m] for m in members])
        span = float((clouds[k, 2] * clouds[k, 1]).sum() / clouds[k, 2].sum())
        rows.append(_released_cloud(c, span, float(np.clip(col, *config.cum_bounds)), bubble,
                                    config))
    return _with_clouds(p, live, rows, config)


def fit_sightline(distance, ebv, weight, b_lim_deg: float, *, reliable=None,
                  distance_err=None, config: FitConfig | None = None) -> SightlineFit:
    """Fit the parametric model to the stars of one sightline.

    Parameters
    ----------
    distance, ebv, weight : array_like, shape (n,)
        Star distances (kpc), E(B-V) (mag) and total weights (eq. 14, positive).
    b_lim_deg : float
        Latitude of the sightline for the diffuse term (deg, non-zero).
    reliable : array_like of bool, shape (n,), optional
        The stars of the line of sight itself (the pipeline passes those of the
        sightline's own pixel; the others are weighted neighbours): after the clipping
        they set the residual sigmas and the maximum reliable distance. All stars when
        omitted.
    distance_err : array_like, shape (n,), optional
        The stars' distance uncertainties (kpc; the pipeline passes the mean of the two
        halves of the 68% interval, as the paper's eq. 12 does). Two cloud components whose
        centres lie closer than the median uncertainty of the stars around them are
        merged into one (:func:`place_components`): the stars cannot tell two such rises
        apart, and a single rise smeared by the distance errors is otherwise split into
        two. Without it, components merge only where one step fits as well as two.
    config : FitConfig, optional
        Settings; the paper's by default.

    Returns
    -------
    SightlineFit

    Raises
    ------
    ValueError
        Mismatched shapes, non-finite values, non-positive weights or distances, or fewer
        than two stars.
    """
    config = config or FitConfig()
    x = np.ascontiguousarray(distance, dtype=np.float64)
    e = np.ascontiguousarray(ebv, dtype=np.float64)
    w = np.ascontiguousarray(weight, dtype=np.float64)
    if x.ndim != 1 or e.shape != x.shape or w.shape != x.shape:
        raise ValueError("distance, ebv and weight must be 1-D arrays of the same length")
    if x.size < 2:
        raise ValueError("a sightline fit needs at least two stars")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(e)) and np.all(np.isfinite(w))):
        raise ValueError("distance, ebv and weight must be finite")
    if np.any(x <= 0) or np.any(w <= 0):
        raise ValueError("distances and weights must be positive")
    rel = np.ones(x.size, bool) if reliable is None else np.asarray(reliable, dtype=bool)
    if rel.shape != x.shape:
        raise ValueError("reliable must have the shape of distance")
    x_err = None
    if distance_err is not None:
        x_err = np.ascontiguousarray(distance_err, dtype=np.float64)
        if x_err.shape != x.shape or not np.all(np.isfinite(x_err)) or np.any(x_err < 0):
            raise ValueError("distance_err must be finite, non-negative and of the shape "
                             "of distance")
    sin_b = abs(np.sin(np.radians(float(b_lim_deg))))
    if not np.isfinite(sin_b) or sin_b <= 0:
        raise ValueError(f"b_lim must be a finite non-zero latitude, got {b_lim_deg!r}")

    bounds = parameter_bounds(config)
    ebv_max = float(np.percentile(e, config.ebv_max_percentile))
    starts = [initial_parameters(config, k, ebv_max) for k in range(len(config.start_distances))]
    if config.data_start:
        starts.append(data_start_parameters(x, e, w, b_lim_deg, config))
    best_p, best_sigma, start_sigmas = None, np.inf, []
    for p0 in starts:
        p, _ = _minimise(p0, sin_b, x, e, w, config, bounds, tol=config.start_ftol)
        sig = residual_sigma(e - _model_values(p, sin_b, x), w)
        start_sigmas.append(sig)
        if sig < best_sigma:
            best_p, best_sigma = p, sig
    if best_p is None:  # every start gave a NaN sigma; cannot happen with finite inputs
        raise ValueError("no multi-start fit produced a finite residual sigma")

    # the components placed by the stars (the gradient cannot move a rise no star lies on)
    p = best_p
    if config.place_in_gaps:
        p = _place_and_refit(p, _Objective(sin_b, x, e, w, config)(p)[0], x, e, w,
                             b_lim_deg, sin_b, config, bounds, x_err)[0]
    # iterative 3-sigma clipping: remove the stars beyond clip_sigma x the residual sigma
    # of the kept stars, refit from the current parameters, until no star is removed
    keep = np.ones(x.size, bool)
    for it in range(config.max_clip_iter):
        resid = e - _model_values(p, sin_b, x)
        sig = residual_sigma(resid[keep], w[keep])
        new_keep = keep & (np.abs(resid) <= config.clip_sigma * sig) if sig > 0 else keep
        if new_keep.sum() < 2:
            new_keep = keep
        if it > 0 and (new_keep == keep).all():
            break
        keep = new_keep
        p, loss = _minimise(p, sin_b, x[keep], e[keep], w[keep], config, bounds)
    xk, ek = x[keep], e[keep]
    if config.place_in_gaps:
        p, loss = _place_and_refit(p, loss, xk, ek, w[keep], b_lim_deg, sin_b, config, bounds,
                                   None if x_err is None else x_err[keep])

    if x_err is not None and config.distance_error_model:
        p = _refined_under_distance_errors(p, x, e, w, x_err, keep, sin_b, config)

    # drop negligible components and those the kept stars do not see (the middle of the
    # rise lies beyond the farthest one: less than half the column is supported by any
    # star, and the share-weighted penalty no longer shrinks it), then sort the clouds by
    # centre
    clouds = p[3:].reshape(N_CLOUDS, 3).copy()
    centre = clouds[:, 0] + 2.0 * clouds[:, 1]
    unseen = centre + p[0] > xk.max()
    clouds[(clouds[:, 2] < config.drop_below) | unseen, 2] = 0.0
    clouds = clouds[np.argsort(centre, kind="stable")]
    p = np.concatenate([p[:3], clouds.ravel()])

    # the line of sight's own stars (``reliable``) that survived the clipping: their
    # residuals give the sigmas and the farthest of them the maximum reliable distance
    own = rel[keep]
    if not own.any():
        own = np.ones(xk.size, bool)
    xo = xk[own]
    ro = ek[own] - _model_values(p, sin_b, xo)

    def sigma_in(mask):
        if mask.sum() < config.min_stars_sigma:
            return float("nan")
        return clipped_gaussian_sigma(ro[mask], config.clip_sigma)

    return SightlineFit(
        params=p,
        sigma=sigma_in(np.ones(xo.size, bool)),
        sigma_0_2=sigma_in(xo < 2.0),
        sigma_1_4=sigma_in((xo >= 1.0) & (xo < 4.0)),
        sigma_2_max=sigma_in(xo >= 2.0),
        max_distance=float(xo.max()),
        n_stars=int(x.size),
        n_clipped=int(x.size - keep.sum()),
        start_sigmas=np.asarray(start_sigmas),
        loss=loss,
        kept=keep,
    )
