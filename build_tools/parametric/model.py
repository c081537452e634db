"""The parametric extinction-distance model of Wang et al. (2025), its loss and gradient.

The model is the one the released ``data_v3.fits`` table follows, i.e. the form that the
public ``dustmaps3d`` package (2.2.13) evaluates, not the slightly different printed
eq. 3-9 of the paper (§3.2). With ``x`` the distance (kpc), ``b_lim`` the sightline latitude (deg)
and the 15 fitted parameters

    ``p = (bubble, h, rho, distance_1, span_1, Cum_EBV_1, ..., distance_4, span_4, Cum_EBV_4)``

* diffuse dust: ``span0 = h / sin|b_lim|``, ``T = span0 * rho``, ``w = 0.01`` kpc,
  ``C0 = T (1 - exp(-bubble / span0))``, ``f(x) = T (1 - exp(-x / span0)) - C0``,
  ``q = exp(5 bubble / w)``, ``a = 1/q``, ``c = 1/(1+q)``, ``D = C0 / ((1+a)(0.5-c))``,
  ``diffuse(x) = [x >= bubble] f(x) + D (1+a) (S((x - bubble)/w) - c)``,
  with ``S(t) = 1 / (1 + exp(-5 t))``;
* cloud ``k``: centre ``m_k = distance_k + 2 span_k + bubble``,
  ``N_k = Cum_EBV_k (1 + exp(-5 m_k / span_k))``,
  ``cloud_k(x) = N_k S((x - m_k) / span_k) - N_k / (1 + exp(5 m_k / span_k))``;
* ``E(B-V)(x) = diffuse(x) + sum_k cloud_k(x)``.

The loss is eq. 15 of the paper, ``L = sum_j w_j |E_j - E(x_j)| + lam * sum_k |Cum_EBV_k|``;
its gradient is analytic (``sign(0) = 0`` for the non-differentiable points of the L1 terms,
and the jump of the indicator ``[x >= bubble]`` contributes nothing because ``f(bubble) = 0``).

The model's values and density are computed by the evaluator's own scalar kernels
(:mod:`dustmaps_ext._core.parametric`: the same constants, operations and order, so both
give the same numbers); this module adds the Jacobian and the fused loss and gradient that
only the fit needs. The compiled kernels work on plain float64 arrays;
:func:`evaluate_model`, :func:`model_jacobian` and :func:`loss_and_gradient` are the checked
entry points.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from dustmaps_ext.parametric_model import BUBBLE_EDGE_WIDTH, CLOUD_COLUMNS, N_CLOUDS
from dustmaps_ext.parametric_model import cloud_constants as _cloud_constants
from dustmaps_ext.parametric_model import cloud_density_term as _cloud_density_term
from dustmaps_ext.parametric_model import cloud_terms as _cloud_terms
from dustmaps_ext.parametric_model import diffuse_constants as _diffuse_constants
from dustmaps_ext.parametric_model import diffuse_terms as _diffuse_terms

__all__ = [
    "N_CLOUDS", "N_PARAMS", "PARAM_NAMES",
    "evaluate_model", "evaluate_density", "model_jacobian", "loss_and_gradient",
    "cloud_centres",
]

#: Number of fitted parameters (3 diffuse + 3 per cloud).
N_PARAMS = 3 + 3 * N_CLOUDS
#: Names of the fitted parameters, in the order of the parameter vector (release column names).
PARAM_NAMES = ("bubble", "h", "diffuse_dust_rho") + CLOUD_COLUMNS

_JIT = dict(cache=True, nogil=True, error_model="numpy")
#: Per-cloud constants kept by the kernels: centre, norm, offset, rate (those of the
#: evaluator), then exp(-5 centre / span) and 1 / (1 + exp(5 centre / span)) for the gradient.
_N_CLOUD_CONSTS = 6


# --------------------------------------------------------------------------- kernels
@numba.njit(inline="always", **_JIT)
def _sig(t):
    """Logistic 1 / (1 + exp(-t)), without overflow for any finite t."""
    if t >= 0.0:
        return 1.0 / (1.0 + math.exp(-t))
    e = math.exp(t)
    return e / (1.0 + e)


@numba.njit(inline="always", **_JIT)
def _cloud_constants_of(p):
    """Constants of the four clouds of parameter vector ``p``, shape (N_CLOUDS, 6)."""
    consts = np.empty((N_CLOUDS, _N_CLOUD_CONSTS))
    for k in range(N_CLOUDS):
        span = p[4 + 3 * k]
        centre, norm, offset, rate = _cloud_constants(p[3 + 3 * k], span, p[5 + 3 * k], p[0])
        v = 5.0 * centre / span
        consts[k, 0] = centre
        consts[k, 1] = norm
        consts[k, 2] = offset
        consts[k, 3] = rate
        consts[k, 4] = math.exp(-v)
        consts[k, 5] = _sig(-v)
    return consts


@numba.njit(inline="always", **_JIT)
def _value(p, xj, dc, consts, s):
    """E(B-V) at ``xj`` as the evaluator computes it; also returns the bubble-edge step and
    ``exp(-x / span_0)``, and writes each cloud's logistic into ``s`` (for the gradient)."""
    val, _, edge, decay = _diffuse_terms(xj, p[0], p[2], dc[0], dc[1], dc[2], dc[3], dc[4])
    for k in range(N_CLOUDS):
        e_k, s[k] = _cloud_terms(xj, consts[k, 0], p[4 + 3 * k], consts[k, 1], consts[k, 2])
        val += e_k
    return val, edge, decay


