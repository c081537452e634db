"""Matplotlib helpers for the maps of dustmaps_ext.

Every helper returns the :class:`matplotlib.figure.Figure` it drew and never shows or
saves it (the caller decides). Figures are built with :class:`matplotlib.figure.Figure`
directly (no pyplot state, matplotlib imported when a helper runs), so the helpers work
headless and never change the user's backend.
"""

from __future__ import annotations

from typing import Sequence

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord

from ._io.decaps import B_RANGE_DEG, L_RANGE_DEG

__all__ = ["plane_of_sky_grid", "plot_plane_of_sky", "plot_wang2025_sightline"]

_CLOUD_COLOURS = ("tab:blue", "tab:green", "tab:purple", "tab:orange")


def plane_of_sky_grid(query, distance_kpc: float, *, l_range_deg=L_RANGE_DEG,
                      b_range_deg=B_RANGE_DEG, step_deg: float = 0.25, mode: str = "mean"):
    """E(B-V) of a map on a regular (l, b) grid at one distance.

    Parameters
    ----------
    query : dustmaps.map_base.DustMap
        Any map that answers ``query(SkyCoord(l, b, distance=d), mode=mode)`` with E(B-V).
    distance_kpc : float
        Distance (kpc).
    l_range_deg : (float, float)
        Longitude range (deg); may pass 360 (e.g. ``(239, 366)`` for the DECaPS footprint).
    b_range_deg : (float, float)
        Latitude range (deg).
    step_deg : float
        Grid step (deg).
    mode : str
        Query mode.

    Returns
    -------
    l_deg, b_deg, ebv : numpy.ndarray
        1D longitude and latitude axes and the 2D grid of E(B-V), shape (n_b, n_l).
    """
    if not distance_kpc > 0:
        raise ValueError(f"distance_kpc must be positive; got {distance_kpc}")
    l_axis = np.arange(l_range_deg[0], l_range_deg[1] + 1e-9, step_deg)
    b_axis = np.arange(b_range_deg[0], b_range_deg[1] + 1e-9, step_deg)
    ll, bb = np.meshgrid(l_axis, b_axis)
    coords = SkyCoord(np.mod(ll, 360.0) * u.deg, bb * u.deg,
                      distance=np.full(ll.shape, float(distance_kpc)) * u.kpc, frame="galactic")
    ebv = np.asarray(query.query(coords, mode=mode), dtype=np.float64)
    return l_axis, b_axis, ebv


