"""Stage 1 of the DECaPS build at scale: cut the stars and sort them into blocks, shard by shard.

The catalogue comes as input *shards* (files written by
:meth:`.inputs.StarPosteriors.save`). :func:`partition_shard` reads one shard, applies the
§4.1.2 smoothing and §4.2.1 cuts (:func:`.filters.filter_stars`), finds for every kept star
the blocks whose pixels it may weight (:func:`assign_blocks`), and writes one *fragment* per
block it touches, ``star_dir/stars_{block:06d}_{shard:06d}.npz``, atomically (temporary
name, then ``os.replace``). :func:`partition_shards` runs it over all shards with the
project's Dask runner (``dustmaps_ext_build.runner.run_blocks``, the shard index as the block id),
so stage 1 runs in parallel, shows progress and resumes after a kill. A block's stars are
its fragments concatenated in shard order (:func:`load_block_stars`).

The star -> blocks assignment is exact but conservative: every block holding a map pixel
whose centre lies within the weighting radius of a star (the criterion of
:func:`.pixelize.assign_stars_to_pixels`) is returned, plus a few blocks that only come
close. When the radius is well below a block's size the candidates are the star's own block
and its neighbours, and a neighbour is kept unless the star is provably farther than the
radius from it (distances to finely sampled boundary points, less half their spacing).
Stars in blocks where that shortcut cannot be proven safe fall back to
``healpy.query_disc(..., inclusive=True)``.

Fragments are written next to each other on a file system shared by the workers (as the
per-block star files of stage 2 always were). Shards should be spatially coherent (e.g.
sorted by HEALPix index): the number of fragments is the sum over shards of the blocks each
one touches.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import healpy as hp
import numba
import numpy as np

from dustmaps_ext.files import atomic_output
from dustmaps_ext.healpix import check_nside, lb_to_unit_vectors

from . import filters, pixelize
from .inputs import REQUIRED_FIELDS, StarPosteriors

if TYPE_CHECKING:  # pragma: no cover
    from .config import DecapsBuildConfig

__all__ = ["check_footprint", "check_shards", "weighting_radius_rad", "assign_blocks", "shard_digest", "fragment_path",
           "block_star_files", "load_block_stars", "resolve_shards", "partition_stars",
           "partition_shard", "partition_shards", "combine_digests", "clear_star_dir"]

PathLike = str | os.PathLike  # type alias

log = logging.getLogger(__name__)

#: Absolute slack (rad) added to every "may be within the radius" test against rounding.
_EPS_RAD = 1e-9
#: Boundary points per edge of a block: a coarse pass for all candidates, a fine one for
#: the pairs the coarse pass cannot decide.
_STEP_COARSE = 8
_STEP_FINE = 64
_NONE = np.iinfo(np.int64).max
_FIELDS = tuple(f.name for f in fields(StarPosteriors))


def weighting_radius_rad(cfg: "DecapsBuildConfig") -> float:
    """Truncation radius (rad) of the star weights: ``truncate_fwhm * fwhm_pixels`` pixels."""
    return cfg.truncate_fwhm * cfg.fwhm_pixels * pixelize.pixel_size_rad(cfg.nside)


# --------------------------------------------------------------------------- geometry
def _chord(angle):
    """Chord length of an angle (rad), for comparisons on unit vectors."""
    return 2.0 * np.sin(0.5 * np.minimum(np.asarray(angle, np.float64), math.pi))


def _block_tables(nside_block: int, blocks: np.ndarray, step: int):
    """Boundary points of blocks and a bound on their spacing.

    Returns ``(points, half_gap, centre, cap)``: points (n, 4 step, 3) on each block's
    boundary, ``half_gap`` (n) an upper bound (rad) on the distance from any boundary point
    to the nearest sample, the block centres (n, 3) and ``cap`` (n), the radius (rad) of a
    cap about the centre that holds the block.
    """
    pts = hp.boundaries(nside_block, blocks, step=step, nest=True)  # (n, 3, 4 step)
    pts = np.ascontiguousarray(np.moveaxis(pts.reshape(-1, 3, 4 * step), 1, 2))
    gaps = np.linalg.norm(pts - np.roll(pts, -1, axis=1), axis=2).max(axis=1)
    # a point on an edge is within half the arc between its two samples of one of them; the
    # arc exceeds the chord by a relative ~(gap * curvature)^2 << 1 %
    half_gap = 1.01 * np.arcsin(np.minimum(0.5 * gaps, 1.0))
    centre = np.stack(hp.pix2vec(nside_block, blocks, nest=True), axis=-1).reshape(-1, 3)
    d = np.linalg.norm(pts - centre[:, None, :], axis=2).max(axis=1)
    cap = 2.0 * np.arcsin(np.minimum(0.5 * d, 1.0)) + half_gap
    return pts, half_gap, centre, cap


def _clearance(nside_block: int, own: np.ndarray, batch: int = 2048) -> np.ndarray:
    """Lower bound (rad) on the distance from each block to the blocks two steps away.

    A disc about a point of block ``own`` whose radius is below this bound meets only
    ``own`` and its neighbours: to reach a farther block a (connected) disc must cross one
    of the blocks touching the neighbours' union, i.e. a neighbour of a neighbour. The bound
    is the distance between block centres less the radii of caps that hold the blocks.
    """
    if own.size > batch:
        return np.concatenate([_clearance(nside_block, own[a:a + batch], batch)
                               for a in range(0, own.size, batch)])
    ring1 = hp.get_all_neighbours(nside_block, own, nest=True).T  # (u, 8), -1 = none
    ring2 = hp.get_all_neighbours(nside_block, np.where(ring1 < 0, 0, ring1).ravel(),
                                  nest=True).T.reshape(own.size, 64)
    ring2 = np.where(np.repeat(ring1 < 0, 8, axis=1), -1, ring2)
    near = np.concatenate([own[:, None], ring1], axis=1)
    ring2 = np.where((ring2[:, :, None] == near[:, None, :]).any(axis=2), -1, ring2)
    table = np.unique(np.concatenate([own, ring2[ring2 >= 0]]))
    pts, half_gap, centre, cap = _block_tables(nside_block, table, _STEP_COARSE)
    io = np.searchsorted(table, own)
    i2 = np.searchsorted(table, np.where(ring2 < 0, table[0], ring2))
    dot = np.einsum("uk,ujk->uj", centre[io], centre[i2])
    sep = np.arccos(np.clip(dot, -1.0, 1.0))
    bound = sep - cap[io][:, None] - cap[i2]  # cheap: caps about the centres
    # where the caps overlap: boundary samples, less both sampling margins
    u, j = np.nonzero((bound <= 0.5 * sep) & (ring2 >= 0))
    if u.size:
        chord = _min_pair_chord(pts, io[u], i2[u, j])
        fine = 2.0 * np.arcsin(np.minimum(0.5 * chord, 1.0)) - half_gap[io[u]] \
            - half_gap[i2[u, j]]
        bound[u, j] = np.maximum(bound[u, j], fine)
    bound = np.where(ring2 < 0, np.inf, bound)
    return bound.min(axis=1)


@numba.njit(cache=True, nogil=True)
def _min_pair_chord(pts, ia, ib):
    """Smallest distance between the boundary samples of blocks ``ia[k]`` and ``ib[k]``."""
    out = np.empty(ia.size)
    m = pts.shape[1]
    for k in range(ia.size):
        best = np.inf
        for p in range(m):
            ax, ay, az = pts[ia[k], p, 0], pts[ia[k], p, 1], pts[ia[k], p, 2]
            for q in range(m):
                dx = ax - pts[ib[k], q, 0]
                dy = ay - pts[ib[k], q, 1]
                dz = az - pts[ib[k], q, 2]
                d2 = dx * dx + dy * dy + dz * dz
                if d2 < best:
                    best = d2
        out[k] = math.sqrt(best)
    return out


@numba.njit(cache=True, nogil=True)
def _classify_pairs(vec, cand, pts, thr_in, thr_out, centre, thr_cap):
    """0: the block is farther than the radius; 1: it meets the disc; 2: undecided.

    ``thr_in`` is the squared chord of the radius, ``thr_out[j]`` that of the radius plus
    block ``j``'s sampling margin and ``thr_cap[j]`` that of the radius plus its cap radius.
    """
    n, m = cand.shape
    out = np.zeros((n, m), np.int8)
    for i in range(n):
        vx, vy, vz = vec[i, 0], vec[i, 1], vec[i, 2]
        for k in range(m):
            j = cand[i, k]
            if j < 0:
                continue
            dx = vx - centre[j, 0]
            dy = vy - centre[j, 1]
            dz = vz - centre[j, 2]
            if dx * dx + dy * dy + dz * dz > thr_cap[j]:
                continue
            best = np.inf
            for q in range(pts.shape[1]):
                dx = vx - pts[j, q, 0]
                dy = vy - pts[j, q, 1]
                dz = vz - pts[j, q, 2]
                d2 = dx * dx + dy * dy + dz * dz
                if d2 < best:
                    best = d2
                    if best <= thr_in:
                        break
            if best <= thr_in:
                out[i, k] = 1
            elif best <= thr_out[j]:
                out[i, k] = 2
    return out


def _classify(nside_block, vec, cand, radius, step):
    """:func:`_classify_pairs` for candidate blocks ``cand`` (n, m; -1 = none)."""
    table = np.unique(cand[cand >= 0])
    idx = np.where(cand >= 0, np.searchsorted(table, cand), -1)
    pts, half_gap, centre, cap = _block_tables(nside_block, table, step)
    r = radius + _EPS_RAD
    return _classify_pairs(vec, idx, pts, float(_chord(r) ** 2), _chord(r + half_gap) ** 2,
                           centre, _chord(r + cap) ** 2)


def _neighbour_blocks(vec, own, nside_block: int, radius: float) -> np.ndarray:
    """(n, 9) blocks of each star (own block and kept neighbours), ascending, padded with
    ``_NONE`` (which sorts last)."""
    cand = hp.get_all_neighbours(nside_block, own, nest=True).T.astype(np.int64)
    cls = _classify(nside_block, vec, cand, radius, _STEP_COARSE)
    und = np.nonzero(cls == 2)
    if und[0].size:
        fine = _classify(nside_block, vec[und[0]], cand[und][:, None], radius,
                         _STEP_FINE)[:, 0]
        cls[und] = np.where(fine == 0, 0, 1)  # still undecided: keep (conservative)
    out = np.concatenate([own[:, None], np.where(cls > 0, cand, _NONE)], axis=1)
    out.sort(axis=1)
    out[:, 1:][out[:, 1:] == out[:, :-1]] = _NONE  # a neighbour listed twice (tiny nside)
    out.sort(axis=1)
    return out


def assign_blocks(l_deg: np.ndarray, b_deg: np.ndarray, nside_block: int, radius_rad: float, *,
                  chunk_stars: int = 1 << 18, chunk_blocks: int = 4096
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Blocks whose map pixels each star may weight (exact but conservative, vectorised).

    Parameters
    ----------
    l_deg, b_deg : array_like, shape (n_star,)
        Galactic coordinates of the stars (deg).
    nside_block : int
        A block is one NESTED pixel at this nside.
    radius_rad : float
        Weighting radius (:func:`weighting_radius_rad`).
    chunk_stars, chunk_blocks : int
        Stars, and distinct own blocks, handled at a time (bound the memory).

    Returns
    -------
    star, block : numpy.ndarray of int64
        Distinct (star, block) pairs, sorted by star then block. Every block holding a
        point within ``radius_rad`` of a star -- hence every block holding a map pixel
        whose centre is within it -- is listed; blocks that come within about 1/128 of a
        block's side beyond the radius may be listed too (and all the blocks healpy's
        inclusive ``query_disc`` returns for stars in the rare blocks where the
        neighbour shortcut is not provably safe).
    """
    nside_block = check_nside(nside_block, "nside_block")
    l_deg = np.asarray(l_deg, np.float64).ravel()
    b_deg = np.asarray(b_deg, np.float64).ravel()
    if l_deg.shape != b_deg.shape:
        raise ValueError("l_deg and b_deg must have the same shape")
    if not (radius_rad >= 0 and math.isfinite(radius_rad)):
        raise ValueError("radius_rad must be finite and non-negative")
    n = l_deg.size
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    vec = lb_to_unit_vectors(l_deg, b_deg).reshape(-1, 3)
    own = hp.vec2pix(nside_block, vec[:, 0], vec[:, 1], vec[:, 2], nest=True).astype(np.int64)
    order = np.argsort(own, kind="stable")
    so = own[order]
    block_rank = np.concatenate([[0], np.cumsum(so[1:] != so[:-1])])
    cid = np.maximum(np.arange(n) // int(chunk_stars), block_rank // int(chunk_blocks))
    bounds = np.concatenate([[0], np.flatnonzero(cid[1:] != cid[:-1]) + 1, [n]])
    counts = np.zeros(n, np.int64)
    rows, fallback = [], {}
    for a, e in zip(bounds[:-1], bounds[1:]):
        idx = order[a:e]
        uo, inv = np.unique(so[a:e], return_inverse=True)
        safe = (_clearance(nside_block, uo) > radius_rad + _EPS_RAD)[inv]
        s = idx[safe]
        if s.size:
            tab = _neighbour_blocks(vec[s], own[s], nside_block, float(radius_rad))
            counts[s] = np.count_nonzero(tab != _NONE, axis=1)
            rows.append((s, tab))
        for i in idx[~safe]:  # healpy's conservative disc query
            hit = np.unique(np.append(hp.query_disc(
                nside_block, vec[i], radius_rad + _EPS_RAD, inclusive=True, nest=True), own[i]))
            fallback[int(i)] = hit
            counts[i] = hit.size
    if fallback:
        log.debug("%d of %d stars assigned by healpy.query_disc", len(fallback), n)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    block = np.empty(indptr[-1], np.int64)
    for s, tab in rows:
        valid = tab != _NONE
        pos = indptr[s][:, None] + np.arange(tab.shape[1])[None, :]
        block[pos[valid]] = tab[valid]
    for i, hit in fallback.items():
        block[indptr[i]:indptr[i + 1]] = hit
    return np.repeat(np.arange(n, dtype=np.int64), counts), block


# --------------------------------------------------------------------------- files
def shard_digest(stars: StarPosteriors) -> np.ndarray:
    """SHA-256 (32 uint8) of every array of a catalogue (dtype, shape and bytes)."""
    h = hashlib.sha256()
    for name in _FIELDS:
        arr = np.ascontiguousarray(getattr(stars, name))
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return np.frombuffer(h.digest(), np.uint8).copy()


def combine_digests(digests: np.ndarray) -> str:
    """Hex SHA-256 of per-shard digests (in shard order)."""
    d = np.asarray(digests, np.uint8).reshape(-1, 32)
    h = hashlib.sha256(f"{d.shape[0]} shards;".encode())
    h.update(d.tobytes())
    return h.hexdigest()


def fragment_path(star_dir: PathLike, block: int, shard: int | None) -> Path:
    """``stars_{block:06d}_{shard:06d}.npz``, or ``stars_{block:06d}.npz`` for ``shard=None``
    (a whole catalogue partitioned at once, as :func:`.pipeline.prepare_inputs` does)."""
    name = f"stars_{int(block):06d}" + ("" if shard is None else f"_{int(shard):06d}")
    return Path(star_dir) / f"{name}.npz"


def block_star_files(star_dir: PathLike, block: int) -> list[Path]:
    """Star files of a block in ``star_dir``, in shard order.

    Raises
    ------
    FileNotFoundError
        If there are none.
    ValueError
        If both a whole-catalogue file and shard fragments exist (a folder reused across
        runs of different kinds).
    """
    star_dir = Path(star_dir)
    whole = fragment_path(star_dir, block, None)
    frags = sorted(star_dir.glob(f"stars_{int(block):06d}_*.npz"))
    if whole.exists() and frags:
        raise ValueError(f"{star_dir} holds both {whole.name} and shard fragments of block "
                         f"{int(block)}; clear the folder and partition again")
    files = [whole] if whole.exists() else frags
    if not files:
        raise FileNotFoundError(f"no star file of block {int(block)} in {star_dir}")
    return files


def load_block_stars(star_dir: PathLike, block: int) -> StarPosteriors:
    """The stars of one block: its star files concatenated in shard order."""
    parts = [StarPosteriors.load(p) for p in block_star_files(star_dir, block)]
    return parts[0] if len(parts) == 1 else StarPosteriors.concatenate(parts)


def _write_atomic(stars: StarPosteriors, path: Path) -> None:
    with atomic_output(path, suffix=".npz") as tmp:
        stars.save(tmp)


def clear_star_dir(star_dir: PathLike) -> None:
    """Remove the star files (and leftover temporary files) of earlier partitions."""
    star_dir = Path(star_dir)
    if star_dir.is_dir():
        for p in list(star_dir.glob("stars_*.npz")) + list(star_dir.glob(".stars_*.tmp.npz")):
            p.unlink()


def resolve_shards(stars: PathLike | Sequence[PathLike]) -> list[Path]:
    """Shard files from a path, a list of paths or a folder of ``*.npz`` files.

    Checks (cheaply, without reading the data) that each file exists and holds the fields
    of :class:`.inputs.StarPosteriors`.

    Raises
    ------
    FileNotFoundError
        A missing file, or a folder without ``.npz`` files.
    ValueError
        A file that is not a ``StarPosteriors.save`` archive, or a shard listed twice.
    """
    items = [stars] if isinstance(stars, (str, os.PathLike)) else list(stars)
    paths: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            found = sorted(p.glob("*.npz"))
            if not found:
                raise FileNotFoundError(f"no .npz shard files in {p}")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"star file not found: {p}")
    if not paths:
        raise ValueError("no star shards given")
    if len({p.resolve() for p in paths}) != len(paths):
        raise ValueError("a star shard is listed more than once")
    for p in paths:
        _check_fields(p)
    return paths


