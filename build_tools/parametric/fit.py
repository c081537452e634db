"""Fitting one sightline as Wang et al. (2025, §3.3) do.

Steps, for the stars of one sightline (its own and its weighted neighbours):

1. four L-BFGS-B fits of the eq. 15 loss (weighted L1 + 0.1 x L1 on the cloud columns)
   within the Table 3 bounds, from four sets of starting cloud distances;
2. the start with the smallest residual sigma wins;
3. stars more than 3 sigma from that fit are removed and the fit is redone from the
   winning parameters;
4. cloud components with a column under 0.001 mag are dropped (column set to 0).

Parameters are those of the released table (:data:`~dustmaps_ext_build.parametric.model.PARAM_NAMES`):
a cloud's ``distance_k`` is measured from the bubble wall to where the cloud begins, its
centre being ``distance_k + 2 span_k + bubble``. Table 3 gives the bounds in the paper's
terms (cloud centre in [d_bubble, 15] kpc, extent in [0.01, 0.5 x centre] kpc); in the
released parametrisation they become ``distance_k`` in [0, 15] and ``span_k`` in
[0.01, 7.5], and the centre is then >= bubble + 2 span_k, so both of the paper's
constraints hold automatically (``span_k <= 0.5 centre`` always).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from dustmaps_ext.parametric_model import CLOUD_MIN_COLUMN

from .model import N_CLOUDS, N_PARAMS, _loss_grad_kernel, _model_kernel

__all__ = ["FitConfig", "SightlineFit", "fit_sightline", "residual_sigma",
           "initial_parameters", "parameter_bounds"]

#: The paper gives four sets of four starting cloud distances without listing them; these
#: four sets (kpc, cloud centres) spread the starts over the near, middle and far disk.
DEFAULT_START_DISTANCES = (
    (0.2, 0.5, 1.0, 2.0),
    (0.3, 0.8, 1.5, 3.0),
    (0.5, 1.2, 2.5, 5.0),
    (0.15, 0.4, 0.8, 4.0),
)


@dataclass(frozen=True)
class FitConfig:
    """Settings of the sightline fit (defaults: Wang et al. 2025, §3.3 and Table 3).

    Distances in kpc, densities in mag/kpc, columns in mag.
    """

    lam: float = 0.1
    bubble_init: float = 0.1
    h_init: float = 0.12
    rho_init: float = 0.02
    bubble_bounds: tuple = (0.05, 1.0)
    h_bounds: tuple = (0.05, 0.5)
    rho_bounds: tuple = (0.0, 0.04)
    distance_bounds: tuple = (0.0, 15.0)
    span_bounds: tuple = (0.01, 7.5)
    cum_bounds: tuple = (0.0, 3.0)
    #: four sets of four starting cloud centres (kpc); span starts at 0.1 x centre
    start_distances: tuple = field(default=DEFAULT_START_DISTANCES)
    #: the "approximate maximum extinction" of Table 3 is this percentile of the stars' E(B-V)
    ebv_max_percentile: float = 95.0
    clip_sigma: float = 3.0
    drop_below: float = CLOUD_MIN_COLUMN
    #: L-BFGS-B stopping rules (scipy's ``maxiter``, ``ftol``, ``gtol``)
    maxiter: int = 300
    ftol: float = 1e-6
    gtol: float = 1e-6
    #: residual sigma of a distance range needs at least this many stars, else NaN
    min_stars_sigma: int = 3

    def __post_init__(self):
        if len(self.start_distances) < 1 or any(len(s) != N_CLOUDS for s in self.start_distances):
            raise ValueError(f"start_distances must be sets of {N_CLOUDS} distances")
        for name in ("bubble_bounds", "h_bounds", "rho_bounds", "distance_bounds",
                     "span_bounds", "cum_bounds"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name}: lower bound {lo} exceeds upper bound {hi}")
        if self.h_bounds[0] <= 0 or self.span_bounds[0] <= 0:
            raise ValueError("h and span lower bounds must be positive")
        if self.clip_sigma <= 0 or self.lam < 0:
            raise ValueError("clip_sigma must be positive and lam non-negative")


@dataclass(frozen=True)
class SightlineFit:
    """Result of :func:`fit_sightline`.

    Attributes
    ----------
    params : numpy.ndarray, shape (15,)
        Final parameters (components under ``drop_below`` have a zero column), clouds sorted
        by centre distance.
    sigma : float
        Weighted standard deviation of the residuals of the kept stars (mag).
    sigma_0_2, sigma_1_4, sigma_2_max : float
        The same for kept stars at d < 2, 1 <= d < 4 and d >= 2 kpc (NaN with too few stars).
    max_distance : float
        Distance of the farthest kept star among the ``reliable`` ones (kpc).
    n_stars, n_clipped : int
        Stars fitted, and stars removed by the clipping.
    start_sigmas : numpy.ndarray
        Residual sigma of each multi-start fit.
    loss : float
        Value of the eq. 15 loss at the end of the refit (before negligible components
        are dropped).
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


def parameter_bounds(config: FitConfig) -> list[tuple[float, float]]:
    """L-BFGS-B bounds for the 15 parameters."""
    return [config.bubble_bounds, config.h_bounds, config.rho_bounds] + [
        config.distance_bounds, config.span_bounds, config.cum_bounds] * N_CLOUDS