@numba.njit(inline="always", **_JIT)
def _diffuse_gradient_constants(p, sin_b, dc):
    """Distance-independent parts of d diffuse / d (bubble, h, rho)."""
    bubble = p[0]
    rho = p[2]
    span0, total, _, _, cw = dc   # cw = offset_0 = 1 / (1 + exp(5 bubble / w))
    eb = math.exp(-bubble / span0)
    dc0_db = rho * eb
    dc0_dh = (rho / sin_b) * (1.0 - eb) - total * eb * bubble / (span0 * span0) / sin_b
    dc0_drho = span0 * (1.0 - eb)
    dcw_db = -cw * (1.0 - cw) * 5.0 / BUBBLE_EDGE_WIDTH
    return eb, 0.5 - cw, dcw_db, dc0_db, dc0_dh, dc0_drho


@numba.njit(inline="always", **_JIT)
def _diffuse_gradient(p, sin_b, dc, gc, n, e1, e2, i0, i1, i2):
    """Weighted sum over stars of d diffuse(x) / d (bubble, h, rho).

    The derivatives are linear in a few per-star quantities, so a sum over stars needs
    only their weighted sums: ``n = sum w``, ``e1 = sum w edge``, ``e2 = sum w edge (1 -
    edge)`` (``edge`` the bubble-edge step of :func:`_value`), and over the stars at
    ``x >= bubble`` ``i0 = sum w``, ``i1 = sum w decay``, ``i2 = sum w decay x``. One star
    with weight 1 gives its own derivatives (the Jacobian row); the loss kernel passes the
    sums with the weights ``d|r|/d model``.
    """
    bubble = p[0]
    rho = p[2]
    span0, total, c0, _, cw = dc
    eb, denom, dcw_db, dc0_db, dc0_dh, dc0_drho = gc
    g = (e1 - cw * n) / denom         # the diffuse step is c0 * g
    dsb_db = -(5.0 / BUBBLE_EDGE_WIDTH) * e2
    dg_db = (dsb_db - dcw_db * n) / denom + (e1 - cw * n) * dcw_db / (denom * denom)
    d_bubble = dc0_db * g + c0 * dg_db - rho * eb * i0
    d_h = dc0_dh * g + (rho / sin_b) * (eb * i0 - i1) + total * (eb * bubble * i0 - i2) / (
        span0 * span0) / sin_b
    d_rho = dc0_drho * g + span0 * (eb * i0 - i1)
    return d_bubble, d_h, d_rho


@numba.njit(inline="always", **_JIT)
def _cloud_gradient(p, consts, k, n, s1, s2, s3):
    """Weighted sum over stars of d cloud_k(x) / d (centre, span_k, Cum_EBV_k).

    Linear in ``n = sum w``, ``s1 = sum w s``, ``s2 = sum w s (1 - s)`` and ``s3 = sum w u
    s (1 - s)``, with ``s`` the cloud's logistic at the star and ``u = 5 (x - centre) /
    span_k`` (one star with weight 1: its Jacobian row). The derivative in span_k is the
    one at fixed distance_k (centre moving by 2 span_k).
    """
    span = p[4 + 3 * k]
    cum = p[5 + 3 * k]
    mk = consts[k, 0]
    nk = consts[k, 1]
    em = consts[k, 4]
    ck = consts[k, 5]
    cc = ck * (1.0 - ck)
    rise = s1 - ck * n
    d_m = (5.0 / span) * (-cum * em * rise + nk * (cc * n - s2))
    vm = 5.0 * mk / (span * span)
    d_span_m = vm * cum * em * rise - nk * s3 / span - nk * cc * vm * n
    return d_m, d_span_m + 2.0 * d_m, (1.0 + em) * rise


