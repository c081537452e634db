"""``build-decaps``: build a DECaPS-format release from per-star posteriors.

The lead hooks :func:`build_decaps_main` into ``build_tools/cli.py`` and the ``build-decaps``
console script. Example::

    build-decaps stars.npz decaps_mean_and_samples.h5 --nside 8192 --scheduler tcp://host:8786
    build-decaps shards/ decaps_mean_and_samples.h5      # a folder of *.npz shards
    build-decaps s0.npz s1.npz s2.npz decaps_mean_and_samples.h5
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

__all__ = ["build_decaps_main", "make_parser", "config_from_args", "convert_inputs_main"]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="build-decaps",
        description="Build a DECaPS-format 3D dust map (Zucker et al. 2025 §4.2) from per-star "
                    "(distance modulus, reddening) posteriors stored with "
                    "dustmaps_ext_build.decaps.inputs.StarPosteriors.save.")
    p.add_argument("stars", type=Path, nargs="+",
                   help="star posteriors (.npz): one file, several shard files, or folders "
                        "of *.npz shards (partitioned in parallel, in the order given)")
    p.add_argument("out", type=Path, help="release file to write (published HDF5 layout)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="per-block inputs and outputs, kept for resume (default: OUT_work)")
    p.add_argument("--fast-layout", type=Path, default=None,
                   help="also write this package's fast layout here")
    p.add_argument("--nside", type=int, default=8192)
    p.add_argument("--nside-block", type=int, default=256,
                   help="a block is one nested pixel at this nside")
    p.add_argument("--max-density", type=Path, default=None,
                   help="CSV of distance (kpc) and maximum dust density (mag/kpc) for the "
                        "unphysical nearby high-reddening cut")
    p.add_argument("--l-range", type=float, nargs=2, default=(239.0, 366.0),
                   metavar=("L_MIN", "L_MAX"), help="footprint longitudes (deg, may wrap)")
    p.add_argument("--b-range", type=float, nargs=2, default=(-10.0, 10.0),
                   metavar=("B_MIN", "B_MAX"), help="footprint latitudes (deg)")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds per chain (disables the retry ladder unless --retry)")
    p.add_argument("--sweeps", type=int, default=None,
                   help="sweeps of the 120 bins per temperature per round")
    p.add_argument("--retry", action="store_true", help="force the paper's retry ladder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weighting", choices=("loglike", "loglike_raw", "image"),
                   default="loglike",
                   help="how a star's Gaussian pixel weight enters: as the exponent of its "
                        "likelihood, rescaled to sum to the number of stars (loglike: the "
                        "map's 1.07' PSF at nside 8192), not rescaled (loglike_raw), or as a "
                        "factor on its posterior image (image: nearly a 2.15' top-hat)")
    smooth = p.add_mutually_exclusive_group()
    smooth.add_argument("--no-smooth", action="store_true",
                        help="do not smooth the star posteriors (1%% of each axis)")
    smooth.add_argument("--already-smoothed", action="store_true",
                        help="the posteriors are smoothed already (e.g. brutus' "
                             "bin_pdfs_distred output): do not smooth them again")
    p.add_argument("--tile-size", type=int, default=256,
                   help="side of an infill tile in cells of the ring image (0: one tile)")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler: address, 'synchronous', 'threads', 'processes' "
                        "(default: a local cluster)")
    p.add_argument("--workers", type=int, default=None, help="local cluster workers")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args):
    """The :class:`~dustmaps_ext_build.decaps.pipeline.DecapsBuildConfig` an argument set asks for."""
    from .pipeline import DecapsBuildConfig
    from .sampler import SamplerSettings

    base = SamplerSettings()
    custom = args.rounds is not None or args.sweeps is not None
    smp = SamplerSettings(n_rounds=args.rounds or base.n_rounds,
                          sweeps_per_round=args.sweeps or base.sweeps_per_round)
    return DecapsBuildConfig(nside=args.nside, nside_block=args.nside_block, sampler=smp,
                             retry=args.retry or not custom, seed=args.seed,
                             weight_mode=args.weighting,
                             l_range_deg=tuple(args.l_range), b_range_deg=tuple(args.b_range))


def _max_ebv(path):
    if path is None:
        return None
    from .filters import max_reddening_curve

    tab = np.loadtxt(path, delimiter=",", ndmin=2)
    if tab.shape[1] != 2:
        raise ValueError(f"{path}: expected two columns (distance kpc, density mag/kpc)")
    return max_reddening_curve(tab[:, 0], tab[:, 1])


def build_decaps_main(argv=None) -> int:
    """Entry point of ``build-decaps``; returns the exit status."""
    from .partition import check_shards, resolve_shards

    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # Dask's scheduler and nannies log at INFO level by default
        try:
            import distributed  # noqa: F401  (sets the "distributed" logger's level)
        except ImportError:  # the synchronous and threaded schedulers need only dask
            pass
        logging.getLogger("distributed").setLevel(logging.WARNING)
    try:
        for path in args.stars:
            if not path.exists():
                raise FileNotFoundError(f"star file not found: {path}")
        if args.out.exists() and not args.overwrite:
            raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
        if args.tile_size < 0:
            raise ValueError(f"--tile-size must be 0 (one tile) or positive, not {args.tile_size}")
        cfg = config_from_args(args)
        max_ebv = _max_ebv(args.max_density)
        shards = resolve_shards(args.stars)
        check_shards(shards, cfg)  # NaN positions, bad offsets, footprint: before any work
    except (OSError, ValueError) as exc:
        print(f"build-decaps: error: {exc}", file=sys.stderr)
        return 2
    from .pipeline import build_decaps

    work = args.work_dir or args.out.with_name(args.out.stem + "_work")
    res = build_decaps(shards, args.out, work, cfg, max_ebv=max_ebv,
                       scheduler=args.scheduler, n_workers=args.workers,
                       progress=not args.no_progress, resume=not args.no_resume,
                       fast_path=args.fast_layout, overwrite=args.overwrite,
                       tile_size=args.tile_size or None,
                       smooth=not (args.no_smooth or args.already_smoothed))
    print(f"wrote {args.out}: {res['n_pixels']} pixels, {res['n_converged']} converged, "
          f"{res['n_infilled']} infilled ({res['n_missing']} with too few stars), "
          f"{res['n_no_reliable_range']} fitted without a reliable distance range; "
          f"posteriors {'smoothed' if res['smoothed'] else 'not smoothed'}; unphysical-mode "
          f"cut {'on' if res['unphysical_cut'] else 'off (no --max-density curve given)'}")
    return 0


def convert_inputs_main(argv=None) -> int:
    """``build-decaps-convert``: per-star images or samples in HDF5 -> a build input (.npz).

    Examples::

        build-decaps-convert stars.h5 stars.npz --images posterior --grid bins
        build-decaps-convert stars.h5 stars.npz --mu-samples mu --ebv-samples ebv

    The HDF5 file holds the named datasets plus ``l`` and ``b`` (deg; other names with
    ``--l``/``--b``); optional per-star datasets named like the
    :class:`~dustmaps_ext_build.decaps.inputs.StarPosteriors` metadata fields are copied.
    """
    import h5py

    from .convert import GRID_CONVENTIONS, posteriors_from_images, posteriors_from_samples
    from .inputs import REQUIRED_FIELDS, StarPosteriors
    from dataclasses import fields

    p = argparse.ArgumentParser(prog="build-decaps-convert", description=(
        "Convert per-star posteriors (an (n, 120, 700) image dataset, or (n, m) samples of "
        "distance modulus and E(B-V)) in an HDF5 file into build-decaps' input; cell i of an "
        "image is the point mu = 4 + 0.125 i (--grid points) or the bin starting there "
        "(--grid bins)."))
    p.add_argument("h5", type=Path)
    p.add_argument("out", type=Path, help="input file to write (.npz)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="dataset of posterior images, shape (n, 120, 700)")
    src.add_argument("--mu-samples", help="dataset of distance-modulus samples (n, m)")
    p.add_argument("--ebv-samples", help="dataset of E(B-V) samples (n, m)")
    p.add_argument("--grid", choices=GRID_CONVENTIONS, default="points")
    p.add_argument("--l", default="l", dest="l_name")
    p.add_argument("--b", default="b", dest="b_name")
    args = p.parse_args(argv)
    try:
        if args.mu_samples and not args.ebv_samples:
            raise ValueError("--mu-samples needs --ebv-samples")
        with h5py.File(args.h5, "r") as f:
            meta = {fl.name: f[fl.name][()] for fl in fields(StarPosteriors)
                    if fl.name not in REQUIRED_FIELDS and fl.name in f}
            l_deg, b_deg = f[args.l_name][()], f[args.b_name][()]
            if args.images:
                stars = posteriors_from_images(f[args.images], l_deg, b_deg, grid=args.grid,
                                               **meta)
            else:
                stars = posteriors_from_samples(f[args.mu_samples][()],
                                                f[args.ebv_samples][()], l_deg, b_deg, **meta)
    except (OSError, KeyError, ValueError) as exc:
        print(f"build-decaps-convert: error: {exc}", file=sys.stderr)
        return 2
    stars.save(args.out)
    print(f"wrote {args.out}: {stars.n_star} stars")
    return 0


if __name__ == "__main__":
    raise SystemExit(build_decaps_main())