def _check_fields(path: Path) -> None:
    try:
        with np.load(path, allow_pickle=False) as f:
            names = {n[:-4] if n.endswith(".npy") else n for n in f.files}
    except Exception as exc:  # zipfile, OSError, ValueError: all mean "not an archive"
        raise ValueError(f"{path}: not a .npz star shard ({exc})") from exc
    missing = [n for n in REQUIRED_FIELDS if n not in names]
    if missing:
        raise ValueError(f"{path}: not a StarPosteriors shard; missing fields "
                         f"{', '.join(missing)}")


def _load_shard(path: Path) -> StarPosteriors:
    _check_fields(path)
    try:
        return StarPosteriors.load(path)
    except ValueError as exc:
        raise ValueError(f"{path}: invalid star shard ({exc})") from exc


# --------------------------------------------------------------------------- checks
def _near_footprint(l_deg: np.ndarray, b_deg: np.ndarray, cfg: "DecapsBuildConfig") -> np.ndarray:
    """Whether each star lies in the footprint box grown by the weighting radius."""
    margin = math.degrees(weighting_radius_rad(cfg))
    (l_lo, l_hi), (b_lo, b_hi) = cfg.l_range_deg, cfg.b_range_deg
    cos_b = np.cos(np.radians(np.clip(np.abs(b_deg) + margin, 0.0, 89.0)))
    dl = (l_deg - (l_lo - margin / cos_b)) % 360.0
    return (dl <= (l_hi - l_lo) + 2 * margin / cos_b) & (b_deg >= b_lo - margin) & \
        (b_deg <= b_hi + margin)


