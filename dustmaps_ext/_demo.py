"""``dustmaps-ext demo``: query the small simulated DECaPS-format map shipped with the package.

The demo needs no network: it reads ``dustmaps_ext/data/demo/decaps_demo.h5`` (made by
``python -m dustmaps_ext_build.demo_map`` from the simulated galaxy of ``build_tools``), reports
E(B-V) with flags along a few sightlines, checks that the memory-mapped Lite query of a
repacked copy gives the same numbers, and draws the plane-of-sky reddening at two distances.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord

__all__ = ["demo_map_path", "run_demo", "DEMO_SIGHTLINES", "DEMO_DISTANCES_KPC"]

#: (l, b) in deg: four sightlines through clouds of the simulated galaxy, one outside the map.
DEMO_SIGHTLINES = ((300.0, 1.0), (265.0, -4.0), (330.0, -1.5), (355.0, 3.0), (90.0, 0.0))
DEMO_DISTANCES_KPC = (0.1, 0.3, 0.5, 1.0, 2.0, 4.0, 8.0)
PLANE_OF_SKY_KPC = (0.5, 3.0)


def demo_map_path() -> Path:
    """Path of the demo map inside the installed package."""
    return Path(str(resources.files("dustmaps_ext") / "data" / "demo" / "decaps_demo.h5"))


def run_demo(png_path="dustmaps_ext_demo.png", *, progress: bool = False) -> str:
    """Run the demo; returns the report text and writes the plane-of-sky PNG.

    Parameters
    ----------
    png_path : str or Path
        Where to write the PNG.
    progress : bool
        Show progress bars while loading.

    Returns
    -------
    str
        The report (the command line prints it).
    """
    from .decaps import DECaPSQuery, DECaPSQueryLite, repack
    from .plot import plot_plane_of_sky

    path = demo_map_path()
    full = DECaPSQuery(path, progress=progress)
    lines = [f"DECaPS demo map: {path}",
             f"  simulated galaxy, nside {full._info.nside}, {full._info.n_pix} pixels, "
             f"{full.n_samples} samples x {full._info.n_dist} distances (no network needed)", ""]

    n_d = len(DEMO_DISTANCES_KPC)
    l = np.repeat([s[0] for s in DEMO_SIGHTLINES], n_d)
    b = np.repeat([s[1] for s in DEMO_SIGHTLINES], n_d)
    d = np.tile(DEMO_DISTANCES_KPC, len(DEMO_SIGHTLINES))
    coords = SkyCoord(l * u.deg, b * u.deg, distance=d * u.kpc, frame="galactic")
    mean, flags = full(coords, mode="mean", return_flags=True)
    pcts = full(coords, mode="percentile", pct=[16, 84])
    _, pix_flags = full(SkyCoord(l[::n_d] * u.deg, b[::n_d] * u.deg, frame="galactic"), return_flags=True)
    for k, (sl, sb) in enumerate(DEMO_SIGHTLINES):
        pf = pix_flags[k]
        if np.isnan(pf["min_reliable_distmod"]) and not pf["converged"]:
            lines.append(f"l = {sl:6.1f}  b = {sb:+5.1f}   outside the DECaPS footprint: E(B-V) = NaN, flags False")
            lines.append("")
            continue
        lines.append(f"l = {sl:6.1f}  b = {sb:+5.1f}   converged={bool(pf['converged'])}  "
                     f"infilled={bool(pf['infilled'])}  reliable distance modulus "
                     f"{pf['min_reliable_distmod']:.2f} to {pf['max_reliable_distmod']:.2f}")
        lines.append("    d (kpc)   E(B-V) mean   16th-84th pct      reliable_dist")
        for j in range(n_d):
            i = k * n_d + j
            lines.append(f"    {d[i]:7.2f}   {float(mean[i]):11.3f}   {pcts[i, 0]:6.3f} - {pcts[i, 1]:6.3f}"
                         f"    {bool(flags['reliable_dist'][i])}")
        lines.append("")

    with tempfile.TemporaryDirectory() as tmp:
        lite = DECaPSQueryLite(repack(path, Path(tmp) / "demo_repacked.h5", progress=progress))
        same = np.array_equal(lite(coords, mode="samples"), full(coords, mode="samples"), equal_nan=True)
        del lite
    lines.append("DECaPSQueryLite on a repacked copy returns the same samples: " + ("yes" if same else "NO"))

    fig = plot_plane_of_sky(full, PLANE_OF_SKY_KPC, step_deg=0.5,
                            title="Demo map (simulated galaxy): E(B-V) out to two distances")
    fig.savefig(png_path, dpi=110)
    lines.append(f"Plane-of-sky E(B-V) at {PLANE_OF_SKY_KPC[0]:g} and {PLANE_OF_SKY_KPC[1]:g} kpc written to {png_path}")
    return "\n".join(lines)
