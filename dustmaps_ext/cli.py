"""The ``dustmaps-ext`` command line (``demo``, ``fetch``, ``plot``), and the pieces that every
command line of the package shares.

Each sub-command is registered by one ``_register_*`` function below and runs a handler that
imports what it needs lazily, so ``--help`` imports nothing heavy (no numpy, astropy, numba).
This module prints to standard output; the library never does.

The shared pieces, used by ``dustmaps-ext`` and by the build commands ``build-decaps`` and
``build-parametric`` alike, give the three one command line:

* :func:`add_common_options`: ``-v/--verbose`` and ``-q/--quiet`` (accepted before or after
  a sub-command) and ``--version``;
* :func:`configure_logging`: the log level they ask for, with Dask's own INFO lines only at
  ``-vv``;
* :func:`run_command`: expected errors (bad input, missing or malformed files, failed
  downloads) end as one line on standard error, naming command-line flags rather than
  Python keywords, with exit status 2; ``-vv`` shows the traceback instead;
* :func:`require_build_extra`: a build command without its optional dependencies stops
  with one line naming the extra to install.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import sys
import warnings
from typing import Callable, Mapping, Sequence

__all__ = ["main", "build_parser", "add_common_options", "verbosity", "configure_logging",
           "run_command", "require_build_extra", "flag_message",
           "BUILD_EXTRA_MODULES", "EXIT_ERROR"]

#: Exit status of a command that stops on an expected error (argparse's usage errors too).
EXIT_ERROR = 2

#: The modules of the ``build`` extra (``pip install "dustmaps_ext[build]"``).
BUILD_EXTRA_MODULES = ("dask", "distributed", "threadpoolctl", "pyarrow")

#: Python keywords in library messages and the ``dustmaps-ext`` flags that set them.
_FETCH_FLAGS = {"clobber=True": "--clobber", "silence_warnings=True": "--yes",
                "repack=False": "--no-repack", "keep_original=False": "--delete-original",
                "progress=False": "--no-progress", "base_url": "--base-url"}


def _version() -> str:
    from ._version import __version__

    return __version__


def add_common_options(parser: argparse.ArgumentParser, *, subcommand: bool = False) -> None:
    """Add ``-v/--verbose``, ``-q/--quiet`` (and, on a top-level parser, ``--version``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser of a command or of one of its sub-commands.
    subcommand : bool
        ``True`` for a sub-command's parser: the options then add to what was given before
        the sub-command (``dustmaps-ext -v fetch ... -v`` is ``-vv``) instead of resetting it.
    """
    # argparse parses a sub-command into a namespace of its own and copies it over the
    # command's: separate names keep a count given before the sub-command from being reset
    suffix = "_after_command" if subcommand else ""
    default = argparse.SUPPRESS if subcommand else 0
    parser.add_argument("-v", "--verbose", action="count", default=default, dest="verbose" + suffix,
                        help="log more: -v progress messages, -vv debug messages, Dask's own "
                             "log and the traceback of an error")
    parser.add_argument("-q", "--quiet", action="count", default=default, dest="quiet" + suffix,
                        help="log errors only (no warnings)")
    if not subcommand:
        prog = parser.prog
        parser.add_argument("--version", action="version", version=f"{prog} {_version()}",
                            help="print the version and exit")


def verbosity(args: argparse.Namespace) -> int:
    """``-v`` count minus ``-q`` count (0: warnings and errors only)."""
    return sum(int(getattr(args, name, 0)) * sign for name, sign in (
        ("verbose", 1), ("verbose_after_command", 1), ("quiet", -1), ("quiet_after_command", -1)))


def configure_logging(level_of_detail: int) -> None:
    """Log at the level :func:`verbosity` asks for, Dask's INFO lines only at ``-vv``.

    Dask's ``distributed`` logs every worker start and stop at INFO level through its own
    handler; below ``-vv`` its loggers show warnings and errors only, here and (through
    Dask's configuration, which the local cluster passes on) in worker processes.
    """
    level = (logging.ERROR if level_of_detail < 0 else logging.WARNING if level_of_detail == 0
             else logging.INFO if level_of_detail == 1 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger().setLevel(level)
    dask_level = level if level_of_detail >= 2 else max(level, logging.WARNING)
    for name in ("distributed", "dask", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(dask_level)
    _quiet_dask_workers(logging.getLevelName(dask_level).lower())


def _quiet_dask_workers(level_name: str) -> None:
    """Tell Dask (and the worker processes it starts) the log level of ``distributed``."""
    import os

    # worker processes configure their logging from Dask's config when they import
    # distributed; the environment variable reaches them before that, the config after.
    # Bokeh (the dashboard) sets its logger's level from its own variable when imported.
    os.environ["DASK_LOGGING__DISTRIBUTED"] = level_name
    os.environ["BOKEH_PY_LOG_LEVEL"] = "debug" if level_name == "debug" else "error"
    dask = sys.modules.get("dask")
    if dask is not None and hasattr(dask, "config"):
        dask.config.set({"logging.distributed": level_name})


def flag_message(message: str, flags: Mapping[str, str]) -> str:
    """``message`` on one line, with the Python keywords of ``flags`` replaced by their flags.

    >>> flag_message("pass resume=False to start over", {"resume=False": "--restart"})
    'pass --restart to start over'
    """
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    for keyword, flag in flags.items():
        text = re.sub(rf"(?<![\w.-]){re.escape(keyword)}(?![\w])", flag, text)
    return text


def _expected(exc: BaseException) -> bool:
    """Whether ``exc`` is an error of the input, the files or the network (not a bug)."""
    if isinstance(exc, (OSError, ValueError, RuntimeError)):
        return True
    # MapFileError and the other errors of dustmaps subclass dustmaps' Error; if dustmaps
    # was never imported, no such error can have been raised
    dustexceptions = sys.modules.get("dustmaps.dustexceptions")
    return dustexceptions is not None and isinstance(exc, dustexceptions.Error)


def run_command(prog: str, run: Callable[[], int | None], level_of_detail: int = 0, *,
                flags: Mapping[str, str] | None = None) -> int:
    """Run a command's work; expected errors become one line and exit status 2.

    Parameters
    ----------
    prog : str
        Command name that starts the error line (``"build-decaps"``, ``"dustmaps-ext fetch"``).
    run : callable
        The work; returns the exit status (``None``: 0).
    level_of_detail : int
        :func:`verbosity`; at 2 (``-vv``) and above errors keep their traceback.
    flags : mapping, optional
        Python keywords that library messages may name (``"resume=False"``) and the flags
        that set them (``"--restart"``), see :func:`flag_message`.

    Returns
    -------
    int
        The exit status: ``run``'s, :data:`EXIT_ERROR` for an expected error, 130 when
        interrupted (Ctrl-C).
    """
    # dustmaps warns on import when ~/.dustmapsrc does not exist; its default is fine here
    warnings.filterwarnings("ignore", message="Configuration file not found")
    try:
        return int(run() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  (sorted below: bugs keep their traceback)
        if level_of_detail >= 2 or not _expected(exc):
            raise
        text = flag_message(str(exc), flags or {}) or type(exc).__name__
        print(f"{prog}: error: {text}", file=sys.stderr)
        return EXIT_ERROR


def require_build_extra(prog: str) -> None:
    """Raise a ValueError naming the ``build`` extra when one of its modules is missing."""
    missing = []
    for name in BUILD_EXTRA_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise ValueError(f"{prog} needs the optional dependencies of the build extra (missing: "
                        f"{', '.join(missing)}); install them with: "
                        'pip install "dustmaps_ext[build]"')


def _register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="query the small simulated DECaPS-format map shipped with the package")
    p.add_argument("--output", default="dustmaps_ext_demo.png",
                   help="where to write the plane-of-sky PNG (default: %(default)s)")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    print(run_demo(png_path=args.output, progress=verbosity(args) > 0))
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
    # the layouts of dustmaps_ext._io.decaps.REPACK_LAYOUTS, literal so that --help imports no numpy
    d.add_argument("--layout", choices=("compact", "pixel-major"), default="compact",
                   help="layout of the repacked file: compact (default; lossless, an estimated "
                        "11.4 GB) or pixel-major (uncompressed, 74.0 GB)")
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
    if args.target == "decaps" and args.region:
        from .decaps import fetch as fetch_decaps

        path = fetch_decaps(mean_only=args.mean_only, silence_warnings=args.yes,
                            clobber=args.clobber, base_url=args.base_url,
                            progress=args.progress, region=args.region)
        print(f"DECaPS cutout ready: {path}")
    elif args.target == "decaps":
        from .decaps import fetch as fetch_decaps
        from .formats import decaps

        path = fetch_decaps(mean_only=args.mean_only, silence_warnings=args.yes,
                            clobber=args.clobber, repack=args.repack,
                            base_url=args.base_url, progress=args.progress,
                            keep_original=args.keep_original, layout=args.layout)
        print(f"DECaPS map ready: {path}")
        original, _ = decaps.decaps_paths(args.mean_only)
        if args.repack and original.exists():
            size_gb = original.stat().st_size / 1e9
            print(f"The published file {original} ({size_gb:.1f} GB) was "
                  "kept; the queries read the repacked file, so you may delete it to free that "
                  "space.")
        elif args.repack:
            print(f"The published file {original.name} is not kept (--delete-original).")
    elif args.target == "wang2025":
        from .wang2025 import fetch as fetch_wang2025

        path = fetch_wang2025(clobber=args.clobber, url=args.url, progress=args.progress)
        print(f"Wang et al. (2025) map ready: {path}")
    else:
        from .bayestar import fetch as fetch_bayestar2019

        path = fetch_bayestar2019(clobber=args.clobber, base_url=args.base_url,
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
    common.add_argument("--mode", choices=("mean", "median"), default="mean",
                        help="statistic of the map's samples drawn (default: %(default)s)")
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
    s.add_argument("--l-min", type=float, default=0.0,
                   help="first Galactic longitude, deg (default: %(default)s)")
    s.add_argument("--l-max", type=float, default=360.0,
                   help="last Galactic longitude, deg (default: %(default)s)")
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


def _register_query(sub: argparse._SubParsersAction) -> None:
    from ._query_cli import add_query_parser

    add_query_parser(sub).set_defaults(handler=_run_query)


def _run_query(args: argparse.Namespace) -> int:
    from ._query_cli import run_query

    print(run_query(args))
    return 0


# Sub-commands, in the order they appear in --help. Features add their own here.
_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _register_demo,
    _register_fetch,
    _register_query,
    _register_plot,
]


def _add_common_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """Give every sub-command (at any depth) ``-v`` and ``-q``, so they work after it too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                if "--verbose" not in subparser._option_string_actions:
                    add_common_options(subparser, subcommand=True)
                _add_common_options_everywhere(subparser)


def build_parser() -> argparse.ArgumentParser:
    """The ``dustmaps-ext`` argument parser."""
    parser = argparse.ArgumentParser(prog="dustmaps-ext", description="Query, fetch and plot the "
                                     "DECaPS and Wang et al. (2025) 3D dust maps.")
    add_common_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _REGISTRARS:
        register(sub)
    _add_common_options_everywhere(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    level_of_detail = verbosity(args)
    configure_logging(level_of_detail)
    prog = f"dustmaps-ext {args.command}"
    return run_command(prog, lambda: args.handler(args), level_of_detail, flags=_FETCH_FLAGS)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
