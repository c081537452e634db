"""The ``dustmaps-ext`` command line: ``demo``, ``fetch`` and ``plot``.

Each sub-command is registered by one ``_register_*`` function below and runs a
handler that imports what it needs lazily, so ``dustmaps-ext --help`` is instant.
This module (and only this module) prints to standard output.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import Callable, Sequence

__all__ = ["main"]


def _register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="query the small simulated DECaPS-format map shipped with the package")
    p.add_argument("--output", default="dustmaps_ext_demo.png",
                   help="where to write the plane-of-sky PNG (default: %(default)s)")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    print(run_demo(png_path=args.output, progress=args.verbose > 0))
    return 0


def _register_fetch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="download a released map, verify it and prepare it for queries",
                       description="Download a released map into dustmaps' data directory "
                                   "(resumable, verified), then prepare it for fast queries.")
    targets = p.add_subparsers(dest="target", required=True, metavar="MAP")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--clobber", action="store_true",
                        help="download (and convert) again even if the files are present")
    common.add_argument("--no-progress", dest="progress", action="store_false",
                        help="do not show progress bars")

    d = targets.add_parser("decaps", parents=[common], help="DECaPS 3D dust map (Zucker et al. 2025)")
    d.add_argument("--mean-only", action="store_true",
                   help="fetch decaps_mean.h5 (about 8 GB, mean map only) instead of mean and "
                        "samples (about 33.8 GB)")
    d.add_argument("--no-repack", dest="repack", action="store_false",
                   help="keep the published layout; do not convert it for fast queries")
    d.add_argument("--delete-original", dest="keep_original", action="store_false",
                   help="delete the published file once the repacked file is complete")
    d.add_argument("--yes", action="store_true", help="consent to the large download without asking")
    d.add_argument("--base-url", default=None,
                   help="Dataverse installation (default: $DUSTMAPS_EXT_DATAVERSE_URL or "
                        "https://dataverse.harvard.edu)")
    d.add_argument("--region", nargs=3, type=float, action="append", default=None,
                   metavar=("L", "B", "RADIUS"),
                   help="fetch only the cone of RADIUS deg around Galactic (L, B) deg into a "
                        "local cutout, through HTTP Range requests (repeat for several cones; "
                        "later calls add to the same cutout)")
    d.set_defaults(handler=_run_fetch)

    w = targets.add_parser("wang2025", parents=[common],
                           help="parametric all-sky map (Wang et al. 2025), data_v3.fits")
    w.add_argument("--url", default=None,
                   help="primary URL of data_v3.fits.gz (default: $DUSTMAPS_EXT_WANG2025_URL or "
                        "the GitHub release; the NADC mirror is tried when it fails)")
    w.set_defaults(handler=_run_fetch)

    b = targets.add_parser("bayestar2019", parents=[common],
                           help="Bayestar19 (Green et al. 2019), where dustmaps' BayestarQuery reads it")
    b.add_argument("--yes", action="store_true", help="consent to the large download without asking")
    b.add_argument("--base-url", default=None, help="Dataverse installation (as for decaps)")
    b.set_defaults(handler=_run_fetch)


def _run_fetch(args: argparse.Namespace) -> int:
    from ._io import fetchers
    from ._io.download import format_bytes

    if args.target == "decaps" and args.region:
        path = fetchers.fetch_decaps(mean_only=args.mean_only, silence_warnings=args.yes,
                                     clobber=args.clobber, base_url=args.base_url,
                                     progress=args.progress, region=args.region)
        print(f"DECaPS cutout ready: {path}")
    elif args.target == "decaps":
        path = fetchers.fetch_decaps(mean_only=args.mean_only, silence_warnings=args.yes,
                                     clobber=args.clobber, repack=args.repack,
                                     base_url=args.base_url, progress=args.progress,
                                     keep_original=args.keep_original)
        print(f"DECaPS map ready: {path}")
        original, repacked = fetchers.decaps_paths(args.mean_only)
        if args.repack and original.exists():
            print(f"The published file {original} ({format_bytes(original.stat().st_size)}) was "
                  "kept; the queries read the repacked file, so you may delete it to free that "
                  "space.")
        elif args.repack:
            print(f"The published file {original.name} is not kept (--delete-original).")
    elif args.target == "wang2025":
        path = fetchers.fetch_wang2025(clobber=args.clobber, url=args.url, progress=args.progress)
        print(f"Wang et al. (2025) map ready: {path}")
    else:
        path = fetchers.fetch_bayestar2019(clobber=args.clobber, base_url=args.base_url,
                                           silence_warnings=args.yes, progress=args.progress)
        print(f"Bayestar19 map ready: {path}")
    return 0


def _plot_wang2025(targets: argparse._SubParsersAction) -> None:
    p = targets.add_parser("wang2025", help="E(B-V) and density along one sightline of the "
                           "Wang et al. (2025) map, each component drawn")
    p.add_argument("--l", type=float, required=True, help="Galactic longitude (deg)")
    p.add_argument("--b", type=float, required=True, help="Galactic latitude (deg)")
    p.add_argument("--dmax", type=float, default=None,
                   help="largest distance drawn, kpc (default: 1.2 x the maximum reliable one)")
    p.add_argument("--map", default=None,
                   help="converted table or data_v3.fits (default: the dustmaps data directory)")
    p.add_argument("--output", default="wang2025_sightline.png",
                   help="image to write (default: %(default)s)")
    p.set_defaults(handler=_run_plot_wang2025)


def _run_plot_wang2025(args: argparse.Namespace) -> int:
    from .plot import plot_wang2025_sightline
    from .wang2025 import Wang2025Query

    fig = plot_wang2025_sightline(args.l, args.b, query=Wang2025Query(args.map), dmax=args.dmax)
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")
    return 0


def _plot_disk(targets: argparse._SubParsersAction) -> None:
    """`plot topdown` and `plot strip`: the combined Bayestar19 + DECaPS map (BayestarDECaPSQuery)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--decaps", default=None,
                        help="DECaPS file (default: the one in dustmaps' data directory)")
    common.add_argument("--bayestar", default=None,
                        help="Bayestar19 file (default: <data_dir>/bayestar/bayestar2019.h5)")
    common.add_argument("--prefer", choices=("decaps", "bayestar", "reliable"), default="decaps",
                        help="which map answers where both have a pixel (default: %(default)s)")
    common.add_argument("--bayestar-to-ebv", type=float, default=0.884,
                        help="E(B-V) per Bayestar19 unit: 0.884 (E(g-r), default) or 0.996 (E(r-z))")
    common.add_argument("--mode", choices=("mean", "median"), default="mean")
    common.add_argument("--output", "-o", required=True, help="image file to write (PNG, PDF, ...)")
    common.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars while maps load")
    t = targets.add_parser("topdown", parents=[common],
                           help="face-on view of the dust within |z| < 100 pc (Zucker et al. 2025, Fig. 12)")
    t.add_argument("--extent", type=float, default=5.0, help="half-width around the Sun, kpc (default: %(default)s)")
    t.add_argument("--n-xy", type=int, default=200, help="pixels per side (default: %(default)s)")
    t.add_argument("--z-max", type=float, default=100.0, help="half-thickness of the slab, pc (default: %(default)s)")
    t.add_argument("--n-z", type=int, default=5, help="samples across the slab (default: %(default)s)")
    t.set_defaults(handler=_run_plot_disk)
    s = targets.add_parser("strip", parents=[common], help="E(B-V) to a distance over |b| < 10 deg")
    s.add_argument("--distance", type=float, required=True, help="distance, kpc")
    s.add_argument("--step", type=float, default=0.25, help="pixel size, deg (default: %(default)s)")
    s.add_argument("--l-min", type=float, default=0.0)
    s.add_argument("--l-max", type=float, default=360.0)
    s.set_defaults(handler=_run_plot_disk)


