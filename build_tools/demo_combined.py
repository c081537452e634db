"""Demo of the combined Bayestar19 + DECaPS map on simulated files.

Writes a simulated DECaPS map (southern plane) and a simulated Bayestar19 map (dec > -30,
several nsides) of :func:`dustmaps_ext_build.galaxy.default_galaxy`, then draws, from Python,
the top-down view of the disk (|z| < 100 pc, as Figure 12 of Zucker et al. 2025) and a
plane-of-sky strip of E(B-V) to 2 kpc, and prints the shell commands that draw the same
figures with ``dustmaps-ext plot``.

Run: ``python -m dustmaps_ext_build.demo_combined --output-dir demo_out`` (about a minute).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .simulated_decaps import write_simulated_decaps
from .writers.bayestar import write_simulated_bayestar19

__all__ = ["make_demo_maps", "main"]


def make_demo_maps(folder, *, decaps_nside: int = 256, bayestar_nsides=(64, 128, 256)):
    """Write (or reuse) the two simulated maps in ``folder``; returns their paths."""
    from dustmaps_ext.decaps import repack

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    decaps = folder / f"decaps_sim_{decaps_nside}.h5"
    repacked = folder / f"decaps_sim_{decaps_nside}_repacked.h5"
    bayestar = folder / f"bayestar_sim_{'_'.join(map(str, bayestar_nsides))}.h5"
    if not repacked.exists():
        write_simulated_decaps(decaps, nside=decaps_nside, overwrite=True)
        repack(decaps, repacked, progress=False)
        decaps.unlink()
    if not bayestar.exists():
        write_simulated_bayestar19(bayestar, nsides=bayestar_nsides, overwrite=True)
    return repacked, bayestar


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", default="demo_combined")
    p.add_argument("--decaps-nside", type=int, default=256)
    p.add_argument("--n-xy", type=int, default=240)
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dustmaps_ext.combined import BayestarDECaPSQuery
    from dustmaps_ext.plot_disk import plot_strip, plot_topdown

    out = Path(args.output_dir)
    nside = args.decaps_nside
    decaps, bayestar = make_demo_maps(out, decaps_nside=nside,
                                      bayestar_nsides=(nside // 4, nside // 2, nside))
    query = BayestarDECaPSQuery(decaps, bayestar, progress=False)
    ax = plot_topdown(query, extent_kpc=4.0, n_xy=args.n_xy)
    ax.figure.savefig(out / "combined_topdown.png", dpi=110, bbox_inches="tight")
    plt.close(ax.figure)
    ax = plot_strip(query, 2.0, step_deg=0.25)
    ax.figure.savefig(out / "combined_strip.png", dpi=110, bbox_inches="tight")
    plt.close(ax.figure)
    print(f"written {out / 'combined_topdown.png'} and {out / 'combined_strip.png'}")
    print("The same from the shell:")
    print(f"  dustmaps-ext plot topdown --decaps {decaps} --bayestar {bayestar} --extent 4 "
          f"-o {out / 'topdown_cli.png'}")
    print(f"  dustmaps-ext plot strip --decaps {decaps} --bayestar {bayestar} --distance 2 "
          f"-o {out / 'strip_cli.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
