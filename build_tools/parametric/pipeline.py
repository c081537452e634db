"""The parametric build: star catalog -> adaptive sightlines -> fits (Dask blocks) -> table.

:func:`build_parametric_map` runs the whole pipeline of Wang et al. (2025, §3):

1. :func:`prepare_build` sorts the stars by HEALPix (NESTED, ``nside_max``), computes
   their eq. 10-13 weights, finds the adaptive sightlines and stores all of it in the
   work folder (memory-mappable ``.npy`` files that every worker reads);
2. :func:`process_block` fits every sightline of one HEALPix block (NESTED pixel at
   ``block_nside``): its stars are those within ``neighbour_factor`` resolutions of its
   centre, weighted by eq. 14; blocks run on Dask through :func:`dustmaps_ext_build.runner.run_blocks`,
   which saves each block's results so that a killed build resumes;
3. :func:`assemble_table` spreads the sightlines over their nside-1024 RING children and
   writes the released table with :func:`dustmaps_ext_build.writers.parametric.write_parametric_table`.

Rows of the table not covered by a fitted sightline (outside the catalog's sky, or
sightlines with fewer than ``min_fit_stars`` stars) hold a zero-dust sightline: zero
density and cloud columns with finite shape parameters (so both readers return
E(B-V) = 0 and density 0 there, not NaN), ``max_distance = 0`` (every distance is beyond
the reliable range) and NaN residual sigmas (the readers return NaN uncertainty).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import healpy as hp
import numpy as np
from threadpoolctl import threadpool_limits

from dustmaps_ext.files import atomic_output
from dustmaps_ext.healpix import check_nside, lb_to_unit_vectors

from ..runner import load_blocks, run_blocks
from ..writers.parametric import (PARAMETRIC_COLUMNS, RELEASE_NROWS, RELEASE_NSIDE,
                                  write_parametric_table)
from .catalog import StarCatalog, read_catalog
from .fit import FitConfig, fit_sightline
from .model import N_PARAMS, PARAM_NAMES
from .sightlines import (adaptive_sightlines, decentration_weight, resolution_deg,
                         sightline_centres, stars_nested_index, uncertainty_weights)

__all__ = ["ParametricBuildConfig", "prepare_build", "plan_build", "process_block",
           "assemble_table", "build_parametric_map", "fill_row_values", "neighbour_stars",
           "unit_vectors"]

logger = logging.getLogger(__name__)

_PREPARED_VERSION = 2


@dataclass(frozen=True)
class ParametricBuildConfig:
    """Settings of the parametric build (defaults: Wang et al. 2025, §3).

    Attributes
    ----------
    threshold : int
        Minimum stars per adaptive sightline (20).
    nside_max, nside_min : int
        Finest and coarsest sightline resolutions (1024, 64).
    neighbour_factor : float
        Stars within this many resolutions of a sightline centre take part in its fit (3).
    alpha, beta : float
        Decentration weight shape (7.5, -5).
    min_decentration_weight : float
        Stars whose decentration weight is below this are left out of the fit (they
        lie beyond ~1.6 resolutions and carry < 0.1% of the centre weight each; for a
        uniform star density, together 0.09% of a sightline's total weight). Set 0 to keep every star within
        ``neighbour_factor`` resolutions, as the paper does, at ~3x the cost.
    min_fit_stars : int
        Sightlines with fewer stars (neighbours included) are not fitted; their rows get
        the zero-dust fill values.
    b_lim_min_deg : float
        ``|b_lim|`` is at least this (deg), so that ``h / sin|b_lim|`` stays finite for
        sightlines centred on the Galactic equator.
    block_nside : int
        HEALPix blocks (NESTED pixels at this nside) are the units of work and of resume.
    l_range, b_range : tuple of float, optional
        A region (deg): only the sightlines whose centre lies inside are fitted, and the
        rows of the table outside it are NaN (the readers answer NaN there). ``l_range``
        may wrap through 0 (``(350, 10)``); either may be left out (all longitudes, or all
        latitudes). Default: the whole sky.
    fit : FitConfig
        Settings of each sightline fit.
    """

    threshold: int = 20
    nside_max: int = RELEASE_NSIDE
    nside_min: int = 64
    neighbour_factor: float = 3.0
    alpha: float = 7.5
    beta: float = -5.0
    min_decentration_weight: float = 1e-3
    min_fit_stars: int = 10
    b_lim_min_deg: float = 0.1
    block_nside: int = 8
    l_range: tuple | None = None
    b_range: tuple | None = None
    fit: FitConfig = field(default_factory=FitConfig)

    def __post_init__(self):
        for name in ("nside_max", "nside_min", "block_nside"):
            check_nside(getattr(self, name), name)
        if not self.block_nside <= self.nside_min <= self.nside_max <= RELEASE_NSIDE:
            raise ValueError("need block_nside <= nside_min <= nside_max <= 1024")
        if self.threshold < 1 or self.min_fit_stars < 2:
            raise ValueError("threshold must be >= 1 and min_fit_stars >= 2")
        if self.neighbour_factor <= 0 or not 0 <= self.min_decentration_weight < 1:
            raise ValueError("neighbour_factor must be positive, min_decentration_weight in [0, 1)")
        if not 0 < self.b_lim_min_deg <= 90:
            raise ValueError("b_lim_min_deg must be in (0, 90]")
        for name, lo_hi in (("l_range", self.l_range), ("b_range", self.b_range)):
            if lo_hi is None:
                continue
            if len(lo_hi) != 2 or not all(math.isfinite(v) for v in lo_hi):
                raise ValueError(f"{name} must be two finite angles (deg), got {lo_hi!r}")
        if self.b_range is not None and not -90 <= self.b_range[0] < self.b_range[1] <= 90:
            raise ValueError(f"b_range must satisfy -90 <= min < max <= 90, got {self.b_range!r}")
        if self.l_range is not None and not (0 <= self.l_range[0] <= 360
                                             and 0 <= self.l_range[1] <= 360):
            raise ValueError(f"l_range must be two longitudes in [0, 360], got {self.l_range!r}")

    @property
    def whole_sky(self) -> bool:
        """True when no region is set."""
        return self.l_range is None and self.b_range is None

    def in_region(self, l_deg, b_deg) -> np.ndarray:
        """Whether directions (deg) lie inside the region (all True without one)."""
        l = np.mod(np.asarray(l_deg, dtype=np.float64), 360.0)
        b = np.asarray(b_deg, dtype=np.float64)
        inside = np.ones(np.broadcast(l, b).shape, dtype=bool)
        if self.b_range is not None:
            inside &= (b >= self.b_range[0]) & (b <= self.b_range[1])
        if self.l_range is not None:
            lo, hi = self.l_range
            inside &= ((l >= lo) & (l <= hi)) if lo <= hi else ((l >= lo) | (l <= hi))
        return inside

    def to_json(self) -> str:
        """A canonical JSON description (used in the job fingerprint)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _b_lim(b_deg, floor_deg):
    b = np.asarray(b_deg, dtype=np.float64)
    return np.where(b < 0, -1.0, 1.0) * np.maximum(np.abs(b), floor_deg)


#: Unit vectors (..., 3) of Galactic directions (deg); the package's one implementation.
unit_vectors = lb_to_unit_vectors


# --------------------------------------------------------------------------- prepare
_STAR_ARRAYS = ("ipix", "l", "b", "ebv", "distance", "w_unc", "distance_err")


def prepare_build(catalog: StarCatalog, work_dir: str | os.PathLike,
                  config: ParametricBuildConfig) -> tuple[list[int], str]:
    """Sort and weight the stars, find the sightlines, and store them in ``work_dir``.

    Returns
    -------
    block_ids : list of int
        HEALPix blocks (NESTED, ``config.block_nside``) holding at least one sightline.
    digest : str
        SHA-256 of the prepared stars and sightlines (identifies the job's input).
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if len(catalog) == 0:
        raise ValueError("the star catalog is empty")
    ipix = stars_nested_index(catalog.l, catalog.b, config.nside_max)
    order = np.argsort(ipix, kind="stable")
    stars = {
        "ipix": ipix[order],
        "l": catalog.l[order], "b": catalog.b[order], "ebv": catalog.ebv[order],
        "distance": catalog.distance[order],
        "w_unc": uncertainty_weights(catalog.ebv_err, catalog.distance, catalog.distance_err_lo,
                                     catalog.distance_err_hi)[order],
        # the paper's absolute distance error: the mean of the 68% interval's two halves
        "distance_err": (0.5 * (catalog.distance_err_lo + catalog.distance_err_hi))[order],
    }
    nside, spix, nstar = adaptive_sightlines(stars["ipix"], threshold=config.threshold,
                                             nside_max=config.nside_max,
                                             nside_min=config.nside_min)
    digest = hashlib.sha256(str(_PREPARED_VERSION).encode())
    for name in _STAR_ARRAYS:
        arr = np.ascontiguousarray(stars[name])
        digest.update(arr.tobytes())
        _save_npy(work / f"stars_{name}.npy", arr)
    # sightlines are sorted along the NESTED curve, hence by block too
    lev = np.round(np.log2(nside // config.block_nside)).astype(np.int64)
    blocks = spix >> (2 * lev)
    if not config.whole_sky:
        region_blocks = np.unique(blocks[config.in_region(*sightline_centres(nside, spix))])
        if region_blocks.size == 0:
            raise ValueError("no sightline of the catalog has its centre inside the region "
                             f"l_range={config.l_range}, b_range={config.b_range}")
    sl = {"nside": nside, "ipix": spix, "n_in_pixel": nstar, "block": blocks}
    for name, arr in sl.items():
        digest.update(arr.tobytes())
        _save_npy(work / f"sightlines_{name}.npy", arr)
    logger.info("%d stars, %d sightlines (%s), %d blocks at nside %d", len(catalog), nside.size,
                ", ".join(f"nside {n}: {c}" for n, c in zip(*np.unique(nside, return_counts=True))),
                np.unique(blocks).size, config.block_nside)
    work_blocks = np.unique(blocks) if config.whole_sky else region_blocks
    return [int(b) for b in work_blocks], digest.hexdigest()


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array(fh, arr, allow_pickle=False)


def _load(work: Path, prefix: str, names) -> dict:
    return {n: np.load(work / f"{prefix}_{n}.npy", mmap_mode="r") for n in names}


# --------------------------------------------------------------------------- one block
def fill_row_values(config: ParametricBuildConfig) -> dict[str, float]:
    """Column values of an uncovered row (zero dust; ``b_lim`` is set per row)."""
    values = {"bubble": config.fit.bubble_init, "h": config.fit.h_init, "diffuse_dust_rho": 0.0}
    for k in range(1, 5):
        values[f"distance_{k}"] = 0.0
        values[f"span_{k}"] = config.fit.span_bounds[0]
        values[f"Cum_EBV_{k}"] = 0.0
    values.update(sigma=np.nan, sigma_0_2=np.nan, sigma_1_4=np.nan, sigma_2_max=np.nan,
                  max_distance=0.0)
    return values


def outside_row_values() -> dict[str, float]:
    """Column values of a row outside the build's region: NaN (``b_lim`` is set per row)."""
    return {c: np.nan for c in PARAMETRIC_COLUMNS if c != "b_lim"}


def process_block(block_id: int, work_dir: str, config: ParametricBuildConfig) -> dict:
    """Fit every sightline of one block (a top-level, picklable function for the runner).

    Returns
    -------
    dict of numpy.ndarray
        One entry per sightline of the block: ``nside``, ``ipix`` (NESTED), ``b_lim``,
        ``params`` (n, 15), ``sigma``, ``sigma_0_2``, ``sigma_1_4``, ``sigma_2_max``,
        ``max_distance``, ``n_in_pixel``, ``n_stars`` (fitted, neighbours included),
        ``n_clipped``, ``in_region`` (False: the centre lies outside the build's region,
        not fitted) and ``fitted`` (False: outside the region, or too few stars: fill
        values used).
    """
    from scipy.spatial import cKDTree

    work = Path(work_dir)
    # memory-mapped inputs, read by binary search: a block touches only its own pages
    sl = _load(work, "sightlines", ("nside", "ipix", "n_in_pixel", "block"))
    first = int(np.searchsorted(sl["block"], block_id, side="left"))
    last = int(np.searchsorted(sl["block"], block_id, side="right"))
    nside = np.array(sl["nside"][first:last])
    ipix = np.array(sl["ipix"][first:last])
    n_in_pixel = np.array(sl["n_in_pixel"][first:last])
    n = nside.size
    if n == 0:
        raise ValueError(f"block {block_id} holds no sightline")
    cl, cb = sightline_centres(nside, ipix)

    # stars of the nside_min pixels that may lie within the neighbour radius of the block
    stars = _load(work, "stars", _STAR_ARRAYS)
    min_shift = 2 * int(round(math.log2(config.nside_max // config.nside_min)))
    radius = (hp.max_pixrad(config.block_nside) + hp.max_pixrad(config.nside_min)
              + math.radians(config.neighbour_factor * float(resolution_deg(config.nside_min))))
    bvec = hp.pix2vec(config.block_nside, int(block_id), nest=True)
    near = np.sort(hp.query_disc(config.nside_min, bvec, radius, inclusive=True, nest=True))
    lo = np.searchsorted(stars["ipix"], near << min_shift, side="left")
    hi = np.searchsorted(stars["ipix"], (near + 1) << min_shift, side="left")
    idx = (np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)]) if near.size
           else np.array([], dtype=np.int64))
    s_l, s_b = stars["l"][idx], stars["b"][idx]
    s_e, s_d = stars["ebv"][idx], stars["distance"][idx]
    s_w = stars["w_unc"][idx]
    s_derr = stars["distance_err"][idx]
    s_pix = stars["ipix"][idx]
    svec = unit_vectors(s_l, s_b)
    tree = cKDTree(svec) if idx.size else None
    cvec = unit_vectors(cl, cb)

    out = {
        "nside": nside, "ipix": ipix, "b_lim": _b_lim(cb, config.b_lim_min_deg),
        "params": np.empty((n, N_PARAMS)), "sigma": np.full(n, np.nan),
        "sigma_0_2": np.full(n, np.nan), "sigma_1_4": np.full(n, np.nan),
        "sigma_2_max": np.full(n, np.nan), "max_distance": np.zeros(n),
        "n_in_pixel": n_in_pixel, "n_stars": np.zeros(n, np.int64),
        "n_clipped": np.zeros(n, np.int64), "fitted": np.zeros(n, bool),
        "in_region": config.in_region(cl, cb),
    }
    fill = fill_row_values(config)
    fill_params = np.array([fill[name] for name in PARAM_NAMES])
    # scipy's L-BFGS-B calls BLAS on 15-element vectors; a multi-threaded BLAS turns each of
    # those calls into a thread hand-off and slows the fits 10-100x on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        _fit_block(n, nside, ipix, cvec, tree, svec, s_pix, s_d, s_e, s_w, s_derr, config, out,
                   fill_params)
    logger.debug("block %d: %d sightlines, %d fitted", block_id, n, int(out["fitted"].sum()))
    return out