def _run_plot_disk(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .combined import BayestarDECaPSQuery
    from .plot_disk import plot_strip, plot_topdown

    query = BayestarDECaPSQuery(args.decaps, args.bayestar, bayestar_to_ebv=args.bayestar_to_ebv,
                                prefer=args.prefer, progress=args.progress)
    if args.target == "topdown":
        ax = plot_topdown(query, extent_kpc=args.extent, n_xy=args.n_xy, z_max_pc=args.z_max,
                          n_z=args.n_z, mode=args.mode)
    else:
        ax = plot_strip(query, args.distance, l_range_deg=(args.l_min, args.l_max),
                        step_deg=args.step, mode=args.mode)
    ax.figure.savefig(args.output, dpi=120, bbox_inches="tight")
    plt.close(ax.figure)
    print(f"written {args.output}")
    return 0


# Targets of `dustmaps-ext plot <target>`; each adds its own sub-parser.
_PLOT_TARGETS: list[Callable[[argparse._SubParsersAction], None]] = [
    _plot_wang2025,
    _plot_disk,
]


def _register_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw a map: `dustmaps-ext plot <target> --help`")
    targets = p.add_subparsers(dest="target", required=True, metavar="target")
    for add_target in _PLOT_TARGETS:
        add_target(targets)


# Sub-commands, in the order they appear in --help. Features add their own here.
_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _register_demo,
    _register_fetch,
    _register_plot,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``dustmaps-ext`` argument parser."""
    parser = argparse.ArgumentParser(prog="dustmaps-ext", description="Query, fetch and plot the "
                                     "DECaPS and Wang et al. (2025) 3D dust maps.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log progress (-v: info, -vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in _REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    # dustmaps warns on import when ~/.dustmapsrc does not exist; its default is fine here
    warnings.filterwarnings("ignore", message="Configuration file not found")
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
        print(f"dustmaps-ext {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
