"""Command lines of the build pipelines: ``build-parametric`` and ``build-decaps``.

Both commands share one set of options with one meaning (:func:`add_build_options`):
``--work-dir`` (default ``OUTPUT.work`` next to the output), ``--scheduler``, ``--workers``,
``--restart``, ``--overwrite``, ``--no-progress``, ``--dashboard-address``, ``-v``/``-q``
and ``--version`` (the last three shared with ``dustmaps-ext``, see :mod:`dustmaps_ext.cli`).
Heavy modules (numpy, scipy, healpy, numba, Dask, astropy) are imported only after the
arguments are parsed, so ``--help`` is instant. Expected errors (bad input, missing or
malformed files) end as one line naming the command-line flags, with exit status 2.

This module (and only this module) of the pipeline prints to standard output and standard
error.

Examples::

    build-parametric stars.parquet data_v3.fits --workers 8
    build-decaps stars.npz decaps_mean_and_samples.h5 --nside 8192 --scheduler tcp://host:8786
    build-decaps shards/ decaps_mean_and_samples.h5      # a folder of *.npz shards
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path
from typing import Iterator, Sequence

from dustmaps_ext.cli import (
    add_common_options,
    configure_logging,
    require_build_extra,
    run_command,
    verbosity,
)

__all__ = ["build_parametric_main", "build_decaps_main", "build_decaps_convert_main",
           "parametric_parser", "decaps_parser", "convert_parser",
           "decaps_config_from_args", "add_build_options", "default_work_dir", "BUILD_FLAGS"]

logger = logging.getLogger(__name__)

#: Python keywords that the pipelines' messages name, and the flags that set them.
BUILD_FLAGS = {
    "resume=False": "--restart",
    "resume=True": "a run without --restart",
    "overwrite=True": "--overwrite",
    "n_workers": "--workers",
    "work_dir": "--work-dir",
    "tile_size": "--tile-size",
    "column_map": "--column",
    "l_range_deg": "--l-range",
    "b_range_deg": "--b-range",
    "nside_block": "--block-nside",
    "block_nside": "--block-nside",
    "nside_min": "--nside-min",
    "nside_max": "--nside-max",
    "progress=False": "--no-progress",
}

_DASHBOARD_OFF = ("none", "off", "")


def default_work_dir(output: Path, legacy_suffix: str | None = None) -> Path:
    """``OUTPUT.work`` next to the output: the folder both builds keep for resuming.

    Parameters
    ----------
    output : pathlib.Path
        The file the build writes.
    legacy_suffix : str, optional
        The suffix of an older naming rule (``build-decaps`` used ``OUTPUT-STEM_work``): a
        folder of that name is reused when it exists and ``OUTPUT.work`` does not, so an
        earlier run still resumes.
    """
    work = output.with_name(output.name + ".work")
    if legacy_suffix and not work.exists():
        legacy = output.with_name(output.stem + legacy_suffix)
        if legacy.is_dir():
            logger.warning("resuming in %s, the work folder of an earlier version (new builds "
                           "use %s)", legacy, work)
            return legacy
    return work


def add_build_options(parser: argparse.ArgumentParser) -> None:
    """The options every build command has, with one name and one meaning."""
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="folder of intermediate files, kept to resume a killed build "
                             "(default: OUTPUT.work next to the output)")
    parser.add_argument("--scheduler", default=None,
                        help="'synchronous', 'threads', 'processes', or the address of a "
                             "running Dask scheduler (tcp://host:8786); default: a local "
                             "cluster of single-threaded worker processes")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes (or threads) of the local scheduler "
                             "(default: the number of CPUs)")
    parser.add_argument("--n-workers", dest="workers_deprecated", type=int, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--restart", action="store_true",
                        help="discard the intermediate files of an earlier run and start over "
                             "(default: resume it)")
    parser.add_argument("--no-resume", dest="restart_deprecated", action="store_true",
                        help=argparse.SUPPRESS)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUTPUT if it exists")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (TQDM_DISABLE=1 also turns them off)")
    parser.add_argument("--dashboard-address", default=None, metavar="HOST:PORT",
                        help="where the local cluster's Dask dashboard listens (default: "
                             "127.0.0.1 on a free port, this machine only; 'none': no "
                             "dashboard)")
    add_common_options(parser)


def _resolve_deprecated(args: argparse.Namespace) -> None:
    """Map ``--n-workers`` and ``--no-resume`` (older spellings) onto the current options."""
    if args.workers_deprecated is not None:
        logger.warning("--n-workers is deprecated; use --workers")
        if args.workers is None:
            args.workers = args.workers_deprecated
    if args.restart_deprecated:
        logger.warning("--no-resume is deprecated; use --restart")
        args.restart = True
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, not {args.workers}")


@contextlib.contextmanager
def _dashboard(address: str | None) -> Iterator[None]:
    """Set the local cluster's dashboard address for the duration of a build."""
    if address is None:
        yield
        return
    import dask

    from .runner import DASHBOARD_ADDRESS_KEY

    value = None if address.strip().lower() in _DASHBOARD_OFF else address
    with dask.config.set({DASHBOARD_ADDRESS_KEY: value}):
        yield


