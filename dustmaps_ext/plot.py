"""Matplotlib helpers for the maps of dustmaps_ext.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot state), so
the helpers work headless and never change the user's backend.
"""

from __future__ import annotations

from typing import Sequence

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord

__all__ = ["plane_of_sky_grid", "plot_plane_of_sky"]


def plane_of_sky_grid(query, distance_kpc: float, *, l_range_deg=(239.0, 366.0),
                      b_range_deg=(-10.0, 10.0), step_deg: float = 0.25, mode: str = "mean"):
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


def plot_plane_of_sky(query, distances_kpc: Sequence[float], *, l_range_deg=(239.0, 366.0),
                      b_range_deg=(-10.0, 10.0), step_deg: float = 0.25, mode: str = "mean",
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