def initial_parameters(config: FitConfig, start: int, ebv_max: float) -> np.ndarray:
    """Starting parameters of multi-start ``start`` (Table 3, released parametrisation)."""
    p = np.empty(N_PARAMS)
    p[0], p[1], p[2] = config.bubble_init, config.h_init, config.rho_init
    cum0 = float(np.clip(ebv_max / N_CLOUDS, *config.cum_bounds))
    for k, centre in enumerate(config.start_distances[start]):
        span = float(np.clip(0.1 * centre, *config.span_bounds))
        p[3 + 3 * k] = np.clip(centre - 2.0 * span - config.bubble_init, *config.distance_bounds)
        p[4 + 3 * k] = span
        p[5 + 3 * k] = cum0
    return p


def residual_sigma(residual: np.ndarray, weight: np.ndarray) -> float:
    """Weighted standard deviation ``sqrt(sum w (r - rbar)^2 / sum w)`` (NaN if empty)."""
    wsum = weight.sum()
    if residual.size == 0 or wsum <= 0:
        return float("nan")
    mean = (weight * residual).sum() / wsum
    return float(np.sqrt((weight * (residual - mean) ** 2).sum() / wsum))


class _Objective:
    """Loss and gradient for scipy."""

    def __init__(self, sin_b, x, e, w, lam):
        self.args = (sin_b, x, e, w, lam)

    def __call__(self, p):
        grad = np.empty(N_PARAMS)
        loss = _loss_grad_kernel(p, *self.args, grad)
        return loss, grad


def _minimise(p0, sin_b, x, e, w, config, bounds):
    obj = _Objective(sin_b, x, e, w, config.lam)
    res = minimize(obj, p0, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": config.maxiter, "ftol": config.ftol,
                            "gtol": config.gtol})
    # Non-smooth L1 losses often end on a failed line search; the last point is still the
    # best one found, so it is used either way.
    return np.clip(res.x, [b[0] for b in bounds], [b[1] for b in bounds]), float(res.fun)


def _model_values(p, sin_b, x):
    out = np.empty(x.size)
    _model_kernel(p, sin_b, x, out, np.empty((1, N_PARAMS)), False)
    return out


def fit_sightline(distance, ebv, weight, b_lim_deg: float, *, reliable=None,
                  config: FitConfig | None = None) -> SightlineFit:
    """Fit the parametric model to the stars of one sightline.

    Parameters
    ----------
    distance, ebv, weight : array_like, shape (n,)
        Star distances (kpc), E(B-V) (mag) and total weights (eq. 14, positive).
    b_lim_deg : float
        Latitude of the sightline for the diffuse term (deg, non-zero).
    reliable : array_like of bool, shape (n,), optional
        Stars that may set the maximum reliable distance (e.g. those within one resolution
        element of the centre); all stars when omitted.
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
    sin_b = abs(np.sin(np.radians(float(b_lim_deg))))
    if not np.isfinite(sin_b) or sin_b <= 0:
        raise ValueError(f"b_lim must be a finite non-zero latitude, got {b_lim_deg!r}")

    bounds = parameter_bounds(config)
    ebv_max = float(np.percentile(e, config.ebv_max_percentile))
    best_p, best_sigma, start_sigmas = None, np.inf, []
    for start in range(len(config.start_distances)):
        p, _ = _minimise(initial_parameters(config, start, ebv_max), sin_b, x, e, w, config,
                         bounds)
        sig = residual_sigma(e - _model_values(p, sin_b, x), w)
        start_sigmas.append(sig)
        if sig < best_sigma:
            best_p, best_sigma = p, sig
    if best_p is None:  # every start gave a NaN sigma; cannot happen with finite inputs
        raise ValueError("no multi-start fit produced a finite residual sigma")

    resid = e - _model_values(best_p, sin_b, x)
    keep = np.abs(resid) <= config.clip_sigma * best_sigma if best_sigma > 0 else np.ones(x.size, bool)
    if keep.sum() < 2:
        keep = np.ones(x.size, bool)
    xk, ek, wk = x[keep], e[keep], w[keep]
    p, loss = _minimise(best_p, sin_b, xk, ek, wk, config, bounds)

    # drop negligible components, then sort the clouds by centre
    clouds = p[3:].reshape(N_CLOUDS, 3).copy()
    clouds[clouds[:, 2] < config.drop_below, 2] = 0.0
    centre = clouds[:, 0] + 2.0 * clouds[:, 1]
    clouds = clouds[np.argsort(centre, kind="stable")]
    p = np.concatenate([p[:3], clouds.ravel()])

    rk = ek - _model_values(p, sin_b, xk)

    def sigma_in(mask):
        return residual_sigma(rk[mask], wk[mask]) if mask.sum() >= config.min_stars_sigma else float("nan")

    relk = rel[keep]
    max_d = float(xk[relk].max()) if relk.any() else float(xk.max())
    return SightlineFit(
        params=p,
        sigma=residual_sigma(rk, wk),
        sigma_0_2=sigma_in(xk < 2.0),
        sigma_1_4=sigma_in((xk >= 1.0) & (xk < 4.0)),
        sigma_2_max=sigma_in(xk >= 2.0),
        max_distance=max_d,
        n_stars=int(x.size),
        n_clipped=int(x.size - keep.sum()),
        start_sigmas=np.asarray(start_sigmas),
        loss=loss,
    )
