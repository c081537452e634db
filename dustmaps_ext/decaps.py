"""Queries of the DECaPS 3D dust map of the southern Galactic plane (Zucker et al. 2025).

Two query classes, both :class:`dustmaps.map_base.DustMap` subclasses with the vocabulary of
``dustmaps.decaps`` (modes, ``pct``, ``return_flags``, shapes) and its numbers:

* :class:`DECaPSQuery` loads the map into RAM (float16, as stored: no float64 copies);
* :class:`DECaPSQueryLite` memory-maps a repacked file; resident memory stays small
  whatever the map's size.

Both read the published layout and the two layouts :func:`repack` writes: the compact one
(default; lossless, decoded per pixel, see ``docs/compact_layout.rst``) and the
uncompressed pixel-major one (read as is). Either makes them fast: one place per pixel
instead of hundreds of published chunks. The map covers
239 < l or l < 6 deg, |b| < 10 deg; elsewhere the answers are NaN and the flags False.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from astropy.utils.decorators import format_doc

from ._core.modes import ALL_MODES
from ._core.params import check_bool, check_int
from ._io.cutout import CutoutCoverage
from ._io.decaps import (
    MEAN_AND_SAMPLES,
    MAPPED_CHUNK_COORDS,
    MEAN_ONLY,
    REPACK_LAYOUTS,
    MappedStore,
    PublishedRowStore,
    default_map_path,
    inspect_decaps_file,
    load_in_memory,
)
from ._io.decaps_compact import COMPACT_CHUNK_COORDS, CompactStore, load_compact_in_memory, repack
from ._pickle import ReopenByPath
from ._io.fetchers import fetch_decaps as fetch
from ._voxel_map import VoxelDustMap, check_max_samples
from .errors import LayoutPerformanceWarning, MapFileError, OutsideFetchedRegionError

__all__ = ["DECaPSQuery", "DECaPSQueryLite", "fetch", "repack", "default_map_path", "MapFileError",
           "LayoutPerformanceWarning", "MEAN_AND_SAMPLES", "MEAN_ONLY", "REPACK_LAYOUTS",
           "OutsideFetchedRegionError"]

logger = logging.getLogger(__name__)

#: the ``outside_regions`` parameter, as both query classes document it
_OUTSIDE_REGIONS_DOC = """\
    outside_regions : {'raise', 'nan'}, keyword-only
        For a region cutout (``fetch(region=...)``): a position inside the DECaPS footprint
        but outside every fetched region raises :class:`OutsideFetchedRegionError` naming
        the regions (default), or, with ``'nan'``, gets NaN and a ``fetched=False`` field in
        the flags (``fetched`` is added to the flags of every cutout query). Ignored for a
        full map."""


class _DECaPSBase(ReopenByPath, VoxelDustMap):
    """What both query classes share: file resolution, modes and the query itself."""

    _store = None

    def __init__(self, map_fname, mean_only: bool, outside_regions: str = "raise") -> None:
        super().__init__()
        path = Path(map_fname) if map_fname is not None else default_map_path(mean_only)
        mean_only = check_bool(mean_only, "mean_only")
        self._info = inspect_decaps_file(path)
        if not mean_only and self._info.n_samples == 0:
            raise MapFileError(f"{path} holds the mean map only; open it with mean_only=True "
                               "or download the mean-and-samples file (fetch())")
        self._mean_only = bool(mean_only)
        self._valid_modes = ("mean",) if mean_only else ALL_MODES
        self._coverage = CutoutCoverage.of_file(path, self._info.nside, outside_regions)

    @property
    def n_samples(self) -> int:
        """Posterior samples available to the sample-based modes (0 when mean-only)."""
        return 0 if self._mean_only else self._store.n_samples

    def query(self, coords, mode: str = "mean", return_flags: bool = False, pct=None, *, rng=None):
        """Reddening E(B-V) (mag) at the given coordinates.

        Parameters
        ----------
        coords : astropy.coordinates.SkyCoord
            Any frame and shape (scalar too), with or without distances.
        mode : str
            ``'mean'`` (default), ``'median'``, ``'samples'``, ``'random_sample'``,
            ``'random_sample_per_pix'`` or ``'percentile'`` (only ``'mean'`` for a
            mean-only map).
        return_flags : bool
            Also return a structured array of flags: with distances ``converged``,
            ``infilled`` and ``reliable_dist`` (the distance modulus lies within the
            pixel's finite reliable range); without distances ``converged``, ``infilled``,
            ``min_reliable_distmod`` and ``max_reliable_distmod`` (float32; dustmaps 1.0.14
            rounds them to float16).
        pct : float or sequence of float
            Percentile(s) in [0, 100] for ``mode='percentile'``.
        rng : None, int or numpy.random.Generator, keyword-only
            Randomness of the random modes (draws are always among the map's samples).

        Returns
        -------
        numpy.ndarray, or (numpy.ndarray, numpy.ndarray)
            With distances: shape ``coords.shape`` (float16), plus a trailing samples axis
            for ``'samples'`` and a trailing percentile axis for a list ``pct`` (float64,
            as dustmaps). Without distances, a distance axis (``len(self.distances)``)
            follows ``coords.shape``; for ``'samples'`` the shape is
            ``coords.shape + (n_samples, n_distances)`` -- samples before distances, which
            is what dustmaps 1.0.14 really returns (its docstring says otherwise).
            Outside the footprint, and for NaN/infinite positions or NaN/negative
            distances: NaN, with False flags. Distance zero gives zero reddening; beyond the
            last distance-modulus edge the last value is returned.

        Raises
        ------
        OutsideFetchedRegionError
            On a region cutout (``fetch(region=...)``), for a position inside the DECaPS
            footprint that no fetched region covers (unless ``outside_regions='nan'``).
        ValueError
            For an unknown mode or an invalid ``pct``.
        TypeError
            If ``coords`` is not a SkyCoord.
        """
        if self._coverage is not None:  # a region cutout: refuse or flag unfetched positions
            return self._coverage.answer(self._answer, coords, mode, return_flags, pct, rng)
        return self._answer(coords, mode, return_flags, pct, rng)


@format_doc(None, outside_regions=_OUTSIDE_REGIONS_DOC)
class DECaPSQuery(_DECaPSBase):
    """The DECaPS map, loaded whole into RAM.

    Parameters
    ----------
    map_fname : str or Path, optional
        A DECaPS file in either layout. Default: the repacked, else the published file in
        ``dustmaps.config['data_dir']/decaps/`` (see :func:`default_map_path`).
    max_samples : int, optional
        Load only the first ``max_samples`` posterior samples (less memory). The values
        stay float16.
    mean_only : bool
        Load only the mean; only ``mode='mean'`` is then available.
    progress : bool, keyword-only
        Show a progress bar while loading.
{outside_regions}

    Notes
    -----
    Memory use is the size of the loaded arrays: ``n_pix x (1 + n_samples) x 120 x 2``
    bytes plus 18 bytes per pixel of pixel information (about 74 GB with all samples of the
    real map, 12 GB for the mean). Loading the pixel-major layout is a plain read, the
    compact one is decoded on the package's threads, the published one is decompressed.
    """

    def __init__(self, map_fname=None, max_samples: int | None = None, mean_only: bool = False,
                 *, progress: bool = True, outside_regions: str = "raise") -> None:
        progress = check_bool(progress, "progress")
        super().__init__(map_fname, mean_only, outside_regions)
        n_samples = 0 if mean_only else check_max_samples(max_samples, self._info.n_samples,
                                                          self._info.path)
        logger.info("loading %s into RAM (%.2f GB)", self._info.path,
                    self._info.n_pix * (1 + n_samples) * self._info.n_dist * 2 / 1e9)
        load = load_compact_in_memory if self._info.layout == "compact" else load_in_memory
        self._store = load(self._info, n_samples=n_samples, progress=progress)
        self._remember_init(map_fname=self._info.path, max_samples=max_samples,
                            mean_only=self._mean_only, progress=progress,
                            outside_regions=outside_regions)


@format_doc(None, outside_regions=_OUTSIDE_REGIONS_DOC)
class DECaPSQueryLite(_DECaPSBase):
    """The DECaPS map, memory-mapped: small resident memory whatever the map's size.

    Parameters
    ----------
    map_fname : str or Path, optional
        A DECaPS file. The layouts written by :func:`repack` are memory-mapped: a compact
        file decodes only the pixels asked for, a pixel-major one is read as is. A
        published-layout file also works, reading only the pixels asked for, but slowly
        (a :class:`LayoutPerformanceWarning` says so). Default as in :class:`DECaPSQuery`.
    mean_only : bool
        Answer only ``mode='mean'`` (required for a mean-only file).
    chunk_coords : int or None, keyword-only
        Coordinates answered between two releases of mapped pages (at least 1). Coordinates are
        answered in order of pixel, so the pages of one chunk lie close together; the
        kernel maps file pages in blocks (large folios, ~180 kB per fault measured here),
        so resident memory stays below roughly ``chunk_coords x 400 kB``. Default (None):
        512 for a pixel-major file; 4096 for a compact file, where the per-chunk work of
        decoding makes small chunks slow (a compact record is ~220 bytes, so a chunk
        touches few pages: 10^6 random coordinates raised the peak resident memory by
        85 MB with 4096 and by 77 MB with 512 on a 2 M-pixel map).
{outside_regions}

    Notes
    -----
    One object may be queried from several threads at once.
    """

    def __init__(self, map_fname=None, mean_only: bool = False, *, chunk_coords: int | None = None,
                 outside_regions: str = "raise") -> None:
        if chunk_coords is not None:
            chunk_coords = check_int(chunk_coords, "chunk_coords", 1)
        super().__init__(map_fname, mean_only, outside_regions)
        if self._info.layout == "pixel-major":
            self._store = MappedStore(self._info, chunk_coords=chunk_coords or MAPPED_CHUNK_COORDS)
        elif self._info.layout == "compact":
            self._store = CompactStore(self._info, mean_only=mean_only,
                                       chunk_coords=chunk_coords or COMPACT_CHUNK_COORDS)
        else:
            warnings.warn(
                f"{self._info.path.name} is in the published layout, where every random pixel "
                "decompresses hundreds of MB; run dustmaps_ext.decaps.repack() once to make "
                "DECaPSQueryLite fast", LayoutPerformanceWarning, stacklevel=2)
            self._store = PublishedRowStore(self._info, mean_only=mean_only)
        self._remember_init(map_fname=self._info.path, mean_only=self._mean_only,
                            chunk_coords=chunk_coords, outside_regions=outside_regions)