def _footprint_verdict(n_near: int, n: int, span, cfg: "DecapsBuildConfig", source: str) -> int:
    (l_lo, l_hi), (b_lo, b_hi) = cfg.l_range_deg, cfg.b_range_deg
    if n and n_near == 0:
        raise ValueError(
            f"none of the {n} stars of {source} lies in the footprint l in [{l_lo:g}, "
            f"{l_hi:g}] deg, b in [{b_lo:g}, {b_hi:g}] deg (stars span l {span[0]:.4g}.."
            f"{span[1]:.4g}, b {span[2]:.4g}..{span[3]:.4g}); change --l-range/--b-range "
            "(l_range_deg/b_range_deg) to cover them")
    if n_near < n:
        log.info("%s: %d of %d stars lie outside the footprint and are not used", source,
                 n - n_near, n)
    return n_near


def check_footprint(l_deg, b_deg, cfg: "DecapsBuildConfig", source: str = "the input") -> int:
    """Number of stars that can weight a footprint pixel; raise if there are none.

    A star counts when it lies in the footprint box grown by the weighting radius.

    Raises
    ------
    ValueError
        No star lies in (or within the weighting radius of) the footprint: the message
        names the ``--l-range``/``--b-range`` options (``l_range_deg``/``b_range_deg``).
    """
    l_deg = np.asarray(l_deg, np.float64)
    b_deg = np.asarray(b_deg, np.float64)
    n_near = int(np.count_nonzero(_near_footprint(l_deg, b_deg, cfg)))
    span = ((l_deg.min(), l_deg.max(), b_deg.min(), b_deg.max()) if l_deg.size
            else (np.nan,) * 4)
    return _footprint_verdict(n_near, l_deg.size, span, cfg, source)