def neighbour_stars(tree, star_vectors: np.ndarray, centre_vector: np.ndarray, nside: int,
                    config: ParametricBuildConfig):
    """The stars that take part in the fit of one sightline, and their eq. 1 weights.

    Parameters
    ----------
    tree : scipy.spatial.cKDTree or None
        Tree of ``star_vectors`` (None: no star).
    star_vectors : numpy.ndarray, shape (n, 3)
        Unit vectors of the stars.
    centre_vector : numpy.ndarray, shape (3,)
        Unit vector of the sightline centre.
    nside : int
        Resolution of the sightline.
    config : ParametricBuildConfig
        ``neighbour_factor``, ``alpha``, ``beta`` and ``min_decentration_weight``.

    Returns
    -------
    index : numpy.ndarray of int64
        The stars within ``neighbour_factor`` resolutions whose decentration weight is at
        least ``min_decentration_weight``.
    theta_deg, weight : numpy.ndarray
        Their angular distances from the centre and eq. 1 weights.
    """
    a_r = float(resolution_deg(nside))
    sel = np.array([], dtype=np.int64)
    if tree is not None:
        chord = 2.0 * math.sin(math.radians(config.neighbour_factor * a_r) / 2.0)
        sel = np.asarray(tree.query_ball_point(centre_vector, chord), dtype=np.int64)
    theta = np.degrees(2.0 * np.arcsin(np.clip(
        np.linalg.norm(star_vectors[sel] - centre_vector, axis=1) / 2.0, 0.0, 1.0)))
    w_dec = decentration_weight(theta, a_r, config.alpha, config.beta)
    use = w_dec >= config.min_decentration_weight
    return sel[use], theta[use], w_dec[use]


