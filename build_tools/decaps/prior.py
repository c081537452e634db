"""Log-normal prior on the reddening jump in each distance bin (Zucker et al. 2025 §4.2.3).

The line-of-sight profile is a step function: the cumulative reddening at the distance-modulus
edge ``mu_x`` is ``0.01 * y[x]`` mag with integer ``y``; the jump in bin ``x`` is
``dy[x] = y[x] - y[x-1]`` (``y[-1] = 0``). Following Green et al. (2019), each jump has a
log-normal prior whose mean comes from a smooth model of the Galactic dust:

* **Smooth dust model** -- an exponential disk without warp, spiral arms or central hole, in
  the spirit of the smooth disk of Drimmel & Spergel (2001):
  ``rho(R, z) = rho_sun * exp(-(R - R_sun) / h_R - |z + z_sun| / h_z)`` (E(B-V) mag/kpc), with
  defaults ``rho_sun = 0.2 mag/kpc`` (the local normalisation used by the public bayestar
  code), ``h_R = 2.38 kpc`` and ``h_z = 0.114 kpc`` (0.28 and 0.0134 R_sun for R_sun =
  8.5 kpc), ``R_sun = 8.5 kpc``, ``z_sun = 0``, truncated beyond ``R_max = 20 kpc``.
* **Per-bin mean** -- ``m_x``, the model column between the edges ``mu_{x-1}`` and ``mu_x``
  (bin 0 from the Sun to ``mu_0``), integrated with 64 sub-steps per bin and clipped to
  ``[exp(-10), exp(-3)]`` mag (0.045 mmag to 0.050 mag), the floor and ceiling on
  ``ln(mean jump)`` that the public bayestar code uses by default.
* **Log-normal** -- ``ln dE ~ N(ln m_x - sigma^2 / 2, sigma)`` (so that the mean jump is
  ``m_x``) with ``sigma = 0.75``, bayestar's default ``sigma_log_Delta_EBV``.
* **Discretisation** -- the probability of the integer jump ``dy`` is the exact log-normal
  mass on ``[0.01 dy, 0.01 (dy + 1))`` (the C++ code approximated it with ten sub-samples),
  normalised over ``dy = 0 .. n_E - 1`` in each bin; negative jumps have zero probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

__all__ = ["SmoothDiskDustModel", "jump_prior_means", "log_jump_prior_table"]


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


def jump_prior_means(l_deg: float, b_deg: float, dm_edges, model: SmoothDiskDustModel | None = None,
                     n_sub: int = 64) -> np.ndarray:
    """Mean reddening jump (mag) of the smooth model in each distance bin.

    Parameters
    ----------
    l_deg, b_deg : float
        Direction of the sightline (deg).
    dm_edges : array_like, shape (n_dist,)
        Distance-modulus edges; bin ``x`` ends at ``dm_edges[x]``, bin 0 starts at the Sun.
    model : SmoothDiskDustModel, optional
        The smooth dust model (defaults documented in the module).
    n_sub : int
        Midpoint sub-steps per bin.

    Returns
    -------
    numpy.ndarray, shape (n_dist,)
    """
    model = model or SmoothDiskDustModel()
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
                         dE: float = 0.01) -> np.ndarray:
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
    mu_ln = np.log(means) - 0.5 * sigma_ln ** 2
    edges = dE * np.arange(n_E + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        z = (np.log(edges)[None, :] - mu_ln[:, None]) / sigma_ln  # z[:, 0] = -inf
    logp = _log_diff_ndtr(z[:, :-1], z[:, 1:])
    # Far in the upper tail the mass underflows: continue with the log density there.
    centres = dE * (np.arange(n_E) + 0.5)
    log_pdf = (-0.5 * ((np.log(centres)[None, :] - mu_ln[:, None]) / sigma_ln) ** 2
               - np.log(centres)[None, :] - math.log(sigma_ln * math.sqrt(2 * math.pi))
               + math.log(dE))
    logp = np.where(np.isfinite(logp) & (logp > -700), logp, log_pdf)
    logp -= np.logaddexp.reduce(logp, axis=1)[:, None]
    return logp