def _start(prog: str, args: argparse.Namespace) -> None:
    """What every build does after parsing: logging, old spellings, the build extra."""
    configure_logging(verbosity(args))
    _resolve_deprecated(args)
    require_build_extra(prog)


# ----------------------------------------------------------------------- build-parametric

def _float_or_none_word(text: str) -> float | str:
    """A number, or the word ``none`` (returned as ``"none"``)."""
    if text.strip().lower() == "none":
        return "none"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _column_map(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        canonical, sep, name = item.partition("=")
        if not sep or not canonical or not name:
            raise ValueError(f"--column expects CANONICAL=NAME, got {item!r}")
        out[canonical] = name
    return out


def parametric_parser() -> argparse.ArgumentParser:
    """The ``build-parametric`` argument parser."""
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
    p.add_argument("--column", action="append", default=[], metavar="CANONICAL=NAME",
                   help="read a canonical column from a differently named one (repeatable)")
    p.add_argument("--float64", action="store_true", help="store float64 columns (default float32)")
    add_build_options(p)
    g = p.add_argument_group("method settings (defaults: the paper's, except --lam)")
    g.add_argument("--threshold", type=int, default=20,
                   help="minimum stars per sightline (default: %(default)s)")
    g.add_argument("--nside-min", type=int, default=64,
                   help="coarsest HEALPix nside of a sightline (default: %(default)s)")
    g.add_argument("--nside-max", type=int, default=1024,
                   help="finest HEALPix nside of a sightline (default: %(default)s)")
    g.add_argument("--block-nside", type=int, default=8,
                   help="HEALPix blocks (NESTED pixels at this nside) are the units of work "
                        "(default: %(default)s)")
    g.add_argument("--min-decentration-weight", type=float, default=1e-3,
                   help="leave out neighbours with a smaller eq. 1 weight (0 keeps all; "
                        "default: %(default)s)")
    g.add_argument("--rho-max", type=float, default=None,
                   help="Table 3's upper bound of the diffuse density (mag/kpc; default "
                        "0.04); beyond it the diffuse dust pays the cloud penalty")
    g.add_argument("--rho-soft-limit", type=_float_or_none_word, default=None,
                   help="largest diffuse density (mag/kpc) the soft bound allows "
                        "(default 1.0); 'none' makes --rho-max a hard bound, as the paper does")
    g.add_argument("--lam", type=float, default=None,
                   help="weight of the L1 penalty on the cloud columns (eq. 15; default "
                        "0.05, the paper's is 0.1: see the building_parametric docs)")
    g.add_argument("--gap-placement", choices=("prior", "minimax", "none"), default=None,
                   help="where a cloud's rise goes in a gap between stars that leaves its "
                        "position open: prior (default: most probable for clouds spread "
                        "through the Galactic disk), minimax (2ab/(a+b)) or none (where the "
                        "optimiser stopped)")
    g.add_argument("--no-distance-error-model", action="store_true",
                   help="leave the cloud rises where the fit at the stars' measured distances "
                        "put them (default: placed and sized last under the stars' distance "
                        "errors; see the building_parametric docs)")
    return p


def build_parametric_main(argv: Sequence[str] | None = None) -> int:
    """``build-parametric``: run the parametric build; returns the exit status."""
    args = parametric_parser().parse_args(argv)
    return run_command("build-parametric", lambda: _run_parametric(args), verbosity(args),
                       flags=BUILD_FLAGS)


def _run_parametric(args: argparse.Namespace) -> int:
    _start("build-parametric", args)
    column_map = _column_map(args.column)

    import dataclasses

    import numpy as np

    from .parametric.fit import FitConfig
    from .parametric.pipeline import ParametricBuildConfig, build_parametric_map

    fit = FitConfig()
    if args.rho_soft_limit is not None:
        fit = dataclasses.replace(fit, rho_soft_limit=(
            None if args.rho_soft_limit == "none" else args.rho_soft_limit))
    if args.rho_max is not None:
        fit = dataclasses.replace(fit, rho_bounds=(fit.rho_bounds[0], args.rho_max))
    if args.lam is not None:
        fit = dataclasses.replace(fit, lam=args.lam)
    if args.gap_placement is not None:
        fit = dataclasses.replace(fit, gap_placement=args.gap_placement)
    if args.no_distance_error_model:
        fit = dataclasses.replace(fit, distance_error_model=False)
    config = ParametricBuildConfig(
        threshold=args.threshold, nside_min=args.nside_min, nside_max=args.nside_max,
        block_nside=args.block_nside, min_decentration_weight=args.min_decentration_weight,
        l_range=tuple(args.l_range) if args.l_range else None,
        b_range=tuple(args.b_range) if args.b_range else None, fit=fit)
    output = Path(args.output)
    work = args.work_dir or default_work_dir(output)
    with _dashboard(args.dashboard_address):
        results = build_parametric_map(
            args.catalog, output, work, config=config, scheduler=args.scheduler,
            n_workers=args.workers, progress=not args.no_progress, resume=not args.restart,
            overwrite=args.overwrite, dtype=np.float64 if args.float64 else np.float32,
            column_map=column_map or None, catalog_format=args.catalog_format,
            hdf5_group=args.hdf5_group)
    n = results["nside"].size
    fitted = int(results["fitted"].sum())
    print(f"wrote {output}: {n} sightlines ({fitted} fitted), median residual sigma "
          f"{np.nanmedian(results['sigma']) if fitted else float('nan'):.4f} mag; "
          f"per-sightline results in {work / 'sightlines.npz'}")
    return 0


# --------------------------------------------------------------------------- build-decaps

def decaps_parser() -> argparse.ArgumentParser:
    """The ``build-decaps`` argument parser."""
    p = argparse.ArgumentParser(
        prog="build-decaps",
        description="Build a DECaPS-format 3D dust map (Zucker et al. 2025, section 4.2) from "
                    "per-star (distance modulus, reddening) posteriors stored with "
                    "dustmaps_ext_build.decaps.inputs.StarPosteriors.save.")
    p.add_argument("stars", type=Path, nargs="+",
                   help="star posteriors (.npz): one file, several shard files, or folders "
                        "of *.npz shards (partitioned in parallel, in the order given)")
    p.add_argument("output", type=Path, help="release file to write (published HDF5 layout)")
    p.add_argument("--fast-layout", type=Path, default=None,
                   help="also write this package's fast (repacked) layout here")
    p.add_argument("--nside", type=int, default=None,
                   help="HEALPix nside of the map (default: the release's, 8192)")
    p.add_argument("--block-nside", dest="nside_block", type=int, default=256,
                   help="a block (the unit of work) is one nested pixel at this nside "
                        "(default: %(default)s)")
    p.add_argument("--nside-block", dest="nside_block", type=int, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # the older spelling
    p.add_argument("--max-density", type=Path, default=None,
                   help="CSV of distance (kpc) and maximum dust density (mag/kpc) for the "
                        "unphysical nearby high-reddening cut")
    p.add_argument("--l-range", type=float, nargs=2, default=None,
                   metavar=("L_MIN", "L_MAX"),
                   help="footprint longitudes (deg, may wrap; default: the release's, 239 366)")
    p.add_argument("--b-range", type=float, nargs=2, default=None,
                   metavar=("B_MIN", "B_MAX"),
                   help="footprint latitudes (deg; default: the release's, -10 10)")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds per chain (disables the retry ladder unless --retry)")
    p.add_argument("--sweeps", type=int, default=None,
                   help="sweeps of the 120 bins per temperature per round")
    p.add_argument("--retry", action="store_true", help="force the paper's retry ladder")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the samplers' random numbers (default: %(default)s)")
    p.add_argument("--tile-size", type=int, default=256,
                   help="side of an infill tile in cells of the ring image (0: one tile; "
                        "default: %(default)s)")
    p.add_argument("--weighting", choices=("loglike", "loglike_kish", "loglike_raw", "image"),
                   default=None,
                   help="how a star's Gaussian pixel weight enters: as the exponent of its "
                        "likelihood, rescaled to sum to the number of stars (loglike, the "
                        "default: the map's 1.07' PSF at nside 8192), rescaled to sum to "
                        "Kish's effective number of stars (loglike_kish), not rescaled "
                        "(loglike_raw), or as a factor on its posterior image (image: nearly "
                        "a 2.15' top-hat)")
    p.add_argument("--prior-rounding", choices=("floor", "split"), default=None,
                   help="how the jump prior's continuous jumps become 0.01 mag quanta: "
                        "floor (the default, as the code that made the released map) or "
                        "split (keeps the smooth model's mean jump)")
    p.add_argument("--prior-sigma-ln", type=float, default=None, metavar="SIGMA",
                   help="width of the jump prior's log-normal in ln(jump) (bayestar's "
                        "--sigma-log-Delta-EBV; default 0.75, as the code that made the "
                        "released map); wider makes clouds (large jumps in one bin) likelier: "
                        "with --weighting loglike_kish, 2 gives samples that cover a cloudy "
                        "sky (see the docs, 'What accuracy the data allow')")
    smooth = p.add_mutually_exclusive_group()
    smooth.add_argument("--no-smooth", action="store_true",
                        help="do not smooth the star posteriors (1%% of each axis)")
    smooth.add_argument("--already-smoothed", action="store_true",
                        help="the posteriors are smoothed already (e.g. brutus' "
                             "bin_pdfs_distred output): do not smooth them again")
    add_build_options(p)
    return p


def decaps_config_from_args(args: argparse.Namespace):
    """The :class:`~dustmaps_ext_build.decaps.pipeline.DecapsBuildConfig` the arguments ask for."""
    from .decaps.config import DecapsBuildConfig
    from .decaps.sampler import SamplerSettings

    base = SamplerSettings()
    custom = args.rounds is not None or args.sweeps is not None
    smp = SamplerSettings(n_rounds=args.rounds or base.n_rounds,
                          sweeps_per_round=args.sweeps or base.sweeps_per_round)
    # options left unset keep the config's defaults, which are the release's facts
    if args.prior_sigma_ln is not None:
        import dataclasses

        from .decaps.prior import FlaredSechDiskDustModel
        model = dataclasses.replace(FlaredSechDiskDustModel(), sigma_ln=args.prior_sigma_ln)
    else:
        model = None
    given = {name: value for name, value in (
        ("nside", args.nside),
        ("l_range_deg", None if args.l_range is None else tuple(args.l_range)),
        ("b_range_deg", None if args.b_range is None else tuple(args.b_range)),
        ("weight_mode", args.weighting),
        ("prior_rounding", args.prior_rounding), ("prior_model", model))
        if value is not None}
    return DecapsBuildConfig(nside_block=args.nside_block, sampler=smp,
                             retry=args.retry or not custom, seed=args.seed, **given)


def _max_reddening(path: Path | None):
    if path is None:
        return None
    import numpy as np

    from .decaps.filters import max_reddening_curve

    tab = np.loadtxt(path, delimiter=",", ndmin=2)
    if tab.shape[1] != 2:
        raise ValueError(f"--max-density {path}: expected two columns (distance kpc, "
                        "density mag/kpc)")
    return max_reddening_curve(tab[:, 0], tab[:, 1])


def build_decaps_main(argv: Sequence[str] | None = None) -> int:
    """``build-decaps``: run the DECaPS pipeline; returns the exit status."""
    args = decaps_parser().parse_args(argv)
    return run_command("build-decaps", lambda: _run_decaps(args), verbosity(args),
                       flags=BUILD_FLAGS)


def _run_decaps(args: argparse.Namespace) -> int:
    _start("build-decaps", args)
    for path in args.stars:
        if not path.exists():
            raise FileNotFoundError(f"star file not found: {path}")
    if args.output.exists() and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it")
    if args.tile_size < 0:
        raise ValueError(f"--tile-size must be 0 (one tile) or positive, not {args.tile_size}")

    from .decaps.partition import check_shards, resolve_shards
    from .decaps.pipeline import build_decaps

    cfg = decaps_config_from_args(args)
    max_ebv = _max_reddening(args.max_density)
    shards = resolve_shards(args.stars)
    check_shards(shards, cfg)  # NaN positions, bad offsets, footprint: before any work
    work = args.work_dir or default_work_dir(args.output, legacy_suffix="_work")
    with _dashboard(args.dashboard_address):
        res = build_decaps(shards, args.output, work, cfg, max_ebv=max_ebv,
                           scheduler=args.scheduler, n_workers=args.workers,
                           progress=not args.no_progress, resume=not args.restart,
                           fast_path=args.fast_layout, overwrite=args.overwrite,
                           tile_size=args.tile_size or None,
                           smooth=not (args.no_smooth or args.already_smoothed))
    print(f"wrote {args.output}: {res['n_pixels']} pixels, {res['n_converged']} converged, "
          f"{res['n_infilled']} infilled ({res['n_missing']} with too few stars), "
          f"{res['n_no_reliable_range']} fitted without a reliable distance range; "
          f"posteriors {'smoothed' if res['smoothed'] else 'not smoothed'}; unphysical-mode "
          f"cut {'on' if res['unphysical_cut'] else 'off (no --max-density curve given)'}")
    return 0


def convert_parser() -> argparse.ArgumentParser:
    """The parser of ``build-decaps-convert``."""
    p = argparse.ArgumentParser(prog="build-decaps-convert", description=(
        "Convert per-star posteriors (an (n, 120, 700) image dataset, or (n, m) samples of "
        "distance modulus and E(B-V)) in an HDF5 file into build-decaps' input (.npz); cell i "
        "of an image is the point mu = 4 + 0.125 i (--grid points) or the bin starting there "
        "(--grid bins)."))
    add_common_options(p)
    p.add_argument("h5", type=Path, help="HDF5 file holding the posteriors and l, b (deg)")
    p.add_argument("output", type=Path, help="input file to write (.npz)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="dataset of posterior images, shape (n, 120, 700)")
    src.add_argument("--mu-samples", help="dataset of distance-modulus samples (n, m)")
    p.add_argument("--ebv-samples", help="dataset of E(B-V) samples (n, m), with --mu-samples")
    p.add_argument("--grid", choices=("points", "bins"), default="points",
                   help="what image cell i is: the point mu = 4 + 0.125 i, or the bin that "
                        "starts there (default: %(default)s)")
    p.add_argument("--l", default="l", dest="l_name",
                   help="dataset of Galactic longitudes, deg (default: %(default)s)")
    p.add_argument("--b", default="b", dest="b_name",
                   help="dataset of Galactic latitudes, deg (default: %(default)s)")
    return p


def build_decaps_convert_main(argv: Sequence[str] | None = None) -> int:
    """``build-decaps-convert``: per-star images or samples in HDF5 -> a build input."""
    args = convert_parser().parse_args(argv)
    return run_command("build-decaps-convert", lambda: _run_convert(args), verbosity(args))


def _run_convert(args: argparse.Namespace) -> int:
    configure_logging(verbosity(args))
    if args.mu_samples and not args.ebv_samples:
        raise ValueError("--mu-samples needs --ebv-samples")
    from dataclasses import fields

    import h5py

    from .decaps.convert import posteriors_from_images, posteriors_from_samples
    from .decaps.inputs import REQUIRED_FIELDS, StarPosteriors

    with h5py.File(args.h5, "r") as f:
        meta = {fl.name: f[fl.name][()] for fl in fields(StarPosteriors)
                if fl.name not in REQUIRED_FIELDS and fl.name in f}
        for name in (args.l_name, args.b_name, args.images or args.mu_samples,
                     *([args.ebv_samples] if args.mu_samples else [])):
            if name not in f:
                raise ValueError(f"{args.h5}: no dataset {name!r}")
        l_deg, b_deg = f[args.l_name][()], f[args.b_name][()]
        if args.images:
            stars = posteriors_from_images(f[args.images], l_deg, b_deg, grid=args.grid, **meta)
        else:
            stars = posteriors_from_samples(f[args.mu_samples][()], f[args.ebv_samples][()],
                                            l_deg, b_deg, **meta)
    stars.save(args.output)
    print(f"wrote {args.output}: {stars.n_star} stars")
    return 0
