"""A simulated galaxy with a known 3D dust distribution, shared by both build pipelines.

The dust density (E(B-V) per kpc) is the sum of

* a smooth exponential disk, ``rho0 * exp(-|z - z_sun| / h_z) * exp(-(R - R_sun) / h_R)``,
  empty inside a spherical local bubble of radius ``bubble_radius_kpc`` around the Sun and
  beyond ``disk_edge_kpc`` from the Galactic centre;
* Gaussian clouds (3D isotropic), each with a known centre, radius (Gaussian sigma) and
  column through its centre.

The cumulative reddening along a sightline is the truth that the tests, benchmarks and
the demo compare against.  Clouds are integrated analytically (error functions); the disk
is integrated numerically with a midpoint rule whose step is ``max(2 pc, 0.5% of the
distance)``, starting exactly at the bubble edge, so the truth is accurate to ~1e-4 mag.

Coordinates are heliocentric Galactic: ``x`` towards l = 0, ``y`` towards l = 90 deg,
``z`` towards the north Galactic pole; distances in kpc.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np

__all__ = ["Cloud", "SimulatedGalaxy", "default_galaxy", "draw_stars", "draw_observed_stars",
           "lbd_to_xyz", "draw_absolute_magnitudes", "absolute_g_from_v",
           "luminosity_function_density", "SOLAR_NEIGHBOURHOOD_LF", "SOLAR_NEIGHBOURHOOD_LF_MV",
           "XP_FAINT_LIMIT_MG", "LUMINOSITY_FUNCTIONS"]


@dataclass(frozen=True)
class Cloud:
    """A 3D Gaussian dust cloud.

    Parameters
    ----------
    l_deg, b_deg : float
        Galactic longitude and latitude of the cloud centre (deg).
    distance_kpc : float
        Heliocentric distance of the centre (kpc).
    radius_kpc : float
        Gaussian sigma of the density (kpc).
    column_mag : float
        E(B-V) accumulated through the centre of the cloud (mag).
    """

    l_deg: float
    b_deg: float
    distance_kpc: float
    radius_kpc: float
    column_mag: float

    @property
    def peak_density(self) -> float:
        """Density at the centre (mag/kpc)."""
        return self.column_mag / (math.sqrt(2.0 * math.pi) * self.radius_kpc)

    @property
    def centre_xyz(self) -> np.ndarray:
        """Heliocentric Cartesian centre (kpc)."""
        return np.array(lbd_to_xyz(self.l_deg, self.b_deg, self.distance_kpc))


@dataclass(frozen=True)
class SimulatedGalaxy:
    """A known 3D dust field.

    Parameters
    ----------
    disk_density : float
        Midplane density of the smooth disk at the Sun's radius (E(B-V) mag/kpc).
    scale_height_kpc, scale_length_kpc : float
        Exponential scale height and length of the smooth disk (kpc).
    bubble_radius_kpc : float
        Radius of the dust-free local bubble around the Sun (kpc).
    sun_R_kpc, sun_z_kpc : float
        Galactocentric radius of the Sun and its height above the midplane (kpc).
    disk_edge_kpc : float
        Galactocentric radius beyond which the disk holds no dust (kpc).
    clouds : tuple of Cloud
        Discrete clouds.
    """

    disk_density: float = 0.4
    scale_height_kpc: float = 0.1
    scale_length_kpc: float = 3.0
    bubble_radius_kpc: float = 0.1
    sun_R_kpc: float = 8.2
    sun_z_kpc: float = 0.0
    disk_edge_kpc: float = 16.0
    clouds: tuple = field(default_factory=tuple)

    # ------------------------------------------------------------------ truth
    def density(self, l_deg, b_deg, d_kpc) -> np.ndarray:
        """Dust density (E(B-V) mag/kpc) at Galactic (l, b, d); arrays broadcast."""
        l_deg, b_deg, d_kpc = np.broadcast_arrays(
            np.asarray(l_deg, float), np.asarray(b_deg, float), np.asarray(d_kpc, float))
        x, y, z = lbd_to_xyz(l_deg, b_deg, d_kpc)
        rho = self._disk_density_xyz(x, y, z)
        rho = np.where(d_kpc < self.bubble_radius_kpc, 0.0, rho)
        for c in self.clouds:
            cx, cy, cz = c.centre_xyz
            r2 = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2
            rho = rho + c.peak_density * np.exp(-0.5 * r2 / c.radius_kpc ** 2)
        return rho

    def _disk_density_xyz(self, x, y, z):
        gx = self.sun_R_kpc - x  # Galactocentric x (towards the Sun from the centre)
        R = np.hypot(gx, y)
        rho = self.disk_density * np.exp(
            -np.abs(z + self.sun_z_kpc) / self.scale_height_kpc
            - (R - self.sun_R_kpc) / self.scale_length_kpc)
        return np.where(R > self.disk_edge_kpc, 0.0, rho)

    def cumulative_ebv(self, l_deg, b_deg, d_kpc) -> np.ndarray:
        """True cumulative E(B-V) (mag) from the Sun to ``d_kpc`` along each (l, b).

        Parameters
        ----------
        l_deg, b_deg, d_kpc : array_like, shape (n,)
            One distance (kpc) per sightline (deg).

        Returns
        -------
        numpy.ndarray, shape (n,)
        """
        l_deg, b_deg, d_kpc = (np.atleast_1d(np.asarray(a, dtype=np.float64))
                               for a in np.broadcast_arrays(l_deg, b_deg, d_kpc))
        return self.cumulative_profile(l_deg, b_deg, d_kpc[:, None])[:, 0]

    def cumulative_profile(self, l_deg, b_deg, d_kpc) -> np.ndarray:
        """True cumulative E(B-V) (mag) along each sightline at several distances.

        Parameters
        ----------
        l_deg, b_deg : array_like, shape (n,)
            Sightline directions (deg).
        d_kpc : array_like, shape (m,) or (n, m)
            Distances (kpc): one grid shared by all sightlines, or one row per sightline.

        Returns
        -------
        numpy.ndarray, shape (n, m)
        """
        l_deg = np.atleast_1d(np.asarray(l_deg, dtype=np.float64))
        b_deg = np.atleast_1d(np.asarray(b_deg, dtype=np.float64))
        d = np.broadcast_to(np.asarray(d_kpc, dtype=np.float64), (l_deg.size, np.shape(d_kpc)[-1]))
        if np.any(d < 0) or not np.all(np.isfinite(d)):
            raise ValueError("distances must be finite and non-negative")
        order = np.argsort(d, axis=1, kind="stable")
        d_sorted = np.ascontiguousarray(np.take_along_axis(d, order, axis=1))
        disk_sorted = _disk_column_kernel(
            np.radians(l_deg), np.radians(b_deg), d_sorted,
            self.disk_density, self.scale_height_kpc, self.scale_length_kpc,
            self.bubble_radius_kpc, self.sun_R_kpc, self.sun_z_kpc, self.disk_edge_kpc)
        out = np.empty_like(disk_sorted)
        np.put_along_axis(out, order, disk_sorted, axis=1)
        out += self._cloud_columns(l_deg, b_deg, d)
        return out

    def _cloud_columns(self, l_deg, b_deg, d):
        from scipy.special import erf

        u = np.stack(lbd_to_xyz(l_deg, b_deg, 1.0), axis=-1)  # (n, 3) unit vectors
        total = np.zeros(d.shape)
        for c in self.clouds:
            centre = c.centre_xyz
            t0 = u @ centre  # distance of closest approach along the ray
            perp2 = np.maximum(centre @ centre - t0 ** 2, 0.0)
            s = c.radius_kpc
            amp = c.peak_density * np.exp(-0.5 * perp2 / s ** 2) * s * math.sqrt(math.pi / 2.0)
            root2s = math.sqrt(2.0) * s
            hit = perp2 < (8.0 * s) ** 2  # elsewhere the cloud adds < 1e-14 of its column
            if np.any(hit):
                total[hit] += amp[hit, None] * (erf((d[hit] - t0[hit, None]) / root2s)
                                                + erf(t0[hit] / root2s)[:, None])
        return total

    def cloud_distances_along(self, l_deg: float, b_deg: float, min_column: float = 0.0):
        """Distances (kpc) and columns (mag) of the clouds that a sightline crosses.

        Returns the point of closest approach of each cloud whose column along this
        sightline is at least ``min_column``, sorted by distance.
        """
        return [(t0, col) for t0, col, _ in self.cloud_crossings(l_deg, b_deg, min_column)]

    def cloud_crossings(self, l_deg: float, b_deg: float, min_column: float = 0.0):
        """As :meth:`cloud_distances_along`, with each cloud's radius (Gaussian sigma, kpc):
        a list of ``(distance, column, radius)`` sorted by distance."""
        u = np.stack(lbd_to_xyz(l_deg, b_deg, 1.0))
        found = []
        for c in self.clouds:
            centre = c.centre_xyz
            t0 = float(u @ centre)
            perp2 = max(float(centre @ centre) - t0 ** 2, 0.0)
            col = c.column_mag * math.exp(-0.5 * perp2 / c.radius_kpc ** 2)
            if t0 > 0 and col >= min_column:
                found.append((t0, col, c.radius_kpc))
        found.sort()
        return found


@numba.njit(cache=True, nogil=True, parallel=True)
def _disk_column_kernel(l_rad, b_rad, d_sorted, rho0, hz, hR, r_bubble, R_sun, z_sun, R_edge):
    n, m = d_sorted.shape
    out = np.zeros((n, m))
    for i in numba.prange(n):
        cl, sl = math.cos(l_rad[i]), math.sin(l_rad[i])
        cb, sb = math.cos(b_rad[i]), math.sin(b_rad[i])
        s = r_bubble
        acc = 0.0
        for j in range(m):
            target = d_sorted[i, j]
            while s < target:
                ds = min(max(0.002, 0.005 * s), target - s)
                mid = s + 0.5 * ds
                x = mid * cb * cl
                y = mid * cb * sl
                z = mid * sb
                gx = R_sun - x
                R = math.sqrt(gx * gx + y * y)
                if R <= R_edge:
                    acc += ds * rho0 * math.exp(-abs(z + z_sun) / hz - (R - R_sun) / hR)
                s += ds
            out[i, j] = acc
    return out


def lbd_to_xyz(l_deg, b_deg, d_kpc):
    """Heliocentric Galactic Cartesian coordinates (kpc) of (l, b, d)."""
    l_rad = np.radians(l_deg)
    b_rad = np.radians(b_deg)
    return (d_kpc * np.cos(b_rad) * np.cos(l_rad),
            d_kpc * np.cos(b_rad) * np.sin(l_rad),
            d_kpc * np.sin(b_rad))


def default_galaxy() -> SimulatedGalaxy:
    """The simulated galaxy used by the demo map, the tests and the benchmarks.

    A smooth disk plus six clouds spread over the southern Galactic plane (inside the
    DECaPS footprint, 239 < l or l < 6 deg, |b| < 10 deg) and two in the north, at
    distances from 0.3 to 3 kpc.
    """
    clouds = (
        Cloud(l_deg=300.0, b_deg=1.0, distance_kpc=0.4, radius_kpc=0.03, column_mag=0.6),
        Cloud(l_deg=265.0, b_deg=-4.0, distance_kpc=0.9, radius_kpc=0.06, column_mag=0.8),
        Cloud(l_deg=330.0, b_deg=-1.5, distance_kpc=1.6, radius_kpc=0.08, column_mag=1.2),
        Cloud(l_deg=250.0, b_deg=5.0, distance_kpc=0.3, radius_kpc=0.02, column_mag=0.4),
        Cloud(l_deg=355.0, b_deg=3.0, distance_kpc=2.5, radius_kpc=0.12, column_mag=1.0),
        Cloud(l_deg=285.0, b_deg=-7.0, distance_kpc=1.2, radius_kpc=0.05, column_mag=0.5),
        Cloud(l_deg=30.0, b_deg=2.0, distance_kpc=1.0, radius_kpc=0.06, column_mag=0.9),
        Cloud(l_deg=120.0, b_deg=20.0, distance_kpc=0.3, radius_kpc=0.03, column_mag=0.3),
    )
    return SimulatedGalaxy(clouds=clouds)


#: The solar-neighbourhood luminosity function phi(M_V): stars per pc^3 per magnitude in
#: 1-mag bins centred on ``SOLAR_NEIGHBOURHOOD_LF_MV`` (Allen's Astrophysical Quantities,
#: the V-band function of the nearby stars, giants included; 0.131 stars pc^-3 in all, of
#: which M_V > 9.5, the M dwarfs, make 80%). Gaia's census of the stars within 100 pc
#: (Gaia Collaboration, Smart et al. 2021: 331,312 objects, >= 92% complete down to M9)
#: gives the same order, 0.08 objects pc^-3, dominated by M dwarfs.
SOLAR_NEIGHBOURHOOD_LF_MV = np.arange(-5.0, 23.0)
SOLAR_NEIGHBOURHOOD_LF = 1e-4 * np.array([
    0.0006, 0.0029, 0.013, 0.05, 0.25, 1.0, 3.0, 6.0, 12.0, 19.0, 34.0, 42.0, 35.0, 42.0,
    54.0, 78.0, 98.0, 107.0, 117.0, 129.0, 125.0, 120.0, 107.0, 83.0, 50.0, 30.0, 13.0, 5.0])

#: G - V of the mean main sequence at absolute magnitude M_V (approximate readings, to
#: about 0.1 mag, of the dwarf colour sequence of Pecaut & Mamajek 2013: A0 V, F0 V, the
#: Sun, K0 V, K5 V, M0 V, M2 V, M4 V, M6 V), linear in between and constant beyond.
_DWARF_MV = np.array([1.1, 2.5, 4.8, 5.9, 7.3, 8.9, 10.3, 12.8, 16.6])
_DWARF_G_MINUS_V = np.array([-0.01, -0.06, -0.17, -0.27, -0.50, -0.80, -1.10, -1.60, -2.40])

#: Faintest absolute magnitude M_G of a star with a usable E(B-V) in the sample of Wang et
#: al. (2025): their reddenings come from LAMOST's catalogue of A, F, G and K stars and from
#: Zhang et al. (2023)'s XP parameters, trained on LAMOST, with BP signal-to-noise > 5;
#: both end near the K/M boundary (T_eff ~ 3,700-3,900 K, M0-M1 V, M_G ~ 8-8.5).
XP_FAINT_LIMIT_MG = 8.5

#: The luminosity functions :func:`draw_observed_stars` knows.
LUMINOSITY_FUNCTIONS = ("solar_neighbourhood", "gaussian")


def absolute_g_from_v(abs_mag_v) -> np.ndarray:
    """Absolute G magnitude of a main-sequence star of absolute V magnitude ``abs_mag_v``."""
    abs_mag_v = np.asarray(abs_mag_v, dtype=np.float64)
    return abs_mag_v + np.interp(abs_mag_v, _DWARF_MV, _DWARF_G_MINUS_V)


def draw_absolute_magnitudes(n: int, rng: np.random.Generator, *,
                             faint_limit_mg: float = XP_FAINT_LIMIT_MG) -> np.ndarray:
    """Absolute G magnitudes of ``n`` stars drawn from the solar-neighbourhood luminosity
    function (:data:`SOLAR_NEIGHBOURHOOD_LF`, piecewise constant in M_V, converted to
    M_G by :func:`absolute_g_from_v`), truncated at ``M_G <= faint_limit_mg``.

    These are the stars of a unit volume that the sample can hold; the volume density of
    the draw is ``phi`` summed over M_G <= ``faint_limit_mg``
    (:func:`luminosity_function_density`).
    """
    lo, frac = _bins_brighter_than(faint_limit_mg)
    if not np.any(frac > 0):
        raise ValueError(f"faint_limit_mg={faint_limit_mg!r} leaves no star of the "
                         "luminosity function")
    weights = SOLAR_NEIGHBOURHOOD_LF * frac
    k = rng.choice(weights.size, size=n, p=weights / weights.sum())
    return absolute_g_from_v(lo[k] + frac[k] * rng.random(n))


def luminosity_function_density(faint_limit_mg: float = XP_FAINT_LIMIT_MG) -> float:
    """Stars per pc^3 of the solar-neighbourhood luminosity function with
    ``M_G <= faint_limit_mg``."""
    return float(np.sum(SOLAR_NEIGHBOURHOOD_LF * _bins_brighter_than(faint_limit_mg)[1]))


def _bins_brighter_than(faint_limit_mg):
    """Lower M_V edge of each luminosity-function bin and the fraction of the bin with
    ``M_G <= faint_limit_mg`` (M_G increases with M_V)."""
    lo = SOLAR_NEIGHBOURHOOD_LF_MV - 0.5
    grid = np.linspace(lo[0], lo[-1] + 1.0, 20001)
    v_limit = float(np.interp(faint_limit_mg, absolute_g_from_v(grid), grid,
                              left=-np.inf, right=np.inf))
    return lo, np.clip(v_limit - lo, 0.0, 1.0)


def draw_stars(galaxy: SimulatedGalaxy, n: int, rng: np.random.Generator, *,
               l_range_deg=(0.0, 360.0), b_range_deg=(-90.0, 90.0),
               d_range_kpc=(0.05, 8.0), stellar_scale_height_kpc: float = 0.3):
    """Draw stars uniformly on a sky patch, with a volume-weighted stellar-disk distance law.

    Distances follow p(d) ~ d^2 exp(-|z| / h_star) within ``d_range_kpc`` (rejection
    sampling). Longitude ranges may wrap (e.g. ``(239, 366)`` for the DECaPS footprint).

    Returns
    -------
    dict
        ``l``, ``b`` (deg), ``d`` (kpc) and ``ebv_true`` (mag), each of shape (n,).
    """
    l_lo, l_hi = l_range_deg
    b_lo, b_hi = b_range_deg
    d_lo, d_hi = d_range_kpc
    l = (l_lo + (l_hi - l_lo) * rng.random(n)) % 360.0
    sin_b = rng.uniform(np.sin(np.radians(b_lo)), np.sin(np.radians(b_hi)), n)
    b = np.degrees(np.arcsin(sin_b))
    d = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        cand = (d_lo ** 3 + (d_hi ** 3 - d_lo ** 3) * rng.random(todo.size)) ** (1.0 / 3.0)
        z = np.abs(cand * np.sin(np.radians(b[todo])))
        keep = rng.random(todo.size) < np.exp(-z / stellar_scale_height_kpc)
        d[todo[keep]] = cand[keep]
        todo = todo[~keep]
    ebv = galaxy.cumulative_ebv(l, b, d)
    return {"l": l, "b": b, "d": d, "ebv_true": ebv}


def draw_observed_stars(galaxy: SimulatedGalaxy, n: int, rng: np.random.Generator, *,
                        l_range_deg=(0.0, 360.0), b_range_deg=(-90.0, 90.0),
                        d_range_kpc=(0.05, 8.0), stellar_scale_height_kpc: float = 0.3,
                        luminosity_function: str = "solar_neighbourhood",
                        abs_mag_faint_limit: float = XP_FAINT_LIMIT_MG,
                        abs_mag_mean: float = 2.5, abs_mag_sigma: float = 1.5,
                        g_limit: float = 17.5, a_g_per_ebv: float = 2.74,
                        ebv_err_range=(0.02, 0.05), min_plx_snr: float = 3.0,
                        outlier_fraction: float = 0.01, outlier_scale_mag: float = 0.15):
    """Stars drawn with :func:`draw_stars`, selected by magnitude and observed with errors.

    * Selection: absolute magnitudes M_G from the ``luminosity_function``, apparent
      ``G = M_G + 5 log10(100 d_true) + a_g_per_ebv * E_true``; stars fainter than
      ``g_limit`` are not observed, so heavily reddened and distant stars drop out as in a
      real survey. ``"solar_neighbourhood"`` (default): the luminosity function of the
      nearby stars (:data:`SOLAR_NEIGHBOURHOOD_LF`, :func:`draw_absolute_magnitudes`) cut
      at ``M_G <= abs_mag_faint_limit`` (default 8.5: the sample of Wang et al. 2025 holds
      AFGK stars, LAMOST's and those of Zhang et al. 2023's XP parameters, which stop near
      M0-M1 V). Every star of the volume density is then a star the sample can hold, and
      a G-limited sample gets the nearby K and G dwarfs a real one has.
      ``"gaussian"``: M_G ~ Normal(``abs_mag_mean``, ``abs_mag_sigma``), the earlier mock
      (almost no dwarfs: an observed sample with few stars within 0.6 kpc), kept for
      comparison.
    * Distance, Gaia DR3-like: parallax error ``sqrt(0.015^2 + (0.022 * 10^(0.25 (G - 15)))^2)``
      mas (0.03 mas at G = 15, 0.07 at 17, 0.4 at 20), observed parallax = 1/d_true +
      Gaussian noise; stars with parallax over error below ``min_plx_snr`` are dropped (the
      usual quality cut), the others get ``distance = 1 / parallax`` and the asymmetric 68%
      interval ``[1/(plx + err), 1/(plx - err)]``: errors grow with distance and are larger
      above than below.
    * E(B-V): error uniform in ``ebv_err_range`` (mag), measurement = truth + Gaussian
      noise; a fraction ``outlier_fraction`` of stars gets an extra positive offset
      (exponential, scale ``outlier_scale_mag``) imitating circumstellar dust or bad fits.

    Returns
    -------
    dict
        For the kept stars: ``l``, ``b`` (deg), ``d`` (true distance, kpc), ``ebv_true``,
        ``ebv``, ``ebv_err`` (mag), ``distance``, ``distance_err_lo``, ``distance_err_hi``
        (kpc), ``parallax``, ``parallax_err`` (mas), ``g_mag``. Fewer than ``n`` stars.
    """
    if not 0.0 <= outlier_fraction < 1.0:
        raise ValueError("outlier_fraction must be in [0, 1)")
    if luminosity_function not in LUMINOSITY_FUNCTIONS:
        raise ValueError(f"luminosity_function must be one of {LUMINOSITY_FUNCTIONS}, "
                         f"got {luminosity_function!r}")
    if min_plx_snr <= 1.0:
        raise ValueError("min_plx_snr must exceed 1 so that the upper distance bound is finite")
    stars = draw_stars(galaxy, n, rng, l_range_deg=l_range_deg, b_range_deg=b_range_deg,
                       d_range_kpc=d_range_kpc, stellar_scale_height_kpc=stellar_scale_height_kpc)
    d_true = stars["d"]
    if luminosity_function == "gaussian":
        abs_mag = abs_mag_mean + abs_mag_sigma * rng.standard_normal(n)
    else:
        abs_mag = draw_absolute_magnitudes(n, rng, faint_limit_mg=abs_mag_faint_limit)
    g_mag = abs_mag + 5.0 * np.log10(100.0 * d_true) + a_g_per_ebv * stars["ebv_true"]
    lo, hi = ebv_err_range
    ebv_err = lo + (hi - lo) * rng.random(n)
    ebv = stars["ebv_true"] + ebv_err * rng.standard_normal(n)
    outlier = rng.random(n) < outlier_fraction
    ebv = ebv + np.where(outlier, rng.exponential(outlier_scale_mag, n), 0.0)
    plx_err = np.hypot(0.015, 0.022 * 10.0 ** (0.25 * (g_mag - 15.0)))
    plx = 1.0 / d_true + plx_err * rng.standard_normal(n)
    keep = (g_mag <= g_limit) & (plx > min_plx_snr * plx_err)
    plx, plx_err = plx[keep], plx_err[keep]
    dist = 1.0 / plx
    out = {k: v[keep] for k, v in stars.items()}
    out.update(ebv=ebv[keep], ebv_err=ebv_err[keep], distance=dist,
               distance_err_lo=dist - 1.0 / (plx + plx_err),
               distance_err_hi=1.0 / (plx - plx_err) - dist,
               parallax=plx, parallax_err=plx_err, g_mag=g_mag[keep])
    return out
