"""The ``dustmaps-ext`` command line: ``demo``, ``fetch``, ``query`` and ``plot``.

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

    if args.target == "decaps":
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


# Targets of `dustmaps-ext plot <target>`; each adds its own sub-parser.
_PLOT_TARGETS: list[Callable[[argparse._SubParsersAction], None]] = [
    _plot_wang2025,
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
    parser = argparse.ArgumentParser(prog="dustmaps-ext", description=__doc__.splitlines()[0])
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