def _fit_block(n, nside, ipix, cvec, tree, svec, s_pix, s_d, s_e, s_w, s_derr, config, out,
               fill_params):
    for i in range(n):
        if not out["in_region"][i]:
            out["params"][i] = np.nan
            continue
        sel, theta, w_dec = neighbour_stars(tree, svec, cvec[i], int(nside[i]), config)
        out["n_stars"][i] = sel.size
        if sel.size < config.min_fit_stars:
            out["params"][i] = fill_params
            continue
        order = np.argsort(s_d[sel], kind="stable")  # independent of the tree's ordering
        sel, theta, w_dec = sel[order], theta[order], w_dec[order]
        # the stars of the line of sight itself (its pixel) set max_distance and the sigmas
        shift = 2 * int(round(math.log2(config.nside_max // int(nside[i]))))
        own = (s_pix[sel] >> shift) == ipix[i]
        res = fit_sightline(s_d[sel], s_e[sel], w_dec * s_w[sel], out["b_lim"][i],
                            reliable=own, distance_err=s_derr[sel], config=config.fit)
        out["params"][i] = res.params
        for key in ("sigma", "sigma_0_2", "sigma_1_4", "sigma_2_max", "max_distance"):
            out[key][i] = getattr(res, key)
        out["n_clipped"][i] = res.n_clipped
        out["fitted"][i] = True


# --------------------------------------------------------------------------- assemble
def assemble_table(results: dict, config: ParametricBuildConfig,
                   dtype=np.float32) -> dict[str, np.ndarray]:
    """Spread sightline results over the nside-1024 RING rows of the released table.

    Parameters
    ----------
    results : dict
        Concatenated :func:`process_block` outputs.
    config : ParametricBuildConfig
        For the fill values and ``b_lim`` floor.
    dtype : numpy dtype
        Floating type of the columns.

    Returns
    -------
    dict
        Every column of :data:`~dustmaps_ext_build.writers.parametric.PARAMETRIC_COLUMNS`,
        each of length 12,582,912.
    """
    fill = fill_row_values(config)
    cols = {c: np.full(RELEASE_NROWS, fill[c], dtype=dtype) for c in PARAMETRIC_COLUMNS
            if c != "b_lim"}
    row_l, row_b = hp.pix2ang(RELEASE_NSIDE, np.arange(RELEASE_NROWS), lonlat=True)
    cols["b_lim"] = _b_lim(row_b, config.b_lim_min_deg).astype(dtype)
    if not config.whole_sky:
        outside = ~config.in_region(row_l, row_b)
        for c, v in outside_row_values().items():
            cols[c][outside] = v
        del outside
    del row_l, row_b
    nside = np.asarray(results["nside"], dtype=np.int64)
    ipix = np.asarray(results["ipix"], dtype=np.int64)
    n_child = (RELEASE_NSIDE // nside) ** 2
    first = ipix * n_child
    which = np.repeat(np.arange(nside.size), n_child)
    offset = np.arange(which.size) - np.repeat(np.cumsum(n_child) - n_child, n_child)
    rows = hp.nest2ring(RELEASE_NSIDE, first[which] + offset)
    params = np.asarray(results["params"])
    values = {"b_lim": results["b_lim"]}
    values.update({name: params[:, j] for j, name in enumerate(PARAM_NAMES)})
    for key in ("sigma", "sigma_0_2", "sigma_1_4", "sigma_2_max", "max_distance"):
        values[key] = np.asarray(results[key], dtype=np.float64)
    if "in_region" in results:  # sightlines outside the region: NaN rows
        outside = ~np.asarray(results["in_region"], dtype=bool)
        for c, v in outside_row_values().items():
            values[c] = np.where(outside, v, values[c])
    for c in PARAMETRIC_COLUMNS:
        cols[c][rows] = np.asarray(values[c])[which]
    return cols


# --------------------------------------------------------------------------- whole build
def plan_build(catalog: StarCatalog, work_dir: str | os.PathLike,
               config: ParametricBuildConfig):
    """Prepare the inputs and describe the block job, without running it.

    Returns
    -------
    block_ids : list of int
    job : functools.partial
        ``process_block`` bound to the work folder and configuration (picklable).
    fingerprint : str
        Identity of the job (prepared input and configuration), for the runner's manifest.
    """
    work = Path(work_dir)
    block_ids, digest = prepare_build(catalog, work, config)
    fingerprint = hashlib.sha256((digest + config.to_json()).encode()).hexdigest()
    job = functools.partial(process_block, work_dir=str(work.resolve()), config=config)
    return block_ids, job, fingerprint


def build_parametric_map(catalog: StarCatalog | str | os.PathLike, output: str | os.PathLike,
                         work_dir: str | os.PathLike, *,
                         config: ParametricBuildConfig | None = None,
                         scheduler: str | None = None, n_workers: int | None = None,
                         progress: bool = True, resume: bool = True, overwrite: bool = False,
                         dtype=np.float32, column_map=None, catalog_format: str | None = None,
                         hdf5_group: str = "/") -> dict[str, np.ndarray]:
    """Build the released parametric table from a star catalog.

    Parameters
    ----------
    catalog : StarCatalog or path
        The stars (a path is read with :func:`~dustmaps_ext_build.parametric.catalog.read_catalog`).
    output : path
        The FITS table to write (the ``data_v3.fits`` layout; a name ending in ``.gz`` is
        gzip-compressed, which makes the table of a small region a few MB). It is written
        under a temporary name and renamed once complete: a build killed while writing
        leaves no ``output``, and running it again (``resume``) only redoes the write.
    work_dir : path
        Folder for the prepared inputs and the per-block results (``blocks/``); keep it to
        resume a killed build.
    config : ParametricBuildConfig, optional
        Build settings (the paper's by default).
    scheduler, n_workers, progress, resume
        See :func:`dustmaps_ext_build.runner.run_blocks`.
    overwrite : bool
        Replace ``output`` if it exists.
    dtype : numpy dtype
        Floating type of the table columns.
    column_map : mapping, optional
        Column renaming when ``catalog`` is a path.
    catalog_format, hdf5_group : str, optional
        ``format`` and ``hdf5_group`` of
        :func:`~dustmaps_ext_build.parametric.catalog.read_catalog` when ``catalog`` is a path.

    Returns
    -------
    dict
        The per-sightline results (see :func:`process_block`), also saved as
        ``work_dir/sightlines.npz``.
    """
    config = config or ParametricBuildConfig()
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; choose another output or replace it "
                              "(overwrite=True; --overwrite on the command line)")
    if not isinstance(catalog, StarCatalog):
        catalog = read_catalog(catalog, column_map=column_map, format=catalog_format,
                               hdf5_group=hdf5_group)
    work = Path(work_dir)
    block_ids, job, fingerprint = plan_build(catalog, work, config)
    paths = run_blocks(block_ids, job, work / "blocks", scheduler=scheduler, n_workers=n_workers,
                       progress=progress, resume=resume, fingerprint=fingerprint)
    results = load_blocks(paths)
    with atomic_output(work / "sightlines.npz", suffix=".npz") as tmp:
        np.savez(tmp, **results)
    table = assemble_table(results, config, dtype=dtype)
    write_parametric_table(output, table, overwrite=overwrite, dtype=dtype)
    logger.info("wrote %s (%d sightlines, %d fitted)", output, results["nside"].size,
                int(results["fitted"].sum()))
    return results
