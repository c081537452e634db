"""Log-normal prior on the reddening jump in each distance bin (Zucker et al. 2025 §4.2.3).

The line-of-sight profile is a step function: the cumulative reddening at the distance-modulus
edge ``mu_x`` is ``0.01 * y[x]`` mag with integer ``y``; the jump in bin ``x`` is
``dy[x] = y[x] - y[x-1]`` (``y[-1] = 0``). Following Green et al. (2019), each jump has a
log-normal prior whose mean comes from a smooth model of the Galactic dust:

* **Smooth dust model** -- by default (:class:`FlaredSechDiskDustModel`) the smooth ISM disk
  of the bayestar code that made the released map: a sech^2 disk of scale height 134.4 pc
  that flares beyond R = 4.4 kpc, an exponential radial profile (2.26 kpc) with an inner
  hole inside R_0 / 2, R_0 = 8 kpc, the Sun 25 pc above the plane (the parameters of
  Drimmel & Spergel 2001), normalised to ``rho_sun = 0.2 mag/kpc`` at the Sun as bayestar
  does. :class:`SmoothDiskDustModel` keeps the plain exponential disk
  ``rho(R, z) = rho_sun * exp(-(R - R_sun) / h_R - |z + z_sun| / h_z)`` (h_R = 2.38 kpc,
  h_z = 0.114 kpc, R_sun = 8.5 kpc, cut beyond 20 kpc) that earlier versions used; it rises
  36-fold toward the Galactic Centre where the bayestar disk has its hole.
* **Per-bin mean** -- ``m_x``, the model column between the edges ``mu_{x-1}`` and ``mu_x``
  (bin 0 from the Sun to ``mu_0``), integrated with 64 sub-steps per bin and clipped to
  ``[exp(-10), exp(-3)]`` mag (0.045 mmag to 0.050 mag), the floor and ceiling on
  ``ln(mean jump)`` that the public bayestar code uses by default.
* **Log-normal** -- ``ln dE ~ N(ln m_x - sigma^2 / 2, sigma)`` (so that the mean jump is
  ``m_x``) with ``sigma = 0.75``, bayestar's default ``sigma_log_Delta_EBV``.
* **Discretisation** -- by default as the C++ code that made the released map: the
  probability of the integer jump ``dy`` is the exact log-normal mass on
  ``[0.01 dy, 0.01 (dy + 1))`` (the C++ code sums ten sub-samples), i.e. a jump ``E``
  counts as ``floor(100 E)`` quanta. With the per-bin means of the nearby disk (below one
  quantum) most jumps then count as zero, and the prior's mean profile falls to 40% of the
  model's at 1 kpc (0.10 instead of 0.25 mag towards (330, -1.5) deg), which pulls the
  thinly constrained near part of a profile low. ``rounding="split"`` keeps the model's
  mean instead: a jump between ``0.01 k`` and ``0.01 (k + 1)`` counts as ``k`` quanta with
  probability ``k + 1 - 100 E`` and as ``k + 1`` otherwise (the log-normal integrated
  against a triangle kernel, exactly). Either table is normalised over
  ``dy = 0 .. n_E - 1`` in each bin; negative jumps have zero probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

__all__ = ["SmoothDiskDustModel", "FlaredSechDiskDustModel", "jump_prior_means",
           "log_jump_prior_table"]


@dataclass(frozen=True)
class SmoothDiskDustModel:
    """Smooth exponential dust disk used as the mean of the jump prior.

    Parameters
    ----------
    rho_sun : float
        Midplane density at the Sun (E(B-V) mag/kpc).
    h_R_kpc, h_z_kpc : float
        Exponential scale length and height (kpc).
    R_sun_kpc, z_sun_kpc : float
        Galactocentric radius and height of the Sun (kpc).
    R_max_kpc : float
        No dust beyond this Galactocentric radius (kpc).
    sigma_ln : float
        Standard deviation of ln(jump).
    mean_floor, mean_ceil : float
        Clip of the per-bin mean jump (mag).
    """

    rho_sun: float = 0.2
    h_R_kpc: float = 2.38
    h_z_kpc: float = 0.114
    R_sun_kpc: float = 8.5
    z_sun_kpc: float = 0.0
    R_max_kpc: float = 20.0
    sigma_ln: float = 0.75
    mean_floor: float = math.exp(-10.0)
    mean_ceil: float = math.exp(-3.0)

    def density(self, l_deg: float, b_deg: float, d_kpc) -> np.ndarray:
        """Model density (mag/kpc) along the direction (l, b) at distances ``d_kpc``."""
        d = np.asarray(d_kpc, dtype=np.float64)
        lr, br = math.radians(l_deg), math.radians(b_deg)
        x = d * math.cos(br) * math.cos(lr)
        y = d * math.cos(br) * math.sin(lr)
        z = d * math.sin(br)
        R = np.hypot(self.R_sun_kpc - x, y)
        rho = self.rho_sun * np.exp(-(R - self.R_sun_kpc) / self.h_R_kpc
                                    - np.abs(z + self.z_sun_kpc) / self.h_z_kpc)
        return np.where(R > self.R_max_kpc, 0.0, rho)


@dataclass(frozen=True)
class FlaredSechDiskDustModel:
    """The smooth ISM disk of the code that made the released map (the default prior).

    The model of bayestar's ``TGalacticModel::rho_ISM`` (the fork tagged v0.2.0 that the
    paper cites; parameters of Drimmel & Spergel 2001), with Galactocentric radius ``R``
    and height ``Z`` of a point (``Z = d sin b``, the Sun at ``Z_0`` above the plane)::

        rho(R, Z) = rho_sun * f(R) / cosh^2((Z + Z_0) / H(R)) / (f(R_0) / cosh^2(Z_0 / H_0))
        H(R) = H_0 + max(R - R_flare, 0) * dH/dR                    (flare)
        f(R) = exp(-R / L)                           for R > R_0 / 2
        f(R) = exp(-R_0 / (2 L) - (R - R_0/2)^2 / (R_0^2 / 4))  inside  (inner hole)

    normalised to ``rho_sun`` (E(B-V) mag/kpc) at the Sun, as bayestar normalises its
    prior to 0.2 mag/kpc locally.

    Parameters
    ----------
    rho_sun : float
        Density at the Sun (mag/kpc).
    R0_kpc, Z0_kpc : float
        Sun's Galactocentric radius (8 kpc) and height above the plane (25 pc).
    H_kpc, L_kpc : float
        Scale height (134.4 pc) and length (2.26 kpc).
    dH_dR : float
        Flare: growth of the scale height per unit radius beyond ``R_flare_kpc`` (0.0148).
    R_flare_kpc : float
        Radius where the flare starts (4.4 kpc).
    sigma_ln, mean_floor, mean_ceil : float
        As in :class:`SmoothDiskDustModel`.
    """

    rho_sun: float = 0.2
    R0_kpc: float = 8.0
    Z0_kpc: float = 0.025
    H_kpc: float = 0.1344
    L_kpc: float = 2.26
    dH_dR: float = 0.0148
    R_flare_kpc: float = 4.4
    sigma_ln: float = 0.75
    mean_floor: float = math.exp(-10.0)
    mean_ceil: float = math.exp(-3.0)

    def shape(self, R_kpc, Z_kpc) -> np.ndarray:
        """Unnormalised density at Galactocentric radius ``R`` and height ``Z`` (kpc)."""
        R = np.asarray(R_kpc, np.float64)
        Z = np.asarray(Z_kpc, np.float64)
        H = self.H_kpc + np.maximum(R - self.R_flare_kpc, 0.0) * self.dH_dR
        half = 0.5 * self.R0_kpc
        radial = np.where(R > half, -R / self.L_kpc,
                          -half / self.L_kpc - (R - half) ** 2 / (half * half))
        return np.exp(radial) / np.cosh((Z + self.Z0_kpc) / H) ** 2

    def density(self, l_deg: float, b_deg: float, d_kpc) -> np.ndarray:
        """Model density (mag/kpc) along the direction (l, b) at distances ``d_kpc``."""
        d = np.asarray(d_kpc, dtype=np.float64)
        lr, br = math.radians(l_deg), math.radians(b_deg)
        x = self.R0_kpc - d * math.cos(br) * math.cos(lr)
        y = d * math.cos(br) * math.sin(lr)
        local = float(self.shape(self.R0_kpc, 0.0))
        return self.rho_sun * self.shape(np.hypot(x, y), d * math.sin(br)) / local


def jump_prior_means(l_deg: float, b_deg: float, dm_edges, model=None,
                     n_sub: int = 64) -> np.ndarray:
    """Mean reddening jump (mag) of the smooth model in each distance bin.

    Parameters
    ----------
    l_deg, b_deg : float
        Direction of the sightline (deg).
    dm_edges : array_like, shape (n_dist,)
        Distance-modulus edges; bin ``x`` ends at ``dm_edges[x]``, bin 0 starts at the Sun.
    model : FlaredSechDiskDustModel or SmoothDiskDustModel, optional
        The smooth dust model (default :class:`FlaredSechDiskDustModel`).
    n_sub : int
        Midpoint sub-steps per bin.

    Returns
    -------
    numpy.ndarray, shape (n_dist,)
    """
    model = model or FlaredSechDiskDustModel()
    edges = np.asarray(dm_edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("dm_edges must be a strictly increasing 1D array")
    d_edges = np.concatenate([[0.0], 10.0 ** (edges / 5.0 - 2.0)])  # kpc
    t = (np.arange(n_sub) + 0.5) / n_sub
    lo, hi = d_edges[:-1], d_edges[1:]
    mids = lo[:, None] + (hi - lo)[:, None] * t[None, :]
    rho = model.density(l_deg, b_deg, mids.ravel()).reshape(mids.shape)
    means = rho.mean(axis=1) * (hi - lo)
    return np.clip(means, model.mean_floor, model.mean_ceil)


def _log_diff_ndtr(z_lo: np.ndarray, z_hi: np.ndarray) -> np.ndarray:
    """log(Phi(z_hi) - Phi(z_lo)) for z_hi > z_lo, stable in both tails."""
    upper = z_lo > 0  # use survival functions in the upper tail
    a = np.where(upper, -z_hi, z_lo)
    b = np.where(upper, -z_lo, z_hi)
    la, lb = log_ndtr(a), log_ndtr(b)
    with np.errstate(divide="ignore"):
        return lb + np.log(-np.expm1(np.minimum(la - lb, -1e-300)))


def log_jump_prior_table(means, sigma_ln: float = 0.75, n_E: int = 700,
                         dE: float = 0.01, rounding: str = "floor") -> np.ndarray:
    """Table of log P(jump = dy) for each distance bin and integer jump.

    Parameters
    ----------
    means : array_like, shape (n_dist,)
        Mean jump (mag) in each bin (:func:`jump_prior_means`).
    sigma_ln : float
        Standard deviation of ln(jump).
    n_E : int
        Number of reddening quanta (700 for the 0-7 mag grid).
    dE : float
        Size of a quantum (mag).
    rounding : {"floor", "split"}
        How a continuous jump ``E`` becomes whole quanta. ``"floor"`` (default, as the C++
        code of the released map tabulates it): ``E`` counts as ``floor(E / dE)``; jumps
        below one quantum then mostly count as zero (with the default model the prior's
        mean profile is 0.10 instead of 0.25 mag at 1 kpc towards (330, -1.5) deg).
        ``"split"``: ``E`` between ``k dE`` and ``(k + 1) dE`` counts as ``k`` with
        probability ``k + 1 - E / dE`` and as ``k + 1`` otherwise, so that the mean jump
        stays ``m_x`` and the mean profile is the model's column.

    Returns
    -------
    numpy.ndarray, shape (n_dist, n_E), float64
        Normalised over ``dy`` in each bin; every entry is finite.
    """
    means = np.asarray(means, dtype=np.float64)
    if np.any(~np.isfinite(means)) or np.any(means <= 0):
        raise ValueError("prior means must be finite and positive")
    if sigma_ln <= 0:
        raise ValueError("sigma_ln must be positive")
    if rounding not in ("split", "floor"):
        raise ValueError(f"rounding must be 'split' or 'floor', not {rounding!r}")
    mu_ln = np.log(means) - 0.5 * sigma_ln ** 2
    edges = dE * np.arange(n_E + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        z = (np.log(edges)[None, :] - mu_ln[:, None]) / sigma_ln  # z[:, 0] = -inf
    log_mass = _log_diff_ndtr(z[:, :-1], z[:, 1:])  # of [k dE, (k + 1) dE)
    if rounding == "floor":
        logp = log_mass
        centres = dE * (np.arange(n_E) + 0.5)
    else:
        # partial first moment over each quantum, in quanta: int E p(E) dE / dE
        log_moment = (np.log(means / dE)[:, None]
                      + _log_diff_ndtr(z[:, :-1] - sigma_ln, z[:, 1:] - sigma_ln))
        k = np.arange(n_E, dtype=np.float64)[None, :]
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            # E / dE - k in [0, 1) over quantum k: its mean there, times the mass
            frac = np.clip(np.exp(log_moment - log_mass) - k, 0.0, 1.0)
            up = log_mass + np.log(frac)  # goes to k + 1
            down = log_mass + np.log1p(-frac)  # stays at k
        logp = down.copy()
        logp[:, 1:] = np.logaddexp(down[:, 1:], up[:, :-1])
        centres = dE * np.maximum(np.arange(n_E), 0.5)
    # Far in the upper tail the mass underflows: continue with the log density there.
    log_pdf = (-0.5 * ((np.log(centres)[None, :] - mu_ln[:, None]) / sigma_ln) ** 2
               - np.log(centres)[None, :] - math.log(sigma_ln * math.sqrt(2 * math.pi))
               + math.log(dE))
    logp = np.where(np.isfinite(logp) & (logp > -700), logp, log_pdf)
    logp -= np.logaddexp.reduce(logp, axis=1)[:, None]
    return logp