def check_shards(paths: Sequence[PathLike], cfg: "DecapsBuildConfig") -> int:
    """Check every shard's positions and offsets before any work (cheap: the posterior
    values are not read, one shard in memory at a time) and that some star falls in the
    footprint.

    Returns the number of stars that can weight a footprint pixel.

    Raises
    ------
    ValueError
        A shard with a NaN or infinite ``l``/``b`` or a negative offset (the file and the
        first bad star are named), or no star near the footprint (:func:`check_footprint`).
    """
    n = n_near = 0
    span = np.array([np.inf, -np.inf, np.inf, -np.inf])
    for p in paths:
        _check_fields(Path(p))
        with np.load(p, allow_pickle=False) as f:
            l_deg = np.asarray(f["l"], np.float64)
            b_deg = np.asarray(f["b"], np.float64)
            off = f["offsets"]
        bad = ~(np.isfinite(l_deg) & np.isfinite(b_deg))
        if bad.any():
            raise ValueError(f"{p}: {int(bad.sum())} stars have a NaN or infinite l or b "
                             f"(first: star {int(np.flatnonzero(bad)[0])}); remove them")
        if np.any(off < 0):
            raise ValueError(f"{p}: negative posterior offsets (first: star "
                             f"{int(np.flatnonzero(off < 0)[0])}); the file is corrupt")
        n += l_deg.size
        n_near += int(np.count_nonzero(_near_footprint(l_deg, b_deg, cfg)))
        if l_deg.size:
            span = np.array([min(span[0], l_deg.min()), max(span[1], l_deg.max()),
                             min(span[2], b_deg.min()), max(span[3], b_deg.max())])
    source = str(paths[0]) if len(paths) == 1 else f"{len(paths)} shards"
    return _footprint_verdict(n_near, n, span, cfg, source)