@numba.njit(**_JIT)
def _model_kernel(p, sin_b, x, out, jac, want_jac):
    """Model values (and, if ``want_jac``, the Jacobian d model / d p) at distances ``x``."""
    dc = _diffuse_constants(p[0], p[1], p[2], sin_b)
    gc = _diffuse_gradient_constants(p, sin_b, dc)
    consts = _cloud_constants_of(p)
    s = np.empty(N_CLOUDS)
    for j in range(x.size):
        xj = x[j]
        val, edge, decay = _value(p, xj, dc, consts, s)
        out[j] = val
        if want_jac:
            inside = 1.0 if xj >= p[0] else 0.0
            jac[j, 0], jac[j, 1], jac[j, 2] = _diffuse_gradient(
                p, sin_b, dc, gc, 1.0, edge, edge * (1.0 - edge), inside, inside * decay,
                inside * decay * xj)
            for k in range(N_CLOUDS):
                ss = s[k] * (1.0 - s[k])
                u = consts[k, 3] * (xj - consts[k, 0])
                d_m, d_span, d_cum = _cloud_gradient(p, consts, k, 1.0, s[k], ss, u * ss)
                jac[j, 3 + 3 * k] = d_m
                jac[j, 4 + 3 * k] = d_span
                jac[j, 5 + 3 * k] = d_cum
                jac[j, 0] += d_m


@numba.njit(**_JIT)
def _weighted_diffuse_kernel(p, sin_b, x, c):
    """``sum_m c_m diffuse(x_m)`` and its derivatives d / d (bubble, h, rho): the diffuse
    term alone, summed with the weights ``c`` (see :func:`_diffuse_gradient`)."""
    dc = _diffuse_constants(p[0], p[1], p[2], sin_b)
    gc = _diffuse_gradient_constants(p, sin_b, dc)
    total = n = e1 = e2 = i0 = i1 = i2 = 0.0
    for m in range(x.size):
        xm, cm = x[m], c[m]
        val, _, edge, decay = _diffuse_terms(xm, p[0], p[2], dc[0], dc[1], dc[2], dc[3], dc[4])
        total += cm * val
        n += cm
        e1 += cm * edge
        e2 += cm * (edge * (1.0 - edge))
        if xm >= p[0]:
            i0 += cm
            i1 += cm * decay
            i2 += cm * (decay * xm)
    d_bubble, d_h, d_rho = _diffuse_gradient(p, sin_b, dc, gc, n, e1, e2, i0, i1, i2)
    return total, d_bubble, d_h, d_rho


