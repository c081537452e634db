"""The parametric extinction-distance model of Wang et al. (2025), its loss and gradient.

The model is the one the released ``data_v3.fits`` table follows, i.e. the form that the
public ``dustmaps3d`` package evaluates (REFERENCE §3), not the slightly different printed
eq. 3-9 of the paper. With ``x`` the distance (kpc), ``b_lim`` the sightline latitude (deg)
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

The compiled kernels work on plain float64 arrays; :func:`evaluate_model`,
:func:`model_jacobian` and :func:`loss_and_gradient` are the checked entry points.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "N_CLOUDS", "N_PARAMS", "PARAM_NAMES", "BUBBLE_WALL_KPC",
    "evaluate_model", "evaluate_density", "model_jacobian", "loss_and_gradient",
    "cloud_centres",
]

#: Number of cloud components of the model.
N_CLOUDS = 4
#: Number of fitted parameters (3 diffuse + 3 per cloud).
N_PARAMS = 3 + 3 * N_CLOUDS
#: Names of the fitted parameters, in the order of the parameter vector (release column names).
PARAM_NAMES = ("bubble", "h", "diffuse_dust_rho") + tuple(
    f"{name}_{k}" for k in range(1, N_CLOUDS + 1) for name in ("distance", "span", "Cum_EBV"))
#: Width (kpc) of the smooth step that puts the swept-up dust on the Local Bubble wall.
BUBBLE_WALL_KPC = 0.01


# --------------------------------------------------------------------------- kernels
@numba.njit(cache=True, nogil=True, inline="always")
def _sig(t):
    """Logistic 1 / (1 + exp(-t)), without overflow for any finite t."""
    if t >= 0.0:
        return 1.0 / (1.0 + math.exp(-t))
    e = math.exp(t)
    return e / (1.0 + e)


@numba.njit(cache=True, nogil=True)
def _model_kernel(p, sin_b, x, out, jac, want_jac):
    """Model values (and, if ``want_jac``, the Jacobian d model / d p) at distances ``x``."""
    n = x.size
    bubble = p[0]
    h = p[1]
    rho = p[2]
    w = BUBBLE_WALL_KPC
    span0 = h / sin_b
    total = span0 * rho
    eb = math.exp(-bubble / span0)
    c0 = total * (1.0 - eb)
    cw = _sig(-5.0 * bubble / w)          # c = 1 / (1 + exp(5 bubble / w))
    denom = 0.5 - cw
    # derivatives of the diffuse constants with respect to (bubble, h, rho)
    dspan0_dh = 1.0 / sin_b
    dc0_drho = span0 * (1.0 - eb)
    dc0_dh = (rho / sin_b) * (1.0 - eb) - total * eb * bubble / (span0 * span0) * dspan0_dh
    dc0_db = rho * eb
    dcw_db = -cw * (1.0 - cw) * 5.0 / w

    # cloud constants
    m = np.empty(4)
    em = np.empty(4)
    ck = np.empty(4)
    nk = np.empty(4)
    for k in range(4):
        dist = p[3 + 3 * k]
        span = p[4 + 3 * k]
        cum = p[5 + 3 * k]
        m[k] = dist + 2.0 * span + bubble
        v = 5.0 * m[k] / span
        em[k] = math.exp(-v)
        ck[k] = _sig(-v)
        nk[k] = cum * (1.0 + em[k])

    for j in range(n):
        xj = x[j]
        sb = _sig(5.0 * (xj - bubble) / w)
        g = (sb - cw) / denom
        ex = math.exp(-xj / span0)
        inside = xj >= bubble
        val = c0 * g
        if inside:
            val += total * (eb - ex)
        if want_jac:
            dsb_db = -(5.0 / w) * sb * (1.0 - sb)
            dg_db = (dsb_db - dcw_db) / denom + (sb - cw) * dcw_db / (denom * denom)
            d_bubble = dc0_db * g + c0 * dg_db
            d_h = dc0_dh * g
            d_rho = dc0_drho * g
            if inside:
                d_bubble += -rho * eb
                d_h += (rho / sin_b) * (eb - ex) + total * (
                    eb * bubble - ex * xj) / (span0 * span0) * dspan0_dh
                d_rho += span0 * (eb - ex)
        for k in range(4):
            span = p[4 + 3 * k]
            u = 5.0 * (xj - m[k]) / span
            s = _sig(u)
            val += nk[k] * (s - ck[k])
            if want_jac:
                cum = p[5 + 3 * k]
                ss = s * (1.0 - s)
                cc = ck[k] * (1.0 - ck[k])
                d_m = (5.0 / span) * (-cum * em[k] * (s - ck[k]) + nk[k] * (cc - ss))
                vm = 5.0 * m[k] / (span * span)
                d_span_m = (vm * cum * em[k] * (s - ck[k]) - nk[k] * (u / span) * ss
                            - nk[k] * cc * vm)
                jac[j, 3 + 3 * k] = d_m
                jac[j, 4 + 3 * k] = d_span_m + 2.0 * d_m
                jac[j, 5 + 3 * k] = (1.0 + em[k]) * (s - ck[k])
                d_bubble += d_m
        out[j] = val
        if want_jac:
            jac[j, 0] = d_bubble
            jac[j, 1] = d_h
            jac[j, 2] = d_rho


@numba.njit(cache=True, nogil=True)
def _loss_grad_kernel(p, sin_b, x, e, wt, lam, grad, consts, svals):
    """Eq. 15 loss; writes its gradient into ``grad``.

    ``consts`` (4, 4) and ``svals`` (n, 4) are scratch arrays. The same arithmetic as
    :func:`_model_kernel`, fused with the L1 sum so that no Jacobian is stored; the cloud
    logistic values are kept between the value and gradient passes, and those of distant
    stars (saturated to machine precision) are not evaluated.
    """
    bubble = p[0]
    h = p[1]
    rho = p[2]
    w = BUBBLE_WALL_KPC
    span0 = h / sin_b
    total = span0 * rho
    eb = math.exp(-bubble / span0)
    c0 = total * (1.0 - eb)
    cw = _sig(-5.0 * bubble / w)
    denom = 0.5 - cw
    dspan0_dh = 1.0 / sin_b
    dc0_drho = span0 * (1.0 - eb)
    dc0_dh = (rho / sin_b) * (1.0 - eb) - total * eb * bubble / (span0 * span0) * dspan0_dh
    dc0_db = rho * eb
    dcw_db = -cw * (1.0 - cw) * 5.0 / w
    g_sat = (1.0 - cw) / denom   # g once the wall step has saturated
    for k in range(4):
        span = p[4 + 3 * k]
        mk = p[3 + 3 * k] + 2.0 * span + bubble
        v = 5.0 * mk / span
        consts[k, 0] = mk
        consts[k, 1] = math.exp(-v)
        consts[k, 2] = _sig(-v)
        consts[k, 3] = p[5 + 3 * k] * (1.0 + consts[k, 1])
    for i in range(grad.size):
        grad[i] = 0.0
    loss = 0.0
    for j in range(x.size):
        xj = x[j]
        t = 5.0 * (xj - bubble) / w
        if t > 40.0:
            sb = 1.0
            g = g_sat
            dg_db = dcw_db / denom * (-1.0 + (1.0 - cw) / denom)
        else:
            sb = _sig(t)
            g = (sb - cw) / denom
            dsb_db = -(5.0 / w) * sb * (1.0 - sb)
            dg_db = (dsb_db - dcw_db) / denom + (sb - cw) * dcw_db / (denom * denom)
        val = c0 * g
        d_bubble = dc0_db * g + c0 * dg_db
        d_h = dc0_dh * g
        d_rho = dc0_drho * g
        if xj >= bubble:
            ex = math.exp(-xj / span0)
            val += total * (eb - ex)
            d_bubble += -rho * eb
            d_h += (rho / sin_b) * (eb - ex) + total * (eb * bubble - ex * xj) / (
                span0 * span0) * dspan0_dh
            d_rho += span0 * (eb - ex)
        for k in range(4):
            span = p[4 + 3 * k]
            mk = consts[k, 0]
            u = 5.0 * (xj - mk) / span
            if u > 40.0:
                s = 1.0
            elif u < -40.0:
                s = 0.0
            else:
                s = _sig(u)
            svals[j, k] = s
            val += consts[k, 3] * (s - consts[k, 2])
        r = e[j] - val
        if r == 0.0:
            continue
        sw = wt[j] if r < 0.0 else -wt[j]   # d|r|/d model = -sign(r)
        loss += wt[j] * abs(r)
        grad[0] += sw * d_bubble
        grad[1] += sw * d_h
        grad[2] += sw * d_rho
        for k in range(4):
            span = p[4 + 3 * k]
            cum = p[5 + 3 * k]
            mk = consts[k, 0]
            em = consts[k, 1]
            ck = consts[k, 2]
            nk = consts[k, 3]
            u = 5.0 * (xj - mk) / span
            s = svals[j, k]
            ss = s * (1.0 - s)
            cc = ck * (1.0 - ck)
            d_m = (5.0 / span) * (-cum * em * (s - ck) + nk * (cc - ss))
            vm = 5.0 * mk / (span * span)
            d_span_m = vm * cum * em * (s - ck) - nk * (u / span) * ss - nk * cc * vm
            grad[3 + 3 * k] += sw * d_m
            grad[4 + 3 * k] += sw * (d_span_m + 2.0 * d_m)
            grad[5 + 3 * k] += sw * (1.0 + em) * (s - ck)
            grad[0] += sw * d_m
    for k in range(4):
        cum = p[5 + 3 * k]
        loss += lam * abs(cum)
        if cum > 0.0:
            grad[5 + 3 * k] += lam
        elif cum < 0.0:
            grad[5 + 3 * k] -= lam
    return loss


@numba.njit(cache=True, nogil=True)
def _density_kernel(p, sin_b, x, out):
    """dE/dx as the package defines it (the bubble-wall step is left out)."""
    bubble = p[0]
    span0 = p[1] / sin_b
    rho = p[2]
    for j in range(x.size):
        xj = x[j]
        val = 0.0
        if xj >= bubble:
            val = rho * math.exp(-xj / span0)
        for k in range(4):
            span = p[4 + 3 * k]
            cum = p[5 + 3 * k]
            mk = p[3 + 3 * k] + 2.0 * span + bubble
            nk = cum * (1.0 + math.exp(-5.0 * mk / span))
            s = _sig(5.0 * (xj - mk) / span)
            val += (5.0 / span) * nk * s * (1.0 - s)
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
                      lam: float = 0.1) -> tuple[float, np.ndarray]:
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
    loss = _loss_grad_kernel(p, _check_sin_b(b_lim_deg), x, e, wt, float(lam), grad,
                             np.empty((N_CLOUDS, 4)), np.empty((x.size, N_CLOUDS)))
    return float(loss), grad


def cloud_centres(params) -> np.ndarray:
    """Centres ``m_k = distance_k + 2 span_k + bubble`` (kpc) of the four cloud components."""
    p = np.asarray(params, dtype=np.float64)
    return p[..., 3::3] + 2.0 * p[..., 4::3] + p[..., 0:1]
