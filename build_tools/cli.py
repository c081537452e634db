"""Command-line entry points of the build pipelines (``build-parametric``, ...).

Each command has its own argparse parser and ``*_main(argv=None) -> int`` function; the
console scripts of ``setup.cfg`` point at them. Heavy modules are imported inside the
handlers, so ``--help`` is instant. This module (and only this module) of ``build_tools``
prints to standard output and standard error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

__all__ = ["build_parametric_main", "build_decaps_main"]


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _column_map(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        canonical, sep, name = item.partition("=")
        if not sep or not canonical or not name:
            raise argparse.ArgumentTypeError(f"--column expects CANONICAL=NAME, got {item!r}")
        out[canonical] = name
    return out


def _parametric_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="build-parametric",
        description="Build the parametric 3D dust map of Wang et al. (2025) from a star "
                    "catalog, in the released data_v3.fits layout.")
    p.add_argument("catalog", help="star catalog (Parquet, FITS, HDF5, CSV or ECSV) with columns "
                   "l, b, ebv, ebv_err, distance, distance_err_lo, distance_err_hi (see --column)")
    p.add_argument("output", help="FITS table to write (gzip-compressed if it ends with .gz)")
    p.add_argument("--format", dest="catalog_format", default=None,
                   choices=("parquet", "fits", "hdf5", "csv", "ecsv"),
                   help="format of CATALOG (default: from its suffix)")
    p.add_argument("--hdf5-group", default="/", help="HDF5 group holding the catalog columns")
    p.add_argument("--l-range", type=float, nargs=2, default=None, metavar=("LMIN", "LMAX"),
                   help="only fit the sightlines centred in this longitude range (deg; may wrap "
                        "through 0, e.g. 350 10); rows outside the region are NaN")
    p.add_argument("--b-range", type=float, nargs=2, default=None, metavar=("BMIN", "BMAX"),
                   help="only fit the sightlines centred in this latitude range (deg); rows "
                        "outside the region are NaN")
    p.add_argument("--work-dir", help="folder for prepared inputs and per-block results; keep "
                   "it to resume a killed build (default: OUTPUT.work)")
    p.add_argument("--column", action="append", default=[], metavar="CANONICAL=NAME",
                   help="read a canonical column from a differently named one (repeatable)")
    p.add_argument("--scheduler", default=None,
                   help="'synchronous', 'threads', 'processes', or a Dask scheduler address "
                        "(tcp://host:8786); default: a local cluster of single-threaded processes")
    p.add_argument("--n-workers", type=int, default=None, help="workers of the local cluster")
    p.add_argument("--restart", action="store_true",
                   help="discard block results of an earlier run instead of resuming")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--float64", action="store_true", help="store float64 columns (default float32)")
    g = p.add_argument_group("method settings (defaults: the paper's)")
    g.add_argument("--threshold", type=int, default=20, help="minimum stars per sightline")
    g.add_argument("--nside-min", type=int, default=64)
    g.add_argument("--nside-max", type=int, default=1024)
    g.add_argument("--block-nside", type=int, default=8,
                   help="HEALPix blocks (NESTED pixels at this nside) are the units of work")
    g.add_argument("--min-decentration-weight", type=float, default=1e-3,
                   help="leave out neighbours with a smaller eq. 1 weight (0 keeps all)")
    g.add_argument("--rho-max", type=float, default=None,
                   help="upper bound of the diffuse density (mag/kpc; Table 3: 0.04)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log progress (-v: info, -vv: debug)")
    return p


def build_parametric_main(argv: Sequence[str] | None = None) -> int:
    """``build-parametric``: run the parametric build; returns the exit code."""
    parser = _parametric_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        column_map = _column_map(args.column)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))

    import dataclasses
    from pathlib import Path

    import numpy as np

    from .parametric.fit import FitConfig
    from .parametric.pipeline import ParametricBuildConfig, build_parametric_map

    fit = FitConfig()
    if args.rho_max is not None:
        fit = dataclasses.replace(fit, rho_bounds=(fit.rho_bounds[0], args.rho_max))
    try:
        config = ParametricBuildConfig(
            threshold=args.threshold, nside_min=args.nside_min, nside_max=args.nside_max,
            block_nside=args.block_nside, min_decentration_weight=args.min_decentration_weight,
            l_range=tuple(args.l_range) if args.l_range else None,
            b_range=tuple(args.b_range) if args.b_range else None, fit=fit)
        output = Path(args.output)
        work = Path(args.work_dir) if args.work_dir else output.with_name(output.name + ".work")
        results = build_parametric_map(
            args.catalog, output, work, config=config, scheduler=args.scheduler,
            n_workers=args.n_workers, progress=not args.no_progress, resume=not args.restart,
            overwrite=args.overwrite, dtype=np.float64 if args.float64 else np.float32,
            column_map=column_map or None, catalog_format=args.catalog_format,
            hdf5_group=args.hdf5_group)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"build-parametric: error: {exc}", file=sys.stderr)
        return 2
    n = results["nside"].size
    fitted = int(results["fitted"].sum())
    print(f"wrote {output}: {n} sightlines ({fitted} fitted), median residual sigma "
          f"{np.nanmedian(results['sigma']) if fitted else float('nan'):.4f} mag; "
          f"per-sightline results in {work / 'sightlines.npz'}")
    return 0


def build_decaps_main(argv: Sequence[str] | None = None) -> int:
    """``build-decaps``: the DECaPS pipeline (see :mod:`dustmaps_ext_build.decaps.cli`)."""
    from .decaps.cli import build_decaps_main as run

    return run(argv)