@numba.njit(**_JIT)
def _loss_grad_kernel(p, sin_b, x, e, wt, lam, share_exp, grad):
    """Eq. 15 loss; writes its gradient into ``grad``.

    The model values of :func:`_model_kernel`, fused with the L1 sum so that no Jacobian is
    stored; stars that the model fits exactly contribute nothing (``sign(0) = 0``). The
    gradient is linear in a few weighted sums over the stars (:func:`_diffuse_gradient`,
    :func:`_cloud_gradient`), so the loop accumulates those and the derivatives are formed
    once at the end.

    With ``share_exp = a > 0`` the penalty on cloud ``k``'s column is
    ``lam |Cum_EBV_k| F_k^a``, ``F_k = sum_j w_j rise_k(x_j) / sum_j w_j`` the share of the
    stars' weight behind the cloud (``rise_k`` its normalised rise, 0 in front, 1 behind);
    ``a = 0`` is eq. 15.
    """
    dc = _diffuse_constants(p[0], p[1], p[2], sin_b)
    gc = _diffuse_gradient_constants(p, sin_b, dc)
    consts = _cloud_constants_of(p)
    s = np.empty(N_CLOUDS)
    # per cloud: sum w s, sum w s (1 - s), sum w u s (1 - s); with sign weights, and (for
    # the weight shares behind the clouds) with the plain weights
    sums = np.zeros((N_CLOUDS, 3))
    shares = np.zeros((N_CLOUDS, 3))
    n = e1 = e2 = i0 = i1 = i2 = 0.0
    wsum = 0.0
    bubble = p[0]
    loss = 0.0
    for j in range(x.size):
        xj = x[j]
        val, edge, decay = _value(p, xj, dc, consts, s)
        if share_exp > 0.0:
            wsum += wt[j]
            for k in range(N_CLOUDS):
                ss = wt[j] * (s[k] * (1.0 - s[k]))
                shares[k, 0] += wt[j] * s[k]
                shares[k, 1] += ss
                shares[k, 2] += ss * (consts[k, 3] * (xj - consts[k, 0]))
        r = e[j] - val
        if r == 0.0:
            continue
        sw = wt[j] if r < 0.0 else -wt[j]   # d|r|/d model = -sign(r)
        loss += wt[j] * abs(r)
        n += sw
        e1 += sw * edge
        e2 += sw * (edge * (1.0 - edge))
        if xj >= bubble:
            i0 += sw
            i1 += sw * decay
            i2 += sw * (decay * xj)
        for k in range(N_CLOUDS):
            ss = sw * (s[k] * (1.0 - s[k]))
            sums[k, 0] += sw * s[k]
            sums[k, 1] += ss
            sums[k, 2] += ss * (consts[k, 3] * (xj - consts[k, 0]))
    grad[0], grad[1], grad[2] = _diffuse_gradient(p, sin_b, dc, gc, n, e1, e2, i0, i1, i2)
    for k in range(N_CLOUDS):
        d_m, d_span, d_cum = _cloud_gradient(p, consts, k, n, sums[k, 0], sums[k, 1],
                                             sums[k, 2])
        grad[3 + 3 * k] = d_m
        grad[4 + 3 * k] = d_span
        grad[5 + 3 * k] = d_cum
        grad[0] += d_m
    for k in range(N_CLOUDS):
        cum = p[5 + 3 * k]
        sign = 1.0 if cum > 0.0 else (-1.0 if cum < 0.0 else 0.0)
        if share_exp > 0.0 and wsum > 0.0:
            # F_k and its derivatives: the cloud's weighted sum at unit column over sum w
            # (_cloud_gradient's d/d cum is the rise itself, its d/d centre and d/d span
            # are cum times those of the rise)
            d_m, d_span, share = _cloud_gradient(p, consts, k, wsum, shares[k, 0],
                                                 shares[k, 1], shares[k, 2])
            share = max(share / wsum, 0.0)
            scale = share ** share_exp
            loss += lam * abs(cum) * scale
            grad[5 + 3 * k] += lam * sign * scale
            if share > 0.0:
                # cum * dF/d(centre, span) = d_m / wsum, d_span / wsum
                f = lam * sign * share_exp * share ** (share_exp - 1.0) / wsum
                grad[3 + 3 * k] += f * d_m
                grad[4 + 3 * k] += f * d_span
                grad[0] += f * d_m
        else:
            loss += lam * abs(cum)
            grad[5 + 3 * k] += lam * sign
    return loss


@numba.njit(**_JIT)
def _density_kernel(p, sin_b, x, out):
    """dE/dx as the package defines it (the bubble-wall step is left out)."""
    dc = _diffuse_constants(p[0], p[1], p[2], sin_b)
    consts = _cloud_constants_of(p)
    for j in range(x.size):
        xj = x[j]
        val = _diffuse_terms(xj, p[0], p[2], dc[0], dc[1], dc[2], dc[3], dc[4])[1]
        for k in range(N_CLOUDS):
            val += _cloud_density_term(xj, consts[k, 0], consts[k, 3], consts[k, 1])
        out[j] = val


