"""The DECaPS map pipeline: blocks of nested pixels, Dask run, release file (§4.2, App. B).

Stages:

1. :func:`prepare_inputs` (a catalogue in memory) or
   :func:`.partition.partition_shards` (shard files, one Dask task each): smooth and cut the
   stars (§4.1.2, §4.2.1), then write per-block star files -- the stars within the weighting
   radius of the block's pixels, so that a block needs nothing else.
2. :func:`process_block` (workers; pixels are independent): for every footprint pixel of
   the block, Gaussian star weights (§4.2.2), reliable distances (App. B), and, with
   at least ``min_stars`` stars, the parallel-tempered line-of-sight fit with retries (§4.2.3).
   A pixel's seed depends only on (seed, pixel), so results do not depend on how pixels are
   grouped into blocks, on the scheduler, or on resuming.
3. :func:`assemble_release` (blocks in memory) or
   :func:`.assemble.assemble_release_from_blocks` (block files; tiled infill on Dask and a
   chunk-row streaming writer): infill pixels with too few stars (§4.2.4), write the
   published layout and, optionally, the fast layout.

:func:`build_decaps` runs the three stages with the project's Dask runner
(``dustmaps_ext_build.runner.run_blocks``: per-task outputs, progress, resume), stage 1 from shard
files and stage 3 streamed and tiled, so that the driver never holds the map's values.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import shutil
from pathlib import Path

import healpy as hp
import numpy as np

from dustmaps_ext_build.writers.decaps import PUBLISHED_CHUNK_PIXELS

from . import partition, pixelize, prior, reliable
from .config import DM_EDGES, DecapsBuildConfig
from .sampler import pack_pixel, sample_pixel
from .inputs import N_DM, N_E, StarPosteriors

__all__ = ["DecapsBuildConfig", "prepare_inputs", "footprint_blocks", "process_block",
           "process_block_file",
           "concat_block_results", "assemble_release", "build_decaps"]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- stage 1
def prepare_inputs(stars: StarPosteriors, out_dir, cfg: DecapsBuildConfig, max_ebv=None,
                   *, smooth: bool = True) -> dict:
    """Filter the stars and write one star file per block (in memory, on the driver).

    The whole catalogue is partitioned as a single shard by the code that
    :func:`build_decaps` runs on every shard (:func:`.partition.partition_stars`); star
    files already in ``out_dir`` are removed first.

    Parameters
    ----------
    stars : StarPosteriors
        All stars (raw binned posteriors and metadata).
    out_dir : path
        Folder for ``stars_{block:06d}.npz``.
    cfg : DecapsBuildConfig
    max_ebv : array_like, shape (120,), optional
        Maximum physical reddening curve (:func:`.filters.max_reddening_curve`).
    smooth : bool
        Smooth the posteriors (§4.1.2) before the cuts.

    Returns
    -------
    dict
        ``blocks`` (sorted block ids), ``n_in``, ``n_kept``, the cut ``masks`` and the
        catalogue's ``digest`` (:func:`.partition.shard_digest`).
    """
    partition.clear_star_dir(out_dir)
    return partition.partition_stars(stars, out_dir, cfg, max_ebv, shard=None, smooth=smooth)


# --------------------------------------------------------------------------- stage 2
def footprint_blocks(cfg: DecapsBuildConfig) -> np.ndarray:
    """Sorted blocks that may hold a footprint pixel (a superset: a block is kept when its
    centre lies within two block sizes of the footprint box)."""
    margin = 2.0 * math.degrees(pixelize.pixel_size_rad(cfg.nside_block))
    (l_lo, l_hi), (b_lo, b_hi) = cfg.l_range_deg, cfg.b_range_deg
    theta_hi = math.radians(90.0 - max(-90.0, b_lo - margin))
    theta_lo = math.radians(90.0 - min(90.0, b_hi + margin))
    cand = hp.query_strip(cfg.nside_block, theta_lo, theta_hi, inclusive=True, nest=True)
    cand = np.asarray(cand, np.int64)
    l, b = hp.pix2ang(cfg.nside_block, cand, nest=True, lonlat=True)
    cos_b = np.cos(np.radians(np.clip(np.abs(b) + margin, 0.0, 89.9)))
    keep = ((l - (l_lo - margin / cos_b)) % 360.0) <= (l_hi - l_lo) + 2.0 * margin / cos_b
    return np.sort(cand[keep | (margin >= 90.0)])


def _block_pixels(block: int, cfg: DecapsBuildConfig) -> np.ndarray:
    f = (cfg.nside // cfg.nside_block) ** 2
    return np.arange(block * f, (block + 1) * f, dtype=np.int64)


#: How each weighting choice packs a pixel (:func:`.sampler.pack_pixel`'s ``weight_mode``).
_PACK_MODE = {"loglike": "loglike", "loglike_kish": "loglike", "loglike_raw": "loglike",
              "image": "image"}


def process_block(block: int, stars: StarPosteriors, cfg: DecapsBuildConfig) -> dict:
    """Fit every pixel of one block that lies in the footprint.

    Every footprint pixel of the block is in the result, also those that no star reaches:
    pixels with fewer than ``min_stars`` stars (none included) are not fitted and are
    infilled in stage 3 (§4.2.4).

    Returns
    -------
    dict of numpy.ndarray
        ``healpix_index`` (n), ``n_stars`` (n), ``sum_weights`` (n), ``mean`` (n, 120),
        ``samples`` (n, n_keep_samples, 120), ``converged`` (n), ``fitted`` (n; False for
        pixels with fewer than ``min_stars`` stars, whose profiles are NaN), ``attempts``
        (n), ``tau`` (n, 3), ``dm_reliable_min``, ``dm_reliable_max`` (n) and
        ``n_proposals`` (n).
    """
    pix = _block_pixels(block, cfg)
    pl, pb = hp.pix2ang(cfg.nside, pix, nest=True, lonlat=True)
    pix = pix[cfg.in_footprint(pl, pb)]
    asg = pixelize.assign_stars_to_pixels(stars.l, stars.b, pix, cfg.nside,
                                          fwhm_pixels=cfg.fwhm_pixels,
                                          truncate_fwhm=cfg.truncate_fwhm)
    n_st = asg.n_stars()
    use = np.arange(pix.size)  # zero-star pixels too: stage 3 infills and flags them
    n = use.size
    S = cfg.n_keep_samples
    out = {"healpix_index": pix[use].astype(np.uint64), "n_stars": n_st[use].astype(np.int32),
           "sum_weights": np.zeros(n), "mean": np.full((n, N_DM), np.nan, np.float32),
           "samples": np.full((n, S, N_DM), np.nan, np.float32),
           "converged": np.zeros(n, bool), "fitted": np.zeros(n, bool),
           "attempts": np.zeros(n, np.int32), "tau": np.full((n, 3), np.nan),
           "dm_reliable_min": np.full(n, np.nan, np.float32),
           "dm_reliable_max": np.full(n, np.nan, np.float32),
           "n_proposals": np.zeros(n, np.int64)}
    x0 = stars.x0.astype(np.int64)
    nx = stars.nx.astype(np.int64)
    y0 = stars.y0.astype(np.int64)
    ny = stars.ny.astype(np.int64)
    for i, pi in enumerate(use):
        idx, w = asg.stars_of(pi)
        p = int(pix[pi])
        out["sum_weights"][i] = w.sum()
        pdm = reliable.distance_probability(stars, idx, w)
        out["dm_reliable_min"][i], out["dm_reliable_max"][i] = reliable.reliable_distance_range(
            pdm, DM_EDGES, cfg.p_reliable_min, cfg.p_reliable_max)
        if idx.size < cfg.min_stars:
            continue
        l, b = hp.pix2ang(cfg.nside, p, nest=True, lonlat=True)
        table = prior.log_jump_prior_table(
            prior.jump_prior_means(l, b, DM_EDGES, cfg.prior_model),
            cfg.prior_model.sigma_ln, N_E, rounding=cfg.prior_rounding)
        packed = pack_pixel(x0, nx, y0, ny, stars.offsets, stars.data, star_index=idx,
                            weights=pixelize.likelihood_exponents(w, cfg.weight_mode),
                            weight_mode=_PACK_MODE[cfg.weight_mode])
        seed = int(np.random.SeedSequence([cfg.seed, p]).generate_state(1, np.uint64)[0])
        res = sample_pixel(packed, table, cfg.sampler, seed=seed, retry=cfg.retry,
                                   retry_settings=cfg.retry_settings)
        out["mean"][i] = res.samples.mean(axis=0)
        pick = np.random.default_rng([cfg.seed, p, 1]).choice(res.samples.shape[0], S,
                                                               replace=False)
        out["samples"][i] = res.samples[np.sort(pick)]
        out["converged"][i] = res.converged
        out["fitted"][i] = True
        out["attempts"][i] = res.attempts
        out["tau"][i] = res.tau
        out["n_proposals"][i] = res.n_proposals
    return out


def process_block_file(block: int, *, star_dir: str, config: DecapsBuildConfig,
                       star_blocks=None) -> dict:
    """Worker entry point: read the block's stars and run :func:`process_block`.

    The stars are ``star_dir/stars_{block:06d}.npz`` (written by :func:`prepare_inputs`) or
    the block's shard fragments ``star_dir/stars_{block:06d}_{shard:06d}.npz`` concatenated
    in shard order (:func:`.partition.load_block_stars`). A block that is not in the sorted
    array ``star_blocks`` (when given: the blocks that stage 1 wrote stars for) has no
    stars: its footprint pixels are returned unfitted, to be infilled. Top-level and
    picklable through ``functools.partial`` for the Dask runner.
    """
    if star_blocks is not None:
        star_blocks = np.asarray(star_blocks, np.int64)
        i = int(np.searchsorted(star_blocks, int(block)))
        if i == star_blocks.size or star_blocks[i] != int(block):
            return process_block(int(block), StarPosteriors.empty(), config)
    stars = partition.load_block_stars(star_dir, int(block))
    return process_block(int(block), stars, config)


def concat_block_results(results) -> dict:
    """Concatenate per-block result dicts (the serial counterpart of the runner's loader)."""
    results = list(results)
    return {k: np.concatenate([r[k] for r in results]) for k in results[0]}


# --------------------------------------------------------------------------- stage 3
def assemble_release(blocks: dict, out_path, cfg: DecapsBuildConfig, *, fast_path=None,
                     overwrite: bool = False, progress: bool = True) -> dict:
    """Infill, then write the published layout (and optionally the fast layout).

    For maps that fit in memory; the same code as
    :func:`.assemble.assemble_release_from_blocks` (streamed from block files, tiled
    infill) with the dict as one block file and one infill tile.

    Parameters
    ----------
    blocks : dict
        Concatenated block results (:func:`concat_block_results` or the runner's loader).
    out_path : path
        Release file (published layout, readable by dustmaps' ``DECaPSQuery``).
    cfg : DecapsBuildConfig
    fast_path : path, optional
        Also write this package's fast layout there (``dustmaps_ext.decaps.repack``).

    Returns
    -------
    dict
        The arrays written, plus ``n_stars`` and ``infilled``.
    """
    from .assemble import assemble_release_in_memory  # the streamed, tiled stage 3

    return assemble_release_in_memory(blocks, out_path, cfg, fast_path=fast_path,
                                      overwrite=overwrite, progress=progress)


def build_decaps(stars: StarPosteriors | str | Path | list, out_path, work_dir,
                 cfg: DecapsBuildConfig, *, max_ebv=None, scheduler=None, n_workers=None,
                 progress: bool = True, resume: bool = True, fast_path=None,
                 overwrite: bool = False, tile_size: int | None = 256,
                 chunk_pixels: int = PUBLISHED_CHUNK_PIXELS, smooth: bool = True) -> dict:
    """Run the whole pipeline with the Dask runner, from star catalogue to release file.

    Every stage runs as tasks of ``dustmaps_ext_build.runner.run_blocks`` (stage 1 per input shard,
    stage 2 per block of pixels, the infill of stage 3 per tile) and writes one result file
    per task, so a killed build resumes where it stopped and gives the same file as an
    uninterrupted one. The driver never holds the map's values: stage 3 streams them from
    the block files (:func:`.assemble.assemble_release_from_blocks`).

    Parameters
    ----------
    stars : StarPosteriors, path or list of paths
        The star catalogue: in memory (partitioned on the driver by :func:`prepare_inputs`),
        or shard files in ``StarPosteriors.save`` format -- one file, a list of files or a
        folder of ``*.npz`` files -- partitioned in parallel and resumably by
        :func:`.partition.partition_shards` (a shard index is its position in the list,
        folders expanded in sorted order).
    out_path : path
        Release file to write.
    work_dir : path
        Holds ``stars/`` (per-block inputs), ``partition/`` (per-shard stage-1 results),
        ``blocks/`` (per-block outputs) and ``assemble/`` (per-tile infills); the result
        folders allow resuming. The resume
        fingerprint of the blocks combines the settings, ``max_ebv`` and the content digests
        of the shards, computed by the partition tasks.
    cfg : DecapsBuildConfig
    max_ebv : array_like, optional
        Maximum physical reddening curve for the §4.2.1 cut.
    scheduler, n_workers :
        Passed to ``dustmaps_ext_build.runner.run_blocks`` (None = a local Dask cluster; a
        scheduler address for a real cluster; "synchronous", "threads", "processes").
    progress, resume : bool
        Progress bar; skip blocks whose outputs exist (same settings).
    fast_path : path, optional
        Also write the fast layout.
    overwrite : bool
        Replace an existing ``out_path`` (checked before any work starts).
    tile_size : int or None
        Side of an infill tile's core in cells of the ring image (None: one tile, the
        untiled infill); see :func:`.assemble.assemble_release_from_blocks`.
    chunk_pixels : int
        Pixels per HDF5 chunk and per write (the release's 200,842).
    smooth : bool
        Smooth the star posteriors (§4.1.2). Pass False for posteriors that are already
        smoothed (brutus' ``bin_pdfs_distred`` output) or to build without smoothing.

    Returns
    -------
    dict
        The summary of :func:`.assemble.assemble_release_from_blocks` (``n_pixels``,
        ``n_converged``, ``n_missing``, ``n_infilled``, ``n_no_reliable_range``,
        ``n_blocks``, ``n_tiles``, ``path``), plus ``smoothed`` and
        ``unphysical_cut`` (whether the §4.2.1 cut of the nearby unphysical mode ran: it
        needs ``max_ebv``).
        The values are in the file: read it with ``dustmaps_ext.decaps.DECaPSQuery`` or
        h5py.

    Raises
    ------
    FileExistsError
        ``out_path`` exists and ``overwrite`` is False.
    ValueError
        A non-positive ``tile_size`` or ``chunk_pixels``; stars with a NaN ``l``/``b`` or
        a negative offset; no star near the footprint (all checked before any work).
    """
    from dustmaps_ext_build.runner import run_blocks  # the project's Dask runner

    from .assemble import assemble_release_from_blocks, check_output_options

    check_output_options(out_path, overwrite, tile_size, chunk_pixels)  # before any work
    if isinstance(stars, StarPosteriors):  # validated on construction
        partition.check_footprint(stars.l, stars.b, cfg)
    else:
        stars = partition.resolve_shards(stars)
        partition.check_shards(stars, cfg)
    if max_ebv is None:
        log.warning("no maximum-density curve: the cut of the unphysical nearby "
                    "high-reddening mode (§4.2.1) is off (pass max_ebv / --max-density)")
    work_dir = Path(work_dir)
    star_dir = work_dir / "stars"
    if isinstance(stars, StarPosteriors):  # small: partitioned on the driver, as one shard
        shutil.rmtree(work_dir / "partition", ignore_errors=True)  # stale shard results
        prep = prepare_inputs(stars, star_dir, cfg, max_ebv, smooth=smooth)
        data_digest = partition.combine_digests(prep["digest"])
    else:  # shards partitioned in parallel, resumably; digests computed by the tasks
        prep = partition.partition_shards(stars, star_dir, cfg, max_ebv,
                                          out_dir=work_dir / "partition", scheduler=scheduler,
                                          n_workers=n_workers, progress=progress,
                                          resume=resume, smooth=smooth)
        data_digest = prep["digest"]
    star_blocks = np.asarray(prep["blocks"], np.int64)
    fn = functools.partial(process_block_file, star_dir=str(star_dir), config=cfg,
                           star_blocks=star_blocks)
    digest = hashlib.sha256(cfg.fingerprint().encode())
    digest.update(b"max_ebv:" + (b"none" if max_ebv is None
                                  else np.asarray(max_ebv, np.float64).tobytes()))
    digest.update(f"smooth:{bool(smooth)};".encode())
    digest.update(data_digest.encode())
    blocks = np.union1d(star_blocks, footprint_blocks(cfg))  # starless blocks are infilled
    paths = run_blocks([int(b) for b in blocks], fn, work_dir / "blocks",
                       scheduler=scheduler, n_workers=n_workers, progress=progress,
                       resume=resume, fingerprint=digest.hexdigest())
    summary = assemble_release_from_blocks(
        paths, out_path, work_dir / "assemble", cfg, scheduler=scheduler, n_workers=n_workers,
        progress=progress, resume=resume, tile_size=tile_size, chunk_pixels=chunk_pixels,
        fast_path=fast_path, overwrite=overwrite)
    summary["smoothed"] = bool(smooth)
    summary["unphysical_cut"] = max_ebv is not None
    return summary
