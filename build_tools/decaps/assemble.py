"""Stage 3 of the DECaPS build, streamed and tiled: infill and release file from block files.

The in-memory stage 3 needs every block's results on the driver and infills the ring image
of the whole region at once; at the real map's size (51 M pixels at nside 8192, 120
distances, mean + 5 samples: ~150 GB as float32) neither fits. Here the driver holds only
the small per-pixel arrays (index, flags, reliable distances: ~25 bytes a pixel) and one
chunk row of values at a time:

1. **Pass 1** reads the per-pixel members of every block file (``.npz`` members load
   lazily, so ``mean`` and ``samples`` are not read) and checks that the blocks hold
   disjoint, sorted pixels. Missing pixels are those not ``fitted``.
2. **Tiled infill.** The ring image of §4.2.4 (row = ring, column = position in the ring,
   :func:`.infill.ring_grid`) is cut into square tiles of ``tile_size`` cells. Each tile
   holding missing pixels in its core is one task of :func:`dustmaps_ext_build.runner.run_blocks`
   (tile id as the block id; outputs in ``work_dir/infill``, so tiles run in parallel on
   Dask, show progress and resume after a kill). A task (:func:`infill_tile`) loads only
   the blocks that hold pixels of its core plus a halo of :func:`.infill.tile_halo` cells,
   runs :func:`.infill.infill_maps` on those pixels and returns the values of the missing
   pixels of its core.
3. **Streaming write.** The tile results are gathered into a memory-mapped array in
   ``work_dir`` (indexed by the rank of the pixel among the sorted missing pixels), then
   the release file is written chunk row by chunk row (``chunk_pixels`` pixels, whole HDF5
   chunks, so each is compressed once), reading the blocks in order and replacing the
   missing pixels by their infills. The file is written under a temporary name and renamed
   at the end: a killed assembly never leaves a file that looks complete.

How tiling changes the infill
-----------------------------
Within a tile the algorithm is exactly that of :func:`.infill.infill_maps` (missing pixels
visited in great-circle order from (l, b) = (301, 0) deg, draws seeded by (seed, pixel, map)),
applied to the pixels of the tile's core and halo. The halo covers everything the infill of
a core pixel reads directly: the region that fills it (centred at most ``window // 2``
away), that region's training translates (``train // 2``) and the reach of the 7
moving-median passes behind them (:func:`.infill.tile_halo`). What no fixed halo covers is
the *sequence* of infills: a region is conditioned on the infills made before it, which
form chains of missing pixels within ``2 (window // 2)`` cells of one another. A missing
core pixel gets exactly the untiled value when its whole chain lies within the tile's core
grown by ``window // 2`` cells (the tile then re-does the part of the chain that lies in
its halo, in the same order, with the same inputs); this includes clumps that straddle a
seam. A chain that leaves that area (a hole or streak of holes larger than the halo, cut by
a seam) is infilled by each tile without the infills the neighbouring tile made: a region
near a seam does not see the neighbouring tile's infills, and gets different, equally
valid, values. (On a footprint whose ring image is not convex, cells near the map's edge
inside a halo can also see a slightly different first-pass median.) With one tile covering
everything (``tile_size=None``) the result equals the untiled :func:`.infill.infill_maps`
exactly. The ring image is not periodic; its first column is put in the middle of the
longitudes the footprint leaves out (:func:`.infill.ring_origin`), so that a footprint that
crosses l = 0, like DECaPS's, is one piece in it.

Block files (and tile results) are read by the Dask workers, so the workers need the same
file system as the driver.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dustmaps_ext.files import atomic_output
from dustmaps_ext_build.runner import run_blocks, save_block
from dustmaps_ext_build.writers.decaps import PUBLISHED_CHUNK_PIXELS, create_decaps_release

from . import infill
from .config import DM_EDGES, DecapsBuildConfig

__all__ = ["assemble_release_from_blocks", "assemble_release_in_memory", "infill_tile",
           "tile_ids"]

log = logging.getLogger(__name__)

#: Per-pixel members read in pass 1 (small; the driver keeps them for the whole map).
PER_PIXEL_KEYS = ("healpix_index", "fitted", "converged", "dm_reliable_min", "dm_reliable_max",
                  "n_stars")
#: Members of a block file that stage 3 uses.
SOURCE_KEYS = PER_PIXEL_KEYS + ("mean", "samples")

_FORMAT = 1
_INDEX_NAME = "infill_index.npz"
_VALUES_NAME = "infill_values.npy"


# --------------------------------------------------------------------------- pass 1
@dataclass
class _Catalogue:
    """What pass 1 learns from the block files (sources sorted by first pixel)."""

    paths: list            # str, non-empty sources only, sorted by first pixel
    start: np.ndarray      # (n_src + 1,) offset of each source in the global pixel list
    bbox: np.ndarray       # (n_src, 4) ring-image rows/cols (lo, hi, lo, hi); -1 if not in belt
    pixel: dict            # the PER_PIXEL_KEYS, concatenated over the sources
    n_samples: int
    n_dist: int
    digest: str            # SHA-256 of the sources' member CRCs, in pixel order


def _npy_header(zf: zipfile.ZipFile, key: str) -> tuple:
    """Shape and dtype of an .npz member, from its header only."""
    with zf.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return shape, dtype


def _scan_sources(paths: Sequence, nside: int, col_origin: int) -> _Catalogue:
    """Pass 1: per-pixel arrays of every block file, checks, and the sources' layout."""
    found = []
    n_samples = n_dist = None
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"block file {p} does not exist")
        with zipfile.ZipFile(p) as zf:
            names = {i.filename for i in zf.infolist()}
            lacking = [k for k in SOURCE_KEYS if f"{k}.npy" not in names]
            if lacking:
                raise ValueError(f"block file {p} lacks {lacking}")
            crcs = ";".join(f"{i.filename}:{i.CRC}:{i.file_size}"
                            for i in sorted(zf.infolist(), key=lambda i: i.filename)
                            if i.filename[:-4] in SOURCE_KEYS)
            (n, s, d), _ = _npy_header(zf, "samples")
            (n_m, d_m), _ = _npy_header(zf, "mean")
        if n_m != n or d_m != d:
            raise ValueError(f"block file {p}: mean and samples shapes disagree")
        if n_samples is None:
            n_samples, n_dist = s, d
        elif (s, d) != (n_samples, n_dist):
            raise ValueError(f"block file {p} holds {s} samples x {d} distances, the first "
                             f"{n_samples} x {n_dist}")
        with np.load(p, allow_pickle=False) as z:
            arrs = {k: z[k] for k in PER_PIXEL_KEYS}
        hpx = arrs["healpix_index"].astype(np.int64)
        if any(a.shape != (hpx.size,) for a in arrs.values()) or hpx.size != n:
            raise ValueError(f"block file {p}: per-pixel arrays of different lengths")
        if np.any(np.diff(hpx) <= 0):
            raise ValueError(f"block file {p}: healpix_index is not strictly increasing")
        if hpx.size:
            found.append((int(hpx[0]), int(hpx[-1]), str(p), arrs, crcs))
    if not found:
        raise ValueError("the block files hold no pixels")
    found.sort(key=lambda t: t[0])
    digest = hashlib.sha256("|".join(t[4] for t in found).encode())  # not the paths
    for a, b in zip(found[:-1], found[1:]):
        if b[0] <= a[1]:
            raise ValueError(f"block files {a[2]} and {b[2]} hold overlapping pixels (pixel "
                             "ranges overlap; every pixel must be in one block)")
    bbox = np.full((len(found), 4), -1, np.int64)
    for i, (_, _, _, arrs, _) in enumerate(found):
        try:
            row, col = infill.ring_grid(arrs["healpix_index"], nside, col_origin)
        except ValueError:
            continue  # outside the belt: only an error if the infill has to run
        bbox[i] = row.min(), row.max(), col.min(), col.max()
    sizes = [t[3]["healpix_index"].size for t in found]
    pixel = {k: np.concatenate([t[3][k] for t in found]) for k in PER_PIXEL_KEYS}
    return _Catalogue(paths=[t[2] for t in found], start=np.concatenate([[0], np.cumsum(sizes)]),
                      bbox=bbox, pixel=pixel, n_samples=int(n_samples), n_dist=int(n_dist),
                      digest=digest.hexdigest())