# --------------------------------------------------------------------------- checked core
def _check_params(params) -> np.ndarray:
    p = np.ascontiguousarray(params, dtype=np.float64)
    if p.shape != (N_PARAMS,):
        raise ValueError(f"params must have shape ({N_PARAMS},), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("params must be finite")
    spans = p[4::3]
    if p[1] <= 0 or np.any(spans <= 0):
        raise ValueError("h and every span_k must be positive")
    return p


def _check_sin_b(b_lim_deg: float) -> float:
    sin_b = abs(math.sin(math.radians(float(b_lim_deg))))
    if not np.isfinite(sin_b) or sin_b <= 0.0:
        raise ValueError(f"b_lim must be a finite, non-zero latitude (deg), got {b_lim_deg!r}")
    return sin_b


def _check_x(x) -> np.ndarray:
    x = np.ascontiguousarray(np.atleast_1d(x), dtype=np.float64)
    if x.ndim != 1:
        raise ValueError("distances must be a 1-D array")
    if not np.all(np.isfinite(x)):
        raise ValueError("distances must be finite")
    return x


def evaluate_model(params, b_lim_deg: float, distance_kpc) -> np.ndarray:
    """Cumulative E(B-V) (mag) of one sightline at the given distances.

    Parameters
    ----------
    params : array_like, shape (15,)
        ``(bubble, h, rho, distance_1, span_1, Cum_EBV_1, ..., Cum_EBV_4)``; see
        :data:`PARAM_NAMES`. Distances in kpc, rho in mag/kpc, columns in mag.
    b_lim_deg : float
        Latitude used for the diffuse-dust projection (deg, non-zero).
    distance_kpc : array_like, shape (n,)
        Distances (kpc).

    Returns
    -------
    numpy.ndarray, shape (n,)
    """
    p = _check_params(params)
    x = _check_x(distance_kpc)
    out = np.empty(x.size)
    _model_kernel(p, _check_sin_b(b_lim_deg), x, out, np.empty((1, N_PARAMS)), False)
    return out


def evaluate_density(params, b_lim_deg: float, distance_kpc) -> np.ndarray:
    """Dust density dE(B-V)/dx (mag/kpc) as the released package defines it."""
    p = _check_params(params)
    x = _check_x(distance_kpc)
    out = np.empty(x.size)
    _density_kernel(p, _check_sin_b(b_lim_deg), x, out)
    return out


def model_jacobian(params, b_lim_deg: float, distance_kpc) -> np.ndarray:
    """Analytic Jacobian d E(B-V)(x_j) / d p_i, shape (n, 15)."""
    p = _check_params(params)
    x = _check_x(distance_kpc)
    out = np.empty(x.size)
    jac = np.empty((x.size, N_PARAMS))
    _model_kernel(p, _check_sin_b(b_lim_deg), x, out, jac, True)
    return jac


def loss_and_gradient(params, b_lim_deg: float, distance_kpc, ebv, weights,
                      lam: float = 0.1, share_exp: float = 0.0) -> tuple[float, np.ndarray]:
    """Eq. 15 of Wang et al. (2025) and its analytic gradient.

    Parameters
    ----------
    params : array_like, shape (15,)
        Model parameters (:data:`PARAM_NAMES`).
    b_lim_deg : float
        Sightline latitude used by the diffuse term (deg).
    distance_kpc, ebv, weights : array_like, shape (n,)
        Star distances (kpc), observed E(B-V) (mag) and total weights (eq. 14).
    lam : float
        Strength of the L1 penalty on the cloud columns.
    share_exp : float
        0 (default): eq. 15, ``lam sum_k |Cum_EBV_k|``. ``a > 0``: each column's penalty
        is weighed by ``F_k^a``, ``F_k`` the share of the stars' weight behind cloud ``k``
        (its normalised rise, weighted, over the total weight; see
        :class:`~dustmaps_ext_build.parametric.fit.FitConfig` ``penalty_share_exp``).

    Returns
    -------
    loss : float
    gradient : numpy.ndarray, shape (15,)
    """
    p = _check_params(params)
    x = _check_x(distance_kpc)
    e = np.ascontiguousarray(ebv, dtype=np.float64)
    wt = np.ascontiguousarray(weights, dtype=np.float64)
    if e.shape != x.shape or wt.shape != x.shape:
        raise ValueError("distance_kpc, ebv and weights must have the same shape")
    grad = np.empty(N_PARAMS)
    if not share_exp >= 0.0:
        raise ValueError(f"share_exp must be non-negative, got {share_exp!r}")
    loss = _loss_grad_kernel(p, _check_sin_b(b_lim_deg), x, e, wt, float(lam),
                             float(share_exp), grad)
    return float(loss), grad


def cloud_centres(params) -> np.ndarray:
    """Centres ``m_k = distance_k + 2 span_k + bubble`` (kpc) of the four cloud components."""
    p = np.asarray(params, dtype=np.float64)
    return p[..., 3::3] + 2.0 * p[..., 4::3] + p[..., 0:1]