# --------------------------------------------------------------------------- partition
def partition_stars(stars: StarPosteriors, star_dir: PathLike, cfg: "DecapsBuildConfig",
                    max_ebv: np.ndarray | None = None, *, shard: int | None = None,
                    smooth: bool = True) -> dict:
    """Cut one catalogue (or shard) and write its stars block by block.

    Parameters
    ----------
    stars : StarPosteriors
    star_dir : path
        Folder of the block files (created if needed).
    cfg : DecapsBuildConfig
    max_ebv : array_like, shape (120,), optional
        Maximum physical reddening curve (:func:`.filters.max_reddening_curve`).
    shard : int, optional
        Shard index: the files are the fragments :func:`fragment_path` names.
    smooth : bool
        Smooth the posteriors (§4.1.2) before the cuts.

    Returns
    -------
    dict
        ``blocks`` (sorted block ids written), ``n_in``, ``n_kept``, ``masks`` (the cut
        masks of :func:`.filters.quality_mask` on the input stars) and ``digest``
        (:func:`shard_digest` of the input).
    """
    star_dir = Path(star_dir)
    star_dir.mkdir(parents=True, exist_ok=True)
    digest = shard_digest(stars)
    kept, masks = filters.filter_stars(stars, max_ebv, smooth=smooth)
    star, block = assign_blocks(kept.l, kept.b, cfg.nside_block, weighting_radius_rad(cfg))
    order = np.argsort(block, kind="stable")  # stars stay sorted within a block
    star, block = star[order], block[order]
    blocks, start = np.unique(block, return_index=True)
    end = np.append(start[1:], block.size)
    for bid, a, e in zip(blocks, start, end):  # one gather per block: O(pairs) in all
        _write_atomic(kept.subset(star[a:e]), fragment_path(star_dir, bid, shard))
    log.info("shard %s: %d of %d stars kept, %d blocks", "-" if shard is None else shard,
             kept.n_star, stars.n_star, blocks.size)
    return {"blocks": blocks, "n_in": stars.n_star, "n_kept": kept.n_star, "masks": masks,
            "digest": digest}