# --------------------------------------------------------------------------- tiles
def _tile_geometry(nside: int, tile_size: int | None) -> tuple[int, int]:
    """(tile side in cells, tiles per row of the ring image); None: one tile for all."""
    n_cols = 4 * nside
    size = n_cols if tile_size is None else int(tile_size)  # >= 2 nside + 1 rows
    return size, -(-n_cols // size)


def tile_ids(pixels, nside: int, tile_size: int | None, col_origin: int = 0) -> np.ndarray:
    """Tile holding each NESTED pixel (in the belt) in its core.

    Tile ``t`` covers rows ``[r * T, (r + 1) * T)`` and columns ``[c * T, (c + 1) * T)``
    of the ring image whose column 0 is ring position ``col_origin``
    (:func:`.infill.ring_grid`), with ``r, c = divmod(t, ceil(4 nside / T))`` and
    ``T = tile_size`` (``None``: a single tile 0 covering the whole belt).
    """
    size, per_row = _tile_geometry(nside, tile_size)
    row, col = infill.ring_grid(pixels, nside, col_origin)
    return (row // size) * per_row + col // size


def _load_rows(path: str, keys, rows: np.ndarray) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k][rows] for k in keys}


def infill_tile(tile_id: int, *, index_path: str, nside: int, tile_size: int | None,
                window: int, train: int, median_width: int, seed: int,
                col_origin: int = 0) -> dict:
    """Infill the missing pixels of one tile's core (a task of the Dask runner).

    Parameters
    ----------
    tile_id : int
        Tile (see :func:`tile_ids`).
    index_path : str
        The sources' index written by the driver (paths and ring-image bounding boxes).
    nside, tile_size : int
        Map nside; tile side in cells (None: one tile).
    window, train, median_width, seed, col_origin : int
        Infill settings (:func:`.infill.infill_maps`).

    Returns
    -------
    dict of numpy.ndarray
        ``healpix_index`` (uint64, the missing pixels of the core, sorted), ``values``
        (float32, (n, 1 + n_samples, n_dist): mean then samples) and ``infilled`` (bool).
    """
    size, per_row = _tile_geometry(nside, tile_size)
    halo = infill.tile_halo(window, train, median_width)
    r0, c0 = (int(tile_id) // per_row) * size, (int(tile_id) % per_row) * size
    lo_r, hi_r = r0 - halo, r0 + size - 1 + halo
    lo_c, hi_c = c0 - halo, c0 + size - 1 + halo
    with np.load(index_path, allow_pickle=False) as z:
        paths, bbox = z["paths"], z["bbox"]
    touch = np.flatnonzero((bbox[:, 0] >= 0) & (bbox[:, 0] <= hi_r) & (bbox[:, 1] >= lo_r)
                           & (bbox[:, 2] <= hi_c) & (bbox[:, 3] >= lo_c))
    parts = []
    for k in touch:  # sources are sorted by pixel, so the concatenation is sorted
        with np.load(str(paths[k]), allow_pickle=False) as z:
            hpx = z["healpix_index"]
        row, col = infill.ring_grid(hpx, nside, col_origin)
        sel = np.flatnonzero((row >= lo_r) & (row <= hi_r) & (col >= lo_c) & (col <= hi_c))
        if sel.size:
            part = _load_rows(str(paths[k]), ("fitted", "mean", "samples"), sel)
            part.update(healpix_index=hpx[sel].astype(np.int64), row=row[sel], col=col[sel])
            parts.append(part)
    if not parts:
        raise ValueError(f"tile {tile_id} holds no pixels")
    t = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    maps = np.concatenate([t["mean"][None], np.moveaxis(t["samples"], 1, 0)], axis=0)
    missing = ~t["fitted"].astype(bool)
    core = (t["row"] >= r0) & (t["row"] < r0 + size) & (t["col"] >= c0) & (t["col"] < c0 + size)
    mc = missing & core
    infilled = np.zeros(missing.size, bool)
    if mc.any() and (~missing).any():
        maps, infilled = infill.infill_maps(t["healpix_index"], nside, maps, missing,
                                            window=window, train=train,
                                            median_width=median_width, seed=seed,
                                            col_origin=col_origin)
    return {"healpix_index": t["healpix_index"][mc].astype(np.uint64),
            "values": np.ascontiguousarray(np.moveaxis(maps[:, mc], 0, 1), dtype=np.float32),
            "infilled": infilled[mc]}


def _run_infill(cat: _Catalogue, missing: np.ndarray, work_dir: Path, cfg: DecapsBuildConfig,
                tile_size, col_origin, scheduler, n_workers, progress, resume):
    """Run the tiles; returns (infill values by missing rank, infilled flags, n_tiles).

    The values are None when nothing is infilled (no missing pixel, or no fitted pixel to
    infill from): then missing pixels keep their block values, as in the untiled stage.
    """
    hp_idx = cat.pixel["healpix_index"].astype(np.int64)
    miss_pix = hp_idx[missing]
    flags = np.zeros(miss_pix.size, bool)
    if not missing.any() or missing.all():
        return None, flags, 0
    bad = np.flatnonzero(cat.bbox[:, 0] < 0)
    if bad.size:  # the untiled infill refuses pixels outside the belt: raise its error
        infill.ring_grid(hp_idx[cat.start[bad[0]]:cat.start[bad[0] + 1]], cfg.nside)
    tiles = np.unique(tile_ids(miss_pix, cfg.nside, tile_size, col_origin))
    index = work_dir / _INDEX_NAME
    with atomic_output(index, suffix=".npz") as tmp:
        np.savez(tmp, paths=np.array(cat.paths), bbox=cat.bbox)
    fn = functools.partial(infill_tile, index_path=str(index), nside=cfg.nside,
                           tile_size=tile_size, window=cfg.infill_window,
                           train=cfg.infill_train, median_width=cfg.infill_median,
                           seed=cfg.seed, col_origin=col_origin)
    settings = {"format": _FORMAT, "nside": cfg.nside, "tile_size": tile_size,
                "col_origin": col_origin,
                "window": cfg.infill_window, "train": cfg.infill_train,
                "median_width": cfg.infill_median, "seed": cfg.seed, "sources": cat.digest}
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    log.info("infill: %d missing pixels in %d tiles", miss_pix.size, tiles.size)
    paths = run_blocks([int(t) for t in tiles], fn, work_dir / "infill", scheduler=scheduler,
                       n_workers=n_workers, progress=progress, resume=resume,
                       fingerprint=fingerprint, task_name="tile")
    values = np.lib.format.open_memmap(work_dir / _VALUES_NAME, mode="w+", dtype=np.float32,
                                       shape=(miss_pix.size, 1 + cat.n_samples, cat.n_dist))
    seen = np.zeros(miss_pix.size, bool)
    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            h = z["healpix_index"].astype(np.int64)
            rank = np.minimum(np.searchsorted(miss_pix, h), miss_pix.size - 1)
            if np.any(miss_pix[rank] != h):
                raise ValueError(f"tile result {p} holds pixels that are not missing; remove "
                                 f"{work_dir / 'infill'} and run again")
            values[rank] = z["values"]
            flags[rank] = z["infilled"]
            seen[rank] = True
    if not seen.all():
        raise RuntimeError(f"{int((~seen).sum())} missing pixels got no tile result")
    values.flush()
    log.info("infill: %d of %d missing pixels infilled", int(flags.sum()), miss_pix.size)
    return values, flags, int(tiles.size)


# --------------------------------------------------------------------------- writing
def _source_rows(cat: _Catalogue, a: int, b: int, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """(mean, samples) float32 of global pixels [a, b), read from the blocks in order.

    ``cache`` keeps the last block read (a block may span several chunk rows), so memory
    stays O(chunk row + one block).
    """
    mean = np.empty((b - a, cat.n_dist), np.float32)
    samples = np.empty((b - a, cat.n_samples, cat.n_dist), np.float32)
    k = int(np.searchsorted(cat.start, a, side="right")) - 1
    while k < len(cat.paths) and cat.start[k] < b:
        s0, s1 = int(cat.start[k]), int(cat.start[k + 1])
        lo, hi = max(a, s0), min(b, s1)
        if cache.get("k") != k:
            cache.clear()
            with np.load(cat.paths[k], allow_pickle=False) as z:
                cache.update(k=k, mean=z["mean"], samples=z["samples"])
        mean[lo - a:hi - a] = cache["mean"][lo - s0:hi - s0]
        samples[lo - a:hi - a] = cache["samples"][lo - s0:hi - s0]
        k += 1
    return mean, samples


def _value_rows(cat: _Catalogue, missing: np.ndarray, values: np.ndarray | None,
                chunk: int) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """(a, b, mean, samples) of consecutive chunk rows, missing pixels replaced by infills."""
    n = cat.start[-1]
    miss_idx = np.flatnonzero(missing)
    cache: dict = {}
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        mean, samples = _source_rows(cat, a, b, cache)
        m = missing[a:b]
        if values is not None and m.any():  # missing pixels of [a, b) have consecutive ranks
            v = values[np.searchsorted(miss_idx, a):np.searchsorted(miss_idx, b)]
            mean[m] = v[:, 0]
            samples[m] = v[:, 1:]
        yield a, b, mean, samples


def check_output_options(out_path, overwrite: bool, tile_size: int | None,
                         chunk_pixels: int) -> None:
    """Refuse an existing output (unless ``overwrite``) and bad tile or chunk sizes.

    Called before stage 3, and by :func:`.pipeline.build_decaps` before any work starts.
    """
    if Path(out_path).exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass overwrite=True to replace it")
    if tile_size is not None and int(tile_size) < 1:
        raise ValueError(f"tile_size must be a positive integer or None, not {tile_size}")
    if int(chunk_pixels) < 1:
        raise ValueError(f"chunk_pixels must be a positive integer, not {chunk_pixels}")


def _assemble(block_paths, out_path, work_dir, cfg: DecapsBuildConfig, *, scheduler, n_workers,
              progress, resume, tile_size, chunk_pixels, fast_path, overwrite, collect):
    out_path = Path(out_path)
    check_output_options(out_path, overwrite, tile_size, chunk_pixels)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    col_origin = infill.ring_origin(cfg.l_range_deg, cfg.nside, cfg.infill_seam_deg)
    cat = _scan_sources(block_paths, cfg.nside, col_origin)
    if cat.n_dist != DM_EDGES.size:
        raise ValueError(f"block files hold {cat.n_dist} distances, the release {DM_EDGES.size}")
    px = cat.pixel
    n = int(cat.start[-1])
    missing = ~px["fitted"].astype(bool)
    log.info("assembling %d pixels from %d block files (%d missing)", n, len(cat.paths),
             int(missing.sum()))
    values, miss_flags, n_tiles = _run_infill(cat, missing, work_dir, cfg, tile_size, col_origin,
                                              scheduler, n_workers, progress, resume)
    infilled = np.zeros(n, bool)
    infilled[missing] = miss_flags
    lo, hi = px["dm_reliable_min"], px["dm_reliable_max"]
    with np.errstate(invalid="ignore"):
        no_range = ~(lo < hi)  # NaN (a threshold never reached) or empty: Appendix B
    chunk = max(1, min(int(chunk_pixels), n))
    kept = [] if collect else None
    try:
        from dustmaps_ext.progress import tqdm

        with atomic_output(out_path, unique=False) as tmp, create_decaps_release(
                tmp, nside=cfg.nside, healpix_index=px["healpix_index"],
                dm_reliable_min=px["dm_reliable_min"], dm_reliable_max=px["dm_reliable_max"],
                converged=px["converged"], infilled=infilled, n_samples=cat.n_samples,
                dm_bin_edges=DM_EDGES, chunk_pixels=chunk, overwrite=True,
                n_stars=px["n_stars"], no_reliable_range=no_range) as f, tqdm(total=n, disable=not progress, desc="write",
                                                  unit="pixel") as bar:
            for a, b, mean, samples in _value_rows(cat, missing, values, chunk):
                f["mean"][a:b] = mean.astype(np.float16)[:, None, :]
                if cat.n_samples:
                    f["samples"][a:b] = samples.astype(np.float16)
                if collect:
                    kept.append((mean, samples))
                bar.update(b - a)
    finally:
        del values  # drop the memory map; it is rebuilt from the tile results on every run
        (work_dir / _VALUES_NAME).unlink(missing_ok=True)
    if fast_path is not None:
        from dustmaps_ext.decaps import repack

        repack(out_path, fast_path, progress=progress)
    n_no_range = int(np.count_nonzero(no_range & ~missing))
    if n_no_range:
        log.warning("%d of %d fitted pixels have too few effective stars for any reliable "
                    "distance range (DM_reliable_min/max NaN or empty in the file)",
                    n_no_range, int(np.count_nonzero(~missing)))
    summary = {"n_pixels": n, "n_blocks": len(cat.paths), "n_missing": int(missing.sum()),
               "n_infilled": int(infilled.sum()), "n_no_reliable_range": n_no_range,
               "n_converged": int(np.count_nonzero(px["converged"])), "n_tiles": n_tiles,
               "path": out_path}
    log.info("wrote %s: %d pixels, %d of %d missing infilled, %d tiles", out_path, n,
             summary["n_infilled"], summary["n_missing"], n_tiles)
    arrays = None
    if collect:
        arrays = {"healpix_index": px["healpix_index"].astype(np.int64),
                  "mean": np.concatenate([m for m, _ in kept]),
                  "samples": np.concatenate([s for _, s in kept]),
                  "converged": px["converged"], "infilled": infilled, "n_stars": px["n_stars"],
                  "dm_reliable_min": px["dm_reliable_min"],
                  "dm_reliable_max": px["dm_reliable_max"], "no_reliable_range": no_range}
    return summary, arrays


def assemble_release_from_blocks(block_paths: Sequence[str | os.PathLike], out_path, work_dir,
                                 cfg: DecapsBuildConfig, *, scheduler: str | None = None,
                                 n_workers: int | None = None, progress: bool = True,
                                 resume: bool = True, tile_size: int | None = 256,
                                 chunk_pixels: int = PUBLISHED_CHUNK_PIXELS, fast_path=None,
                                 overwrite: bool = False) -> dict:
    """Infill and write the release from per-block result files, streaming and tiled.

    Parameters
    ----------
    block_paths : sequence of path
        Block result files (``block_NNNNNN.npz`` of :func:`dustmaps_ext_build.runner.run_blocks`
        with :func:`.pipeline.process_block_file`), any order; each holds sorted pixels and
        no pixel may be in two files.
    out_path : path
        Release file (published layout, readable by dustmaps' ``DECaPSQuery``).
    work_dir : path
        Holds ``infill/`` (one result file per tile, for resume), the sources' index and the
        memory-mapped infill values (``4 (1 + n_samples) n_dist`` bytes per missing pixel).
    cfg : DecapsBuildConfig
        ``nside``, ``seed`` and the infill widths are used.
    scheduler, n_workers :
        Passed to :func:`dustmaps_ext_build.runner.run_blocks` (None: a local Dask cluster; a
        scheduler address; "synchronous", "threads" or "processes").
    progress : bool
        Progress bars (tiles, then pixels written).
    resume : bool
        Keep the tile results already in ``work_dir/infill`` (same blocks and settings).
    tile_size : int or None
        Side of a tile's core in cells of the ring image (None: one tile for everything,
        which equals the untiled infill exactly). A task holds its core plus a halo of
        :func:`.infill.tile_halo` cells on each side (70 with the paper's widths).
    chunk_pixels : int
        Pixels per HDF5 chunk, and per write (the release uses 200,842).
    fast_path : path, optional
        Also write the fast layout there (``dustmaps_ext.decaps.repack``).
    overwrite : bool
        Replace an existing ``out_path``.

    Returns
    -------
    dict
        ``n_pixels``, ``n_blocks`` (non-empty block files), ``n_missing`` (pixels not
        fitted), ``n_infilled``, ``n_converged``, ``n_no_reliable_range`` (fitted pixels
        whose stars are too few for any reliable distance range: their
        ``DM_reliable_min``/``DM_reliable_max`` are NaN or empty, whatever ``converged``
        says), ``n_tiles`` and ``path``. The release's
        ``pixel_info`` also holds ``n_stars`` (uint32) and ``no_reliable_range`` (uint8:
        1 for every pixel, fitted or infilled, whose stars give no reliable distance
        range), which readers ignore.

    Raises
    ------
    FileExistsError
        ``out_path`` exists and ``overwrite`` is False.
    FileNotFoundError
        A block file does not exist.
    ValueError
        Blocks with overlapping pixels, unsorted pixels, or inconsistent shapes.
    """
    summary, _ = _assemble(block_paths, out_path, work_dir, cfg, scheduler=scheduler,
                           n_workers=n_workers, progress=progress, resume=resume,
                           tile_size=tile_size, chunk_pixels=chunk_pixels, fast_path=fast_path,
                           overwrite=overwrite, collect=False)
    return summary


def assemble_release_in_memory(blocks: dict, out_path, cfg: DecapsBuildConfig, *,
                               fast_path=None, overwrite: bool = False,
                               progress: bool = True) -> dict:
    """Stage 3 for concatenated block results in memory (small maps), returning the arrays.

    The dict is sorted by pixel, saved as a single block file in a temporary folder beside
    ``out_path`` and assembled by the code of :func:`assemble_release_from_blocks` with one
    tile (so the infill is the untiled :func:`.infill.infill_maps`) on the synchronous
    scheduler. This is what :func:`.pipeline.assemble_release` does.

    Returns
    -------
    dict
        ``healpix_index``, ``mean`` (float32, (n, n_dist)), ``samples``, ``converged``,
        ``infilled``, ``n_stars``, ``dm_reliable_min``, ``dm_reliable_max`` and
        ``no_reliable_range``.
    """
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass overwrite=True to replace it")
    order = np.argsort(blocks["healpix_index"], kind="stable")
    hp_idx = np.asarray(blocks["healpix_index"])[order]
    if np.any(np.diff(hp_idx.astype(np.int64)) == 0):
        raise ValueError("a pixel appears in more than one block")
    with tempfile.TemporaryDirectory(prefix=f".{out_path.name}.", dir=out_path.parent) as tmp:
        tmp = Path(tmp)
        src = save_block(tmp, 0, {k: np.asarray(blocks[k])[order] for k in SOURCE_KEYS})
        _, arrays = _assemble([src], out_path, tmp / "work", cfg, scheduler="synchronous",
                              n_workers=None, progress=progress, resume=False, tile_size=None,
                              chunk_pixels=PUBLISHED_CHUNK_PIXELS, fast_path=fast_path,
                              overwrite=overwrite, collect=True)
    return arrays
