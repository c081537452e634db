"""The ``dustmaps-ext`` command line: ``demo``, ``fetch``, ``query`` and ``plot``.

Each sub-command is registered by one ``_register_*`` function below and runs a
handler that imports what it needs lazily, so ``dustmaps-ext --help`` is instant.
This module (and only this module) prints to standard output.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

__all__ = ["main"]


def _register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="query the small simulated DECaPS-format map shipped with the package")
    p.add_argument("--output", default="dustmaps_ext_demo.png",
                   help="where to write the plane-of-sky PNG (default: %(default)s)")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    run_demo(png_path=args.output, out=sys.stdout)
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
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
        print(f"dustmaps-ext {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