def partition_shard(shard: int, *, shard_paths: Sequence[str], star_dir: str,
                    config: "DecapsBuildConfig", max_ebv: np.ndarray | None = None,
                    smooth: bool = True) -> dict[str, np.ndarray]:
    """Worker entry point: partition shard ``shard_paths[shard]`` into ``star_dir``.

    Top-level and picklable through ``functools.partial`` for the Dask runner.

    Returns
    -------
    dict of numpy.ndarray
        ``blocks`` (touched block ids), ``n_in``, ``n_kept`` and ``n_cut_{name}`` (stars
        failing each §4.2.1 cut; a star may fail several) as 1-element arrays, and
        ``digest`` (1, 32), the shard's content digest.
    """
    stars = _load_shard(Path(shard_paths[int(shard)]))
    res = partition_stars(stars, star_dir, config, max_ebv, shard=int(shard), smooth=smooth)
    out = {"blocks": res["blocks"].astype(np.int64),
           "n_in": np.array([res["n_in"]], np.int64),
           "n_kept": np.array([res["n_kept"]], np.int64),
           "digest": res["digest"][None, :]}
    for name, m in res["masks"].items():
        if name != "keep":
            out[f"n_cut_{name}"] = np.array([np.count_nonzero(~m)], np.int64)
    return out