def plot_plane_of_sky(query, distances_kpc: Sequence[float], *, l_range_deg=L_RANGE_DEG,
                      b_range_deg=B_RANGE_DEG, step_deg: float = 0.25, mode: str = "mean",
                      vmax: float | None = None, title: str | None = None):
    """Panels of plane-of-sky E(B-V) out to each distance (one panel per distance).

    Parameters are those of :func:`plane_of_sky_grid`; ``vmax`` fixes the colour scale
    (default: the 99th percentile of the farthest panel).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    distances_kpc = list(distances_kpc)
    grids = [plane_of_sky_grid(query, d, l_range_deg=l_range_deg, b_range_deg=b_range_deg,
                               step_deg=step_deg, mode=mode) for d in distances_kpc]
    finite = grids[-1][2][np.isfinite(grids[-1][2])]
    if vmax is None:
        vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    width = l_range_deg[1] - l_range_deg[0]
    height = b_range_deg[1] - b_range_deg[0]
    fig = Figure(figsize=(10, 0.6 + len(grids) * (10 * height / width + 0.6)), layout="constrained")
    axes = fig.subplots(len(grids), 1, squeeze=False)[:, 0]
    for ax, d, (l_axis, b_axis, ebv) in zip(axes, distances_kpc, grids):
        im = ax.imshow(ebv, origin="lower", cmap="binary", vmin=0.0, vmax=vmax, aspect="equal",
                       extent=(l_axis[0], l_axis[-1], b_axis[0], b_axis[-1]), interpolation="nearest")
        ax.invert_xaxis()  # Galactic longitude increases to the left
        ticks = ax.get_xticks()
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t % 360:g}" for t in ticks])
        ax.set_xlim(l_axis[-1], l_axis[0])
        ax.set_ylabel("b (deg)")
        ax.set_title(f"E(B-V) out to {d:g} kpc", fontsize=10)
        fig.colorbar(im, ax=ax, label="E(B-V) (mag)", shrink=0.9)
    axes[-1].set_xlabel("l (deg)")
    if title:
        fig.suptitle(title)
    return fig


def plot_wang2025_sightline(l: float, b: float, *, query=None, distances=None,
                            dmax: float | None = None, figsize=(7.0, 6.5)):
    """E(B-V) and dust density along one sightline of the Wang et al. (2025) map, with each
    component drawn (as in the paper's Figure 14 a, b).

    Top: total E(B-V) (red), the diffuse dust with its Local Bubble (brown, dashed) and each
    cloud (dashed), with the sigma band of the fit. Bottom: the density dE(B-V)/dx, the
    diffuse part (dashed), each cloud's density shaded over its size (distance +- size / 2)
    with a dashed line at its distance. Grey lines mark the bubble edge and the maximum
    reliable distance; beyond it the curves are extrapolations. Only clouds with a column
    of at least 0.001 mag are drawn.

    Parameters
    ----------
    l, b : float
        Galactic longitude and latitude (deg).
    query : dustmaps_ext.wang2025.Wang2025Query, optional
        The map; default ``Wang2025Query()`` (the map in the dustmaps data directory).
    distances : array_like, optional
        Distances to sample (kpc); default 1500 steps from 0 to ``dmax``.
    dmax : float, optional
        Largest distance drawn (kpc); default 1.2 times the maximum reliable distance.
    figsize : tuple of float
        Figure size (inches).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    if query is None:
        from .wang2025 import Wang2025Query

        query = Wang2025Query()
    if distances is None:
        if dmax is None:
            maxd = query.sightline_parameters(l, b)["max_distance"]
            dmax = 1.2 * maxd if np.isfinite(maxd) and maxd > 0 else 10.0
        if not (np.isfinite(dmax) and dmax > 0):
            raise ValueError(f"dmax must be a positive distance in kpc, got {dmax!r}")
        distances = np.linspace(0.0, dmax, 1500)
    prof = query.sightline_profile(l, b, distances)
    x = prof["distance"]

    fig = Figure(figsize=figsize, layout="constrained")
    ax_e, ax_d = fig.subplots(2, 1, sharex=True)
    sigma = np.nan_to_num(prof["sigma"], nan=0.0)
    ax_e.fill_between(x, prof["ebv"] - sigma, prof["ebv"] + sigma, color="tab:red", alpha=0.15,
                      lw=0, label=r"$\pm\sigma$")
    ax_e.plot(x, prof["ebv"], color="tab:red", lw=2, label="total")
    ax_e.plot(x, prof["diffuse_ebv"], color="saddlebrown", ls="--", label="diffuse dust")
    ax_d.plot(x, prof["density"], color="tab:red", lw=2, label="total")
    ax_d.plot(x, prof["diffuse_density"], color="saddlebrown", ls="--", label="diffuse dust")
    for cloud in prof["clouds"]:
        if not cloud["significant"]:
            continue
        k = cloud["index"]
        colour = _CLOUD_COLOURS[k - 1]
        label = (f"cloud {k}: {cloud['distance']:.2f} kpc, "
                 f"{cloud['size']:.2f} kpc, {cloud['column']:.3f} mag")
        ax_e.plot(x, prof["cloud_ebv"][:, k - 1], color=colour, ls="--", label=label)
        inside = np.abs(x - cloud["distance"]) <= 0.5 * cloud["size"]
        ax_d.fill_between(x, 0, prof["cloud_density"][:, k - 1], where=inside, color=colour,
                          alpha=0.3, lw=0)
        ax_d.plot(x, prof["cloud_density"][:, k - 1], color=colour, lw=0.8)
        ax_d.axvline(cloud["distance"], color=colour, ls="--", lw=1)
    for ax in (ax_e, ax_d):
        ax.axvline(prof["bubble_distance"], color="0.5", ls=":", lw=1)
        if np.isfinite(prof["max_distance"]):
            ax.axvline(prof["max_distance"], color="0.3", ls="-.", lw=1)
        ax.set_xlim(x[0], x[-1])
    ax_e.set_ylabel("E(B-V) [mag]")
    ax_d.set_ylabel("density [mag/kpc]")
    ax_d.set_xlabel("distance [kpc]")
    ax_e.set_title(f"Wang et al. (2025): l = {prof['l']:.3f} deg, b = {prof['b']:.3f} deg\n"
                   f"bubble edge {prof['bubble_distance']:.3f} kpc (dotted), max. reliable "
                   f"distance {prof['max_distance']:.2f} kpc (dash-dot), "
                   f"{prof['n_clouds']} clouds", fontsize=9)
    ax_e.legend(fontsize=7, loc="upper left")
    return fig
