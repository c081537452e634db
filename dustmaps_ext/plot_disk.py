"""Views of the whole Galactic disk from the combined Bayestar19 + DECaPS map.

* :func:`topdown_columns` / :func:`plot_topdown`: a top-down (face-on) view of the dust
  density integrated over ``|z| < z_max_pc`` and limited to ``|b| < b_max_deg``, each map's
  share drawn in its own colour (Bayestar19 red, DECaPS blue), as in Figure 12 of
  Zucker et al. (2025).
* :func:`strip_ebv` / :func:`plot_strip`: a plane-of-sky strip of E(B-V) to one distance,
  with the boundary between the maps outlined.

The numbers come from :class:`~dustmaps_ext.combined.BayestarDECaPSQuery` (any
``DustMap`` whose ``query`` accepts ``return_flags`` and returns a ``source`` flag works).

Dust density: the maps are cumulative E(B-V) at 120 distance-modulus edges, linear in
distance modulus between edges; the density in a voxel is the reddening gained across the
distance bin that contains it, divided by the bin's length in kpc (mag/kpc). Summed over
the bins of a sightline it gives back the cumulative reddening.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord

__all__ = ["density_at", "topdown_columns", "plot_topdown", "strip_ebv", "plot_strip"]


def density_at(query, l_deg: np.ndarray, b_deg: np.ndarray, d_kpc: np.ndarray, *,
               mode: str = "mean"):
    """Dust density (E(B-V) per kpc) at Galactic (l, b, d), and which map answered.

    The density is constant across each distance bin of the map: the reddening gained
    between the two distance-modulus edges around ``d`` over their distance in kpc. Below
    the first edge it is the reddening at the first edge over its distance.

    Returns
    -------
    (density, source) : (numpy.ndarray, numpy.ndarray of str)
        Shape of the inputs; NaN where no map answers.
    """
    l_deg, b_deg, d_kpc = (np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(l_deg, b_deg, d_kpc))
    shape = l_deg.shape
    l_deg, b_deg, d_kpc = l_deg.ravel(), b_deg.ravel(), d_kpc.ravel()
    edges = query.distmods.to_value(u.mag).astype(np.float64)
    dm = 5.0 * (np.log10(np.maximum(d_kpc, 1e-30)) + 2.0)
    k = np.clip(np.searchsorted(edges, dm), 0, edges.size - 1)
    d_hi = 10.0 ** (0.2 * edges[k] - 2.0)
    d_lo = np.where(k > 0, 10.0 ** (0.2 * edges[np.maximum(k - 1, 0)] - 2.0), 0.0)
    both = SkyCoord(np.concatenate([l_deg, l_deg]) * u.deg, np.concatenate([b_deg, b_deg]) * u.deg,
                    distance=np.concatenate([d_hi, np.where(k > 0, d_lo, d_hi)]) * u.kpc,
                    frame="galactic")
    values, flags = query.query(both, mode=mode, return_flags=True)
    values = np.asarray(values, dtype=np.float64)
    n = l_deg.size
    e_hi = values[:n]
    e_lo = np.where(k > 0, values[n:], 0.0)
    density = (e_hi - e_lo) / (d_hi - d_lo)
    return density.reshape(shape), np.asarray(flags["source"][:n]).reshape(shape)


def topdown_columns(query, *, extent_kpc: float = 5.0, n_xy: int = 200, z_max_pc: float = 100.0,
                    n_z: int = 5, b_max_deg: float = 10.0, mode: str = "mean") -> dict:
    """Face-on view: dust density integrated over ``|z| < z_max_pc``, per map.

    Parameters
    ----------
    query : BayestarDECaPSQuery
        The combined map.
    extent_kpc : float
        Half-width of the square around the Sun (kpc).
    n_xy : int
        Pixels per side.
    z_max_pc : float
        Half-thickness of the slab (pc).
    n_z : int
        Midpoints across the slab.
    b_max_deg : float
        Voxels at ``|b| >= b_max_deg`` are left out (the maps are combined for |b| < 10).
    mode : str
        Query mode (``'mean'`` or ``'median'``).

    Returns
    -------
    dict
        ``x``, ``y`` (kpc; x towards the Galactic centre, y towards l = 90 deg), and
        ``decaps``, ``bayestar`` (n_xy, n_xy) columns in mag (density x dz summed over the
        slab), NaN where that map contributes nothing.
    """
    if n_xy < 2 or n_z < 1 or extent_kpc <= 0 or z_max_pc <= 0:
        raise ValueError("n_xy >= 2, n_z >= 1, and positive extent_kpc and z_max_pc are required")
    x = np.linspace(-extent_kpc, extent_kpc, n_xy)
    y = np.linspace(-extent_kpc, extent_kpc, n_xy)
    dz = 2.0 * z_max_pc / 1000.0 / n_z
    z = -z_max_pc / 1000.0 + dz * (np.arange(n_z) + 0.5)
    xx, yy, zz = np.meshgrid(x, y, z, indexing="ij")
    rho_xy = np.hypot(xx, yy)
    d = np.sqrt(rho_xy ** 2 + zz ** 2)
    l_deg = np.degrees(np.arctan2(yy, xx)) % 360.0
    b_deg = np.degrees(np.arctan2(zz, rho_xy))
    inside = np.abs(b_deg) < b_max_deg
    density = np.full(d.shape, np.nan)
    source = np.full(d.shape, "none", dtype="U8")
    density[inside], source[inside] = density_at(query, l_deg[inside], b_deg[inside], d[inside], mode=mode)
    out = {"x": x, "y": y}
    for name in ("decaps", "bayestar"):
        mine = (source == name) & np.isfinite(density)
        col = np.where(mine, density, 0.0).sum(axis=2) * dz
        out[name] = np.where(mine.any(axis=2), col, np.nan)
    return out


def plot_topdown(query, ax=None, *, vmax: float | None = None, **kwargs):
    """Draw :func:`topdown_columns` (DECaPS blue, Bayestar19 red); returns the axes.

    Extra keyword arguments go to :func:`topdown_columns`.
    """
    import matplotlib.pyplot as plt

    cols = topdown_columns(query, **kwargs)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 6))
    both = np.concatenate([cols["decaps"][np.isfinite(cols["decaps"])],
                           cols["bayestar"][np.isfinite(cols["bayestar"])]])
    if vmax is None:
        vmax = float(np.percentile(both, 99.5)) if both.size else 1.0
    ext = [cols["x"][0], cols["x"][-1], cols["y"][0], cols["y"][-1]]
    for name, cmap in (("bayestar", "Reds"), ("decaps", "Blues")):
        ax.imshow(np.ma.masked_invalid(cols[name]).T, origin="lower", extent=ext, cmap=cmap,
                  vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.plot(0, 0, marker="o", mfc="none", mec="k", ms=8)
    ax.plot(0, 0, marker=".", color="k", ms=3)
    ax.set_xlabel("x (kpc, towards the Galactic centre)")
    ax.set_ylabel("y (kpc, towards l = 90 deg)")
    ax.set_title("Dust within |z| < {:g} pc: DECaPS (blue), Bayestar19 (red)".format(
        kwargs.get("z_max_pc", 100.0)))
    return ax


def strip_ebv(query, distance_kpc: float, *, l_range_deg=(0.0, 360.0), b_max_deg: float = 10.0,
              step_deg: float = 0.25, mode: str = "mean") -> dict:
    """E(B-V) to ``distance_kpc`` on a (l, b) grid over the plane, and the answering map.

    Returns
    -------
    dict
        ``l``, ``b`` (deg, pixel centres), ``ebv`` (n_b, n_l) float32 and ``source``
        (n_b, n_l) str.
    """
    if not (distance_kpc > 0 and np.isfinite(distance_kpc)):
        raise ValueError(f"distance_kpc must be a positive finite number; got {distance_kpc!r}")
    if step_deg <= 0:
        raise ValueError(f"step_deg must be positive; got {step_deg!r}")
    l0, l1 = l_range_deg
    l_c = np.arange(l0 + step_deg / 2, l1, step_deg)
    b_c = np.arange(-b_max_deg + step_deg / 2, b_max_deg, step_deg)
    ll, bb = np.meshgrid(l_c % 360.0, b_c)
    coords = SkyCoord(ll * u.deg, bb * u.deg, distance=np.full(ll.shape, distance_kpc) * u.kpc,
                      frame="galactic")
    ebv, flags = query.query(coords, mode=mode, return_flags=True)
    return {"l": l_c, "b": b_c, "ebv": ebv, "source": flags["source"]}


def plot_strip(query, distance_kpc: float, ax=None, *, vmax: float | None = None, **kwargs):
    """Draw :func:`strip_ebv` with the DECaPS/Bayestar19 boundary outlined; returns the axes.

    Longitude increases to the left, as on the sky.
    """
    import matplotlib.pyplot as plt

    s = strip_ebv(query, distance_kpc, **kwargs)
    if ax is None:
        _, ax = plt.subplots(figsize=(14, 3))
    finite = s["ebv"][np.isfinite(s["ebv"])]
    if vmax is None:
        vmax = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    ext = [s["l"][0], s["l"][-1], s["b"][0], s["b"][-1]]
    im = ax.imshow(np.ma.masked_invalid(s["ebv"]), origin="lower", extent=ext, cmap="binary",
                   vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.contour(s["l"], s["b"], (s["source"] == "decaps").astype(float), levels=[0.5], colors="tab:blue")
    ax.contour(s["l"], s["b"], (s["source"] == "none").astype(float), levels=[0.5], colors="tab:red")
    ax.invert_xaxis()
    ax.set_xlabel("l (deg)")
    ax.set_ylabel("b (deg)")
    ax.set_title(f"E(B-V) to {distance_kpc:g} kpc; DECaPS inside the blue line, no map inside red")
    ax.figure.colorbar(im, ax=ax, label="E(B-V) (mag)", pad=0.01)
    return ax