def _job_identity(paths: Sequence[Path], cfg, max_ebv, smooth: bool) -> str:
    """Cheap identity of a partition job: settings and each shard's path, size and mtime."""
    h = hashlib.sha256(cfg.fingerprint().encode())
    h.update(b"max_ebv:" + (b"none" if max_ebv is None
                             else np.asarray(max_ebv, np.float64).tobytes()))
    h.update(f"smooth:{bool(smooth)};".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _previous_run(out_dir: Path, identity: str) -> str:
    """"none" (no manifest), "same" job or "other" job (or an unreadable manifest)."""
    from dustmaps_ext_build.runner import MANIFEST_NAME

    manifest = out_dir / MANIFEST_NAME
    if not manifest.exists():
        return "none"
    try:
        old = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return "other"  # run_blocks explains
    return "same" if old.get("fingerprint") == identity else "other"


def _forget_incomplete_shards(out_dir: Path, star_dir: Path, n_shards: int) -> None:
    """Drop the result of every shard with a missing fragment, so that it runs again."""
    from dustmaps_ext_build.runner import block_path

    present = {e.name for e in os.scandir(star_dir)} if star_dir.is_dir() else set()
    for shard in range(n_shards):
        done = block_path(out_dir, shard)
        if not done.exists():
            continue
        with np.load(done, allow_pickle=False) as f:
            blocks = f["blocks"]
        if any(fragment_path(star_dir, b, shard).name not in present for b in blocks):
            log.warning("shard %d: fragments missing in %s; partitioning it again", shard,
                        star_dir)
            done.unlink()


def partition_shards(shards: PathLike | Sequence[PathLike], star_dir: PathLike,
                     cfg: "DecapsBuildConfig", max_ebv: np.ndarray | None = None, *,
                     out_dir: PathLike, smooth: bool = True, scheduler: str | None = None,
                     n_workers: int | None = None, progress: bool = True,
                     resume: bool = True) -> dict:
    """Partition every shard with the Dask runner (stage 1 of :func:`.pipeline.build_decaps`).

    Parameters
    ----------
    shards : path or sequence of paths
        Shard files or folders of them (:func:`resolve_shards`).
    star_dir : path
        Folder of the fragments.
    cfg : DecapsBuildConfig
    max_ebv : array_like, optional
        Maximum physical reddening curve for the §4.2.1 cut.
    out_dir : path
        The runner's folder of per-shard results and manifest (e.g. ``work_dir/partition``).
    smooth : bool
        Smooth the posteriors (§4.1.2).
    scheduler, n_workers, progress, resume :
        As for ``dustmaps_ext_build.runner.run_blocks``. Starting afresh (no manifest in
        ``out_dir``, or ``resume=False``) first clears the star files in ``star_dir``;
        resuming removes leftover temporary files and runs again every shard whose
        result exists but one of whose fragments does not. The job's identity is the
        settings and each shard's path, size and modification time (nothing is read):
        changed shards need ``resume=False``.

    Returns
    -------
    dict
        ``blocks`` (sorted union of touched blocks), ``n_shards``, ``n_in``, ``n_kept``,
        ``n_cut_{name}`` totals, ``digests`` (n_shards, 32) and ``digest`` (hex, their
        :func:`combine_digests`).
    """
    from dustmaps_ext_build.runner import check_block_files, load_blocks, run_blocks

    paths = [p.resolve() for p in resolve_shards(shards)]
    out_dir = Path(out_dir).resolve()
    star_dir = Path(star_dir).resolve()
    identity = _job_identity(paths, cfg, max_ebv, smooth)
    state = _previous_run(out_dir, identity) if resume else "none"
    if state == "none":
        clear_star_dir(star_dir)
    elif state == "same":
        for p in star_dir.glob(".stars_*.tmp.npz"):  # left by a killed run
            p.unlink()
        check_block_files(out_dir, range(len(paths)), identity, "shard")  # before reading them
        _forget_incomplete_shards(out_dir, star_dir, len(paths))
    # state "other": run_blocks refuses to mix jobs, before anything is touched
    star_dir.mkdir(parents=True, exist_ok=True)
    fn = functools.partial(partition_shard, shard_paths=[str(p) for p in paths],
                           star_dir=str(star_dir), config=cfg, max_ebv=max_ebv, smooth=smooth)
    done = run_blocks(range(len(paths)), fn, out_dir, scheduler=scheduler,
                      n_workers=n_workers, progress=progress, resume=resume,
                      fingerprint=identity, task_name="shard")
    res = load_blocks(done)
    out = {"blocks": np.unique(res["blocks"]).astype(np.int64), "n_shards": len(paths),
           "digests": res["digest"], "digest": combine_digests(res["digest"])}
    for k, v in res.items():
        if k.startswith("n_"):
            out[k] = int(v.sum())
    log.info("partitioned %d shards: %d of %d stars kept, %d blocks", len(paths),
             out["n_kept"], out["n_in"], out["blocks"].size)
    return out
