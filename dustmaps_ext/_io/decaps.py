"""The DECaPS map format (Zucker et al. 2025), in one place: facts, checks, readers, converter.

Facts of the release
    Dataverse DOI :data:`DOI`, file names :data:`MEAN_AND_SAMPLES` and :data:`MEAN_ONLY`
    and their published sizes, pixels (:data:`NPIX` at :data:`NSIDE`), samples, the
    distance-modulus edges :data:`DM_BIN_EDGES`, the chunking of the published files
    (:data:`PUBLISHED_CHUNK_PIXELS`), the per-pixel datasets and their dtypes
    (:data:`PIXEL_DTYPES`), the footprint (:data:`L_RANGE_DEG`, :data:`B_RANGE_DEG`,
    :func:`in_footprint`) and where the files go (:func:`decaps_paths`,
    :func:`default_map_path`). The query classes, ``fetch()``, the command line and the
    build pipeline's writer all read them from here.

Published layout (the Zucker et al. 2025 release)
    ``mean`` (n_pix, 1, 120) and ``samples`` (n_pix, 5, 120), float16, each HDF5 chunk
    holding 200,842 pixels of ONE (sample, distance) pair, deflate + shuffle. A random
    pixel touches 6 x 120 chunks, so random access is slow; streaming it whole is fine.

Pixel-major layout (written by :func:`repack_pixel_major`)
    One HDF5 file whose datasets are contiguous and unfiltered, so they can be memory-mapped:

    * ``data`` (n_pix, 1 + n_samples, n_dist) float16: slot 0 is the mean, slots 1.. are
      the samples; one pixel's whole answer (1,440 bytes for 6 x 120) lies in one place;
    * ``pixel_info``: the published attributes and per-pixel datasets (``healpix_index``
      uint64, ``DM_reliable_min``/``DM_reliable_max`` float32, ``converged``/``infilled``
      uint8) plus ``coarse_start`` (int64; see :class:`~dustmaps_ext._core.pixels.PixelIndex`);
    * root attributes ``layout`` (= :data:`PIXEL_MAJOR_LAYOUT`), ``layout_version`` and
      ``complete`` (written last: a file without it is an interrupted repack).

Compact layout (the default of :func:`dustmaps_ext.decaps.repack`)
    Lossless and a few times smaller than the release: ``records`` (uint8) holds each
    pixel's values coded by :mod:`dustmaps_ext._core.profile_codec` and ``record_offsets``
    (int64, n_pix + 1) where each starts; root attributes ``layout`` (=
    :data:`COMPACT_LAYOUT`), ``layout_version`` (:data:`COMPACT_VERSION`), ``codec`` (=
    :data:`COMPACT_CODEC`), ``n_slots`` and ``complete``. This module checks it
    (:func:`inspect_decaps_file`); :mod:`dustmaps_ext._io.decaps_compact` writes and reads it.

Stores
    A store exposes a map to the query core (:class:`~dustmaps_ext._core.voxel.VoxelStore`)
    with one convention for both layouts: ``data_for(rows, want_samples) -> (data, rows)``
    returns a uint16 array (float16 bit patterns) whose slot 0 is the mean and slots
    1..n_samples the samples, and the rows of the query inside it. :class:`InMemoryStore`
    holds everything in RAM; :class:`MappedStore` memory-maps a pixel-major file and
    releases the pages it touched after each chunk of coordinates, so its resident memory
    stays bounded; :class:`PublishedRowStore` reads only the requested rows of a published
    file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from ..progress import tqdm

from .._core import profile_codec
from .._core.params import check_bool, check_int
from .._core.pixels import PixelIndex, check_nside, first_unsorted_row, in_lon_lat_box
from .._core.voxel import VoxelStore
from ..errors import MapFileError
from .download import file_lock
from .files import (
    fsync_dir,
    fsync_file,
    map_data_dir,
    map_read_only,
    missing_map_error,
    open_hdf5,
    release_pages,
    warn_if_inside_environment,
    write_json_atomic,
)
from .stores import InMemoryStore, PixelArrays

__all__ = ["DOI", "MEAN_AND_SAMPLES", "MEAN_ONLY", "NSIDE", "NPIX", "N_SAMPLES", "N_DIST",
           "DM_MIN", "DM_STEP", "DM_BIN_EDGES", "PUBLISHED_CHUNK_PIXELS", "PIXEL_DATASETS",
           "PIXEL_DTYPES", "VALUE_DTYPE", "L_RANGE_DEG", "B_RANGE_DEG", "in_footprint",
           "decaps_dir", "decaps_paths", "default_repacked_path", "default_map_path",
           "repacked_bytes", "repack_peak_bytes", "COMPACT_FRACTION", "MapFileError", "PIXEL_MAJOR_LAYOUT", "COMPACT_LAYOUT",
           "COMPACT_VERSION", "COMPACT_CODEC", "COMPACT_DATASETS", "COMPACT_CODE_DATASETS", "REPACK_LAYOUTS", "DecapsFileInfo",
           "inspect_decaps_file", "inspect_open_file", "InMemoryStore", "MappedStore", "PublishedRowStore",
           "MAPPED_CHUNK_COORDS", "load_in_memory", "repack_pixel_major", "map_datasets", "read_pixel_arrays",
           "published_blocks", "write_pixel_info", "create_contiguous", "pwrite_all"]

logger = logging.getLogger(__name__)

#: Coordinates a memory-mapped pixel-major file answers between two releases of its pages.
MAPPED_CHUNK_COORDS = 512

# --------------------------------------------------------------------------- facts
#: Dataverse DOI of the DECaPS 3D dust map release (Zucker et al. 2025).
DOI = "10.7910/DVN/J9JCKO"
#: File of the release with the mean and five posterior samples (about 33.8 GB).
MEAN_AND_SAMPLES = "decaps_mean_and_samples.h5"
#: File of the release with the mean map only (about 8 GB).
MEAN_ONLY = "decaps_mean.h5"
#: Published sizes of the two files (bytes), for scaling the repacked-size estimate.
PUBLISHED_BYTES = {MEAN_AND_SAMPLES: 33_800_000_000, MEAN_ONLY: 8_000_000_000}
#: HEALPix nside (NESTED) of the release.
NSIDE = 8192
#: Pixels, samples and distance-modulus edges of the release.
NPIX = 51_415_400
N_SAMPLES = 5
N_DIST = 120
#: The distance-modulus edges: 4.0 to 18.875 mag in steps of 0.125 (120 edges).
DM_MIN = 4.0
DM_STEP = 0.125
DM_BIN_EDGES = (DM_MIN + DM_STEP * np.arange(N_DIST)).astype(np.float32)
DM_BIN_EDGES.flags.writeable = False
#: Pixels per HDF5 chunk in the published files.
PUBLISHED_CHUNK_PIXELS = 200_842
#: Per-pixel datasets of ``pixel_info`` and their dtypes (both layouts; readers and writers).
PIXEL_DTYPES = {"healpix_index": np.dtype(np.uint64), "DM_reliable_min": np.dtype(np.float32),
                "DM_reliable_max": np.dtype(np.float32), "converged": np.dtype(np.uint8),
                "infilled": np.dtype(np.uint8)}
PIXEL_DATASETS = tuple(PIXEL_DTYPES)
#: dtype of the stored reddening values (``mean``, ``samples``, ``data``).
VALUE_DTYPE = np.dtype(np.float16)
#: The footprint of the map: 239 < l < 366 (i.e. l < 6) deg and |b| < 10 deg (Zucker et al. 2025).
L_RANGE_DEG = (239.0, 366.0)
B_RANGE_DEG = (-10.0, 10.0)

#: ``layout`` attribute of the pixel-major layout, and its version.
PIXEL_MAJOR_LAYOUT = "dustmaps_ext/decaps-pixel-major"
LAYOUT_VERSION = 1
#: ``layout`` attribute of the compact layout, its version and the ``codec`` attribute.
COMPACT_LAYOUT = "dustmaps_ext/decaps-compact"
COMPACT_VERSION = 3
COMPACT_CODEC = profile_codec.CODEC_NAME
#: Datasets holding the values of a compact file (memory-mapped), and its code tables.
COMPACT_DATASETS = ("records", "record_offsets")
COMPACT_CODE_DATASETS = ("value_code_lengths", "tuple_code_lengths", "pair_code_lengths")
#: Layouts :func:`dustmaps_ext.decaps.repack` writes (the first is the default).
REPACK_LAYOUTS = ("compact", "pixel-major")
#: The values of a pixel-major file as :class:`MappedStore` maps them.
_MAPPED_VALUE_DTYPE = np.dtype("<f2")


def in_footprint(l_deg, b_deg) -> np.ndarray:
    """Whether Galactic directions (deg) lie in the DECaPS footprint, 239 < l < 366 deg (l
    wraps through 0) and |b| < 10 deg, with the package's one boundary rule
    (:func:`dustmaps_ext.healpix.in_lon_lat_box`: open boundaries)."""
    return in_lon_lat_box(l_deg, b_deg, L_RANGE_DEG, B_RANGE_DEG)


def decaps_dir() -> Path:
    """``<dustmaps data_dir>/decaps``, read at call time."""
    return map_data_dir("decaps")


def default_repacked_path(src) -> Path:
    """Where :func:`repack` writes by default: ``<stem>_repacked.h5`` beside ``src``."""
    src = Path(src)
    return src.with_name(src.stem + "_repacked.h5")


def decaps_paths(mean_only: bool = False) -> tuple[Path, Path]:
    """(published file, repacked file) of the DECaPS map under the current data directory:
    where ``fetch()`` writes. Warns (:class:`~dustmaps_ext.errors.DataDirWarning`) when
    that directory lies inside the Python environment (dustmaps' default)."""
    warn_if_inside_environment(decaps_dir().parent)
    original = decaps_dir() / (MEAN_ONLY if mean_only else MEAN_AND_SAMPLES)
    return original, default_repacked_path(original)


def default_map_path(mean_only: bool = False) -> Path:
    """The DECaPS file a query class opens when given no file name.

    Looks in ``dustmaps.config['data_dir']/decaps/`` for, in order, the repacked and the
    published file of the requested kind (for ``mean_only``, the mean file first, then the
    mean-and-samples file), and last for a region cutout (``fetch(region=...)``).

    Raises
    ------
    FileNotFoundError
        If none is there; the message says how to download it.
    """
    names = [MEAN_ONLY, MEAN_AND_SAMPLES] if mean_only else [MEAN_AND_SAMPLES]
    folder = decaps_dir()
    candidates = []
    for name in names:
        candidates += [default_repacked_path(folder / name), folder / name]
    candidates += [folder / f"{Path(name).stem}_cutout.h5" for name in names]
    for path in candidates:
        if path.is_file():
            return path
    how = "dustmaps_ext.decaps.fetch(mean_only=True)" if mean_only else "dustmaps_ext.decaps.fetch()"
    raise missing_map_error(
        "DECaPS map", f" ({folder}); looked for " + ", ".join(p.name for p in candidates),
        "dustmaps_ext.decaps", how,
        "dustmaps-ext fetch decaps" + (" --mean-only" if mean_only else ""))


#: Size of a compact file as a fraction of the raw float16 values, by ``mean_only`` (mean
#: and samples: False; the mean alone: True), measured on the realistic simulated release
#: (``benchmarks/bench_decaps_layouts.py``): an estimate for the real map, whose values may
#: compress differently.
COMPACT_FRACTION = {False: 0.154, True: 0.40}


def repacked_bytes(mean_only: bool, published_bytes: int | None = None,
                   layout: str = "compact") -> int:
    """Size of the repacked copy in ``layout`` (one of :data:`REPACK_LAYOUTS`).

    ``'pixel-major'``: the uncompressed float16 values of every pixel, 74.0 GB for the real
    release (12.3 GB mean-only). ``'compact'``: :data:`COMPACT_FRACTION` of that (an
    estimate: about 11.4 GB, 4.9 GB mean-only). When the published file's size is known (a
    mirror or a test server may serve a smaller map), the estimate scales with it by the
    real release's ratio of repacked to published bytes.
    """
    if layout not in REPACK_LAYOUTS:
        raise ValueError(f"layout must be one of {REPACK_LAYOUTS}; got {layout!r}")
    values = N_DIST * (1 if mean_only else 1 + N_SAMPLES)
    real = NPIX * values * VALUE_DTYPE.itemsize
    if layout == "compact":
        real = int(real * COMPACT_FRACTION[mean_only])
    if not published_bytes:
        return real
    return int(published_bytes * real / PUBLISHED_BYTES[MEAN_ONLY if mean_only else MEAN_AND_SAMPLES])


def repack_peak_bytes(mean_only: bool, published_bytes: int | None = None,
                      layout: str = "compact") -> int:
    """Disk a repack needs at its peak: the compact writer holds its output twice (the
    encoded side files, then the file they are copied into)."""
    size = repacked_bytes(mean_only, published_bytes, layout)
    return 2 * size if layout == "compact" else size


@dataclass(frozen=True)
class DecapsFileInfo:
    """What a DECaPS file holds, checked by :func:`inspect_decaps_file`."""

    path: Path
    layout: str  # "published", "pixel-major" or "compact"
    nside: int
    dm_bin_edges: np.ndarray
    n_pix: int
    n_samples: int  # 0 for a mean-only file

    @property
    def n_dist(self) -> int:
        return int(self.dm_bin_edges.size)


def inspect_decaps_file(path) -> DecapsFileInfo:
    """Check that ``path`` is a complete DECaPS map file and describe it.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    MapFileError
        If it is not HDF5, misses groups, datasets or attributes of the DECaPS layouts,
        has inconsistent shapes, is an unfinished repack, or is shorter than its contents.
    """
    path = Path(path)
    with open_hdf5(path, "DECaPS map") as f:
        return inspect_open_file(path, f)


def inspect_open_file(path: Path, f: h5py.File) -> DecapsFileInfo:
    """Describe the already opened DECaPS file ``f`` (read from ``path``), checking it as
    :func:`inspect_decaps_file` does; for readers that hold the file open (remote cutouts)."""
    problems = []
    info = f.get("pixel_info")
    if not isinstance(info, h5py.Group):
        raise MapFileError(f"{path} is not a DECaPS map: it has no 'pixel_info' group "
                           f"(top-level items: {sorted(f.keys())})")
    for attr in ("nside", "DM_bin_edges"):
        if attr not in info.attrs:
            problems.append(f"attribute pixel_info.{attr}")
    for name in PIXEL_DATASETS:
        if not isinstance(info.get(name), h5py.Dataset):
            problems.append(f"dataset pixel_info/{name}")
    layout = f.attrs.get("layout", None)
    if isinstance(layout, bytes):
        layout = layout.decode()
    pixel_major = layout == PIXEL_MAJOR_LAYOUT
    compact = layout == COMPACT_LAYOUT
    value_sets = ("data",) if pixel_major else COMPACT_DATASETS if compact else ("mean",)
    for name in value_sets:
        if not isinstance(f.get(name), h5py.Dataset):
            problems.append(f"dataset {name}")
    if problems:
        raise MapFileError(f"{path} is not a complete DECaPS map file; missing: " + ", ".join(problems))

    try:
        nside = check_nside(info.attrs["nside"], "pixel_info.nside")
    except (TypeError, ValueError) as exc:
        raise MapFileError(f"{path} is not a consistent DECaPS map file: {exc}") from None
    edges = np.asarray(info.attrs["DM_bin_edges"], dtype=np.float32)
    n_pix = int(info["healpix_index"].shape[0]) if info["healpix_index"].ndim else 0
    if n_pix == 0:
        raise MapFileError(f"{path} holds no pixels (pixel_info/healpix_index is empty or a scalar)")
    for name in PIXEL_DATASETS:
        if info[name].shape != (n_pix,):
            problems.append(f"pixel_info/{name} has shape {info[name].shape}, expected ({n_pix},)")
        if info[name].dtype.kind not in _DTYPE_KINDS[name][0]:
            problems.append(f"pixel_info/{name} has dtype {info[name].dtype}, expected "
                            f"{_DTYPE_KINDS[name][1]}")
    float_sets = () if compact else value_sets + (("samples",) if "samples" in f else ())
    for name in float_sets:  # (the compact layout's datasets are checked by _check_compact)
        if isinstance(f[name], h5py.Dataset) and f[name].dtype.kind != "f":
            problems.append(f"{name} has dtype {f[name].dtype}, expected floating point")
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        problems.append("pixel_info.DM_bin_edges must be an increasing 1D array")
    n_dist = edges.size
    if pixel_major:
        if f.attrs.get("layout_version", -1) != LAYOUT_VERSION:
            problems.append(f"layout_version {f.attrs.get('layout_version')} (expected {LAYOUT_VERSION})")
        if not f.attrs.get("complete", False):
            raise MapFileError(f"{path} is an unfinished repack (it lacks the 'complete' mark); "
                               "run dustmaps_ext.decaps.repack() again to finish it")
        data = f["data"]
        if data.ndim != 3 or data.shape[0] != n_pix or data.shape[2] != n_dist or data.shape[1] < 1:
            problems.append(f"data has shape {data.shape}, expected ({n_pix}, 1 + n_samples, {n_dist})")
        n_samples = data.shape[1] - 1 if data.ndim == 3 else 0
        problems += _coarse_index_problems(info, nside)
        if not problems:
            _check_contiguous_extent(path, f, ["data"] + [f"pixel_info/{n}" for n in PIXEL_DATASETS])
    elif compact:
        problems += _coarse_index_problems(info, nside)
        n_samples = _check_compact(path, f, n_pix, n_dist, problems)
    else:
        mean = f["mean"]
        if mean.shape != (n_pix, 1, n_dist):
            problems.append(f"mean has shape {mean.shape}, expected ({n_pix}, 1, {n_dist})")
        samples = f.get("samples")
        n_samples = 0
        if samples is not None:
            if samples.ndim != 3 or samples.shape[0] != n_pix or samples.shape[2] != n_dist:
                problems.append(f"samples has shape {samples.shape}, expected ({n_pix}, n_samples, {n_dist})")
            else:
                n_samples = samples.shape[1]
    if problems:
        raise MapFileError(f"{path} is not a consistent DECaPS map file: " + "; ".join(problems))
    kind = "pixel-major" if pixel_major else "compact" if compact else "published"
    return DecapsFileInfo(path=path, layout=kind,
                          nside=nside, dm_bin_edges=edges, n_pix=n_pix, n_samples=n_samples)


def _check_compact(path: Path, f: h5py.File, n_pix: int, n_dist: int, problems: list) -> int:
    """Check the compact-layout parts of an open file; return its number of samples.

    Appends what is wrong to ``problems``; raises :class:`MapFileError` for an unfinished file.
    """
    version = f.attrs.get("layout_version", -1)
    if isinstance(version, (int, np.integer)) and 1 <= version < COMPACT_VERSION:
        raise MapFileError(f"{path} is a compact file of layout version {int(version)}, which this "
                           f"version of dustmaps_ext no longer reads (it reads version "
                           f"{COMPACT_VERSION}); repack it again from the published file with "
                           "dustmaps_ext.decaps.repack()")
    if version != COMPACT_VERSION:
        problems.append(f"layout_version {version} (expected {COMPACT_VERSION})")
    codec = f.attrs.get("codec", "")
    codec = codec.decode() if isinstance(codec, bytes) else codec
    if codec != COMPACT_CODEC:
        problems.append(f"codec {codec!r} (expected {COMPACT_CODEC!r})")
    if not f.attrs.get("complete", False):
        raise MapFileError(f"{path} is an unfinished compact file (it lacks the 'complete' mark); "
                           "run dustmaps_ext.decaps.repack() again to write it")
    n_slots = int(f.attrs.get("n_slots", 0))
    if n_slots < 1:
        problems.append(f"n_slots {n_slots} (expected >= 1)")
    records, offsets = (f[name] for name in COMPACT_DATASETS)
    if offsets.dtype != np.int64 or offsets.shape != (n_pix + 1,):
        problems.append(f"record_offsets is {offsets.dtype} {offsets.shape}, expected int64 ({n_pix + 1},)")
    if records.dtype != np.uint8 or records.ndim != 1:
        problems.append(f"records is {records.dtype} {records.shape}, expected 1D uint8")
    missing = [name for name in COMPACT_CODE_DATASETS if name not in f]
    if missing:
        problems.append(f"no {' or '.join(missing)}")
    else:
        problem = profile_codec.check_code_lengths(*(f[name][()] for name in COMPACT_CODE_DATASETS))
        if problem:
            problems.append(problem)
    for name in PIXEL_DATASETS:
        want = PIXEL_DTYPES[name]
        if f["pixel_info"][name].dtype != want:
            problems.append(f"pixel_info/{name} is {f['pixel_info'][name].dtype}, expected {want}")
    if problems:
        return max(0, n_slots - 1)
    _check_contiguous_extent(path, f, [*COMPACT_DATASETS, "pixel_info/coarse_start"]
                             + [f"pixel_info/{n}" for n in PIXEL_DATASETS])
    ends = offsets[[0, n_pix]] if n_pix else offsets[[0]]
    if int(ends[0]) != 0 or int(ends[-1]) != records.shape[0]:
        problems.append(f"record_offsets run from {int(ends[0])} to {int(ends[-1])}, expected 0 to "
                        f"{records.shape[0]} (the size of records)")
    bound = int(n_pix) * profile_codec.max_record_bytes(n_slots, n_dist)
    if records.shape[0] > bound:
        problems.append(f"records holds {records.shape[0]} bytes, more than {bound} possible")
    return n_slots - 1


#: dtype kinds allowed for each per-pixel dataset, and how to say it.
_DTYPE_KINDS = {"healpix_index": ("ui", "an integer type"),
                "DM_reliable_min": ("f", "a floating-point type"),
                "DM_reliable_max": ("f", "a floating-point type"),
                "converged": ("uib", "an integer or boolean type"),
                "infilled": ("uib", "an integer or boolean type")}


def _coarse_index_problems(info: h5py.Group, nside: int) -> list[str]:
    """What is wrong with the shape of a pixel-major file's ``coarse_start`` (values: see
    :func:`checked_pixel_index`)."""
    cs = info.get("coarse_start")
    if not isinstance(cs, h5py.Dataset):
        return ["dataset pixel_info/coarse_start is missing (an incomplete repack: run repack() again)"]
    if "coarse_nside" not in cs.attrs:
        return ["attribute pixel_info/coarse_start.coarse_nside is missing"]
    try:
        coarse_nside = check_nside(cs.attrs["coarse_nside"], "pixel_info/coarse_start.coarse_nside")
    except (TypeError, ValueError) as exc:
        return [str(exc)]
    if coarse_nside > nside:
        return [f"pixel_info/coarse_start.coarse_nside {coarse_nside} exceeds the map's nside {nside}"]
    expected = (12 * coarse_nside ** 2 + 1,)
    if cs.shape != expected or cs.dtype.kind not in "ui":
        return [f"pixel_info/coarse_start has shape {cs.shape} and dtype {cs.dtype}; expected "
                f"shape {expected} (coarse_nside {coarse_nside}) and an integer type"]
    return []


#: Rows of each per-pixel dataset that repack() copies at a time (32 MiB of uint64).
_INDEX_BLOCK_ROWS = 1 << 22



def _check_index_block(path, block: np.ndarray, first_row: int, previous: int, nside: int,
                       coarse_counts: np.ndarray | None = None) -> int:
    """Check rows ``first_row ..`` of ``healpix_index`` (:func:`first_unsorted_row`): pixels
    at ``nside``, strictly increasing after ``previous`` (the pixel of the row before them; -1
    for none). Adds the rows of each coarse pixel to ``coarse_counts``. Returns the last pixel."""
    bad = first_unsorted_row(block, nside, previous, coarse_counts)
    if bad < 0:
        return int(block[-1]) if len(block) else previous
    value = int(block[bad])
    n_total = 12 * nside * nside
    if not 0 <= value < n_total:
        raise MapFileError(f"{path}: pixel_info/healpix_index[{first_row + bad}] = {value} is not a "
                           f"HEALPix pixel at nside {nside} (0 to {n_total - 1}); the file is corrupt")
    before = previous if bad == 0 else int(block[bad - 1])
    raise MapFileError(
        f"{path}: pixel_info/healpix_index is not sorted: row {first_row + bad} holds pixel "
        f"{value} after pixel {before}. A DECaPS file lists each pixel once, in increasing "
        "order; a lookup in this one would answer NaN for pixels it holds, so it is refused "
        "(the file is corrupt or was not written as a DECaPS map)")


def checked_pixel_index(path, healpix_index, nside: int, coarse_start=None,
                        coarse_nside: int | None = None) -> PixelIndex:
    """The :class:`PixelIndex` of a DECaPS file, after checking its pixel table.

    One compiled pass over ``healpix_index`` (which may be a memory map): every entry a
    pixel at ``nside``, strictly increasing; and, when the file stores a coarse index,
    ``coarse_start`` equal to the one these pixels give (a wrong one would make lookups
    read outside the table).

    Raises
    ------
    MapFileError
        Naming ``path`` and the first wrong entry.
    """
    counts = None if coarse_start is None else np.zeros(12 * int(coarse_nside) ** 2, np.int64)
    _check_index_block(path, healpix_index, 0, -1, nside, counts)
    if counts is None:
        return PixelIndex(healpix_index, nside)
    coarse_start = np.asarray(coarse_start)
    expected = np.concatenate([[0], np.cumsum(counts)])
    wrong = coarse_start.astype(np.int64) != expected
    if wrong.any():
        i = int(np.argmax(wrong))
        raise MapFileError(
            f"{path}: pixel_info/coarse_start does not match pixel_info/healpix_index (entry "
            f"{i} is {coarse_start[i]}, the pixels give {expected[i]}); the file is corrupt: "
            "repack the published file again")
    return PixelIndex(healpix_index, nside, coarse_start=expected, coarse_nside=coarse_nside)


def _check_contiguous_extent(path: Path, f: h5py.File, names) -> None:
    size = path.stat().st_size
    for name in names:
        dset = f[name]
        offset = dset.id.get_offset()
        if dset.chunks is not None or dset.compression is not None or (offset is None and dset.size):
            raise MapFileError(f"{path}: dataset {name} is not stored contiguously; repack the file")
        if dset.size and offset + dset.id.get_storage_size() > size:
            raise MapFileError(f"{path} is truncated: dataset {name} ends at byte "
                               f"{offset + dset.id.get_storage_size()} but the file has {size} bytes")


# --------------------------------------------------------------------------- stores
def map_datasets(info: DecapsFileInfo, names) -> tuple:
    """Memory-map a repacked file (pixel-major or compact): ``(mapping, views, pixels)``.

    ``views`` maps each of ``names`` (contiguous datasets) to an array viewing the mapping;
    ``pixels`` is a :class:`~dustmaps_ext._io.stores.PixelArrays` of views of the per-pixel
    datasets, with the coarse pixel index (small) read into RAM.
    """
    names = list(names)
    pixel_names = [f"pixel_info/{n}" for n in PIXEL_DATASETS]
    with open_hdf5(info.path, "DECaPS map") as f:
        where = {name: (f[name].id.get_offset(), f[name].dtype, f[name].shape)
                 for name in names + pixel_names}
        coarse = f["pixel_info/coarse_start"]
        coarse_start, coarse_nside = coarse[()], int(coarse.attrs["coarse_nside"])
    mapping = map_read_only(info.path)
    views = {}
    for name, (offset, dtype, shape) in where.items():
        count = int(np.prod(shape))
        views[name] = (np.frombuffer(mapping, dtype=dtype, count=count, offset=offset).reshape(shape)
                       if count else np.empty(shape, dtype))
    index = checked_pixel_index(info.path, views["pixel_info/healpix_index"], info.nside,
                                coarse_start, coarse_nside)
    release_pages(mapping)  # the check read the whole pixel table
    pixels = PixelArrays(index, views["pixel_info/DM_reliable_min"],
                         views["pixel_info/DM_reliable_max"],
                         views["pixel_info/converged"], views["pixel_info/infilled"])
    return mapping, {name: views[name] for name in names}, pixels


def read_pixel_arrays(f: h5py.File, info: DecapsFileInfo) -> PixelArrays:
    """The per-pixel arrays of an open DECaPS file, read into RAM (with the coarse pixel
    index of a repacked file)."""
    grp = f["pixel_info"]
    pix = {name: _read(info.path, grp[name], ()) for name in PIXEL_DATASETS}
    if "coarse_start" in grp:
        index = checked_pixel_index(info.path, pix["healpix_index"], info.nside,
                                    grp["coarse_start"][()],
                                    int(grp["coarse_start"].attrs["coarse_nside"]))
    else:
        index = checked_pixel_index(info.path, pix["healpix_index"], info.nside)
    return PixelArrays(index, pix["DM_reliable_min"], pix["DM_reliable_max"],
                       pix["converged"], pix["infilled"])


class MappedStore(VoxelStore):
    """A pixel-major file, memory-mapped; touched pages are released after each chunk.

    Parameters
    ----------
    info : DecapsFileInfo
        A pixel-major file (see :func:`inspect_decaps_file`).
    chunk_coords : int
        Coordinates answered between two releases of the mapped pages. Each coordinate
        touches one place in the pixel table and one in the values; the kernel maps file
        pages in blocks (large folios: ~180 kB per fault measured on Linux 6.18), so
        resident memory stays below roughly ``chunk_coords x 400 kB``.
    """

    def __init__(self, info: DecapsFileInfo, chunk_coords: int = MAPPED_CHUNK_COORDS) -> None:
        if info.layout != "pixel-major":
            raise ValueError("MappedStore needs a pixel-major file; call repack() first")
        self.info = info
        self.chunk_coords = check_int(chunk_coords, "chunk_coords", 1)
        with open_hdf5(info.path, "DECaPS map") as f:
            stored = f["data"].dtype
        if stored != _MAPPED_VALUE_DTYPE:
            raise MapFileError(
                f"{info.path}: data is stored as {stored.str} (expected little-endian "
                "float16, as repack() writes it); it cannot be memory-mapped: open it with "
                "DECaPSQuery, or repack the published file again")
        self._mmap, views, self.pixels = map_datasets(info, ["data"])
        self.data = views["data"].view(np.uint16)
        self.n_samples = self.data.shape[1] - 1

    def data_for(self, rows: np.ndarray, want_samples: bool):
        return self.data, rows

    def release(self) -> None:
        """Drop the mapped pages from this process's resident set (they stay in the page cache)."""
        release_pages(self._mmap)


class PublishedRowStore(VoxelStore):
    """Reads only the requested pixels of a published-layout file (slow; repack for speed)."""

    chunk_coords = 4096

    def __init__(self, info: DecapsFileInfo, *, mean_only: bool = False) -> None:
        self.info = info
        self._h5 = h5py.File(info.path, "r")
        self._lock = threading.Lock()  # h5py serialises anyway; keep reads whole
        self.n_samples = 0 if mean_only else info.n_samples
        grp = self._h5["pixel_info"]
        index = checked_pixel_index(info.path, _read(info.path, grp["healpix_index"], ()), info.nside)
        self.pixels = _LazyPixelArrays(index, grp, self._lock)

    def data_for(self, rows: np.ndarray, want_samples: bool):
        uniq, inverse = np.unique(rows[rows >= 0], return_inverse=True)
        block = np.empty((uniq.size, 1 + self.n_samples, self.info.n_dist), dtype=np.uint16)
        local = np.full(rows.shape, -1, dtype=np.int64)
        local[rows >= 0] = inverse
        if uniq.size:
            with self._lock:  # values of another float type are converted to float16 on reading
                if want_samples:
                    block[:, 1:, :] = _read(self.info.path, self._h5["samples"],
                                            (uniq, slice(0, self.n_samples))).view(np.uint16)
                else:
                    block[:, :1, :] = _read(self.info.path, self._h5["mean"], (uniq,)).view(np.uint16)
        return block, local

    def release(self) -> None:
        """Nothing to release: read blocks are freed with the query."""


class _LazyPixelArrays(PixelArrays):
    """Per-pixel flags read from the file for just the rows asked for."""

    def __init__(self, index: PixelIndex, grp: h5py.Group, lock: threading.Lock) -> None:
        self.index = index
        self._grp = grp
        self._lock = lock

    def flags(self, rows: np.ndarray) -> dict:
        inside = rows >= 0
        uniq, inverse = np.unique(rows[inside], return_inverse=True)
        out = {"converged": np.zeros(rows.shape, bool), "infilled": np.zeros(rows.shape, bool),
               "dm_min": np.full(rows.shape, np.nan, np.float32),
               "dm_max": np.full(rows.shape, np.nan, np.float32)}
        if uniq.size:
            with self._lock:
                vals = {k: _read(self._grp.file.filename, self._grp[k], (uniq,)) for k in PIXEL_DATASETS[1:]}
            out["converged"][inside] = vals["converged"][inverse] != 0
            out["infilled"][inside] = vals["infilled"][inverse] != 0
            out["dm_min"][inside] = vals["DM_reliable_min"][inverse]
            out["dm_max"][inside] = vals["DM_reliable_max"][inverse]
        return out


@contextmanager
def _reading(path, what: str) -> Iterator[None]:
    """Turn a failed HDF5 read inside the block (a corrupt or truncated chunk) into a
    :class:`MapFileError` naming the file and ``what`` was read."""
    try:
        yield
    except OSError as exc:
        raise MapFileError(f"{path}: {what} could not be read (a corrupt or truncated chunk: the "
                           f"file is damaged; download it again): {exc}") from exc


def _read(path, dset: h5py.Dataset, selection: tuple) -> np.ndarray:
    """``dset[selection]``, with the values of ``mean``/``samples``/``data`` as float16
    whatever their stored float type (see :func:`_reading` for errors)."""
    with _reading(path, f"dataset {dset.name}"):
        if dset.name in ("/mean", "/samples", "/data"):
            return dset.astype(VALUE_DTYPE)[selection]
        return dset[selection]


def load_in_memory(info: DecapsFileInfo, *, n_samples: int, progress: bool = True) -> InMemoryStore:
    """Read a DECaPS file (either layout) into RAM with ``n_samples`` sample slots.

    Memory use is the arrays' own size plus one read block: the values are written
    straight into the final float16 array, never through a float64 copy.
    """
    n_slots = 1 + n_samples
    data = np.empty((info.n_pix, n_slots, info.n_dist), dtype=np.float16)
    with open_hdf5(info.path, "DECaPS map") as f, _reading(info.path, "the map"):
        pixels = read_pixel_arrays(f, info)
        if info.layout == "pixel-major":
            src = f["data"]
            step = max(1, (64 << 20) // max(1, src.shape[1] * src.shape[2] * 2))
            blocks = [(a, min(a + step, info.n_pix)) for a in range(0, info.n_pix, step)]
            whole = n_slots == src.shape[1]
            for a, b in tqdm(blocks, desc="Loading DECaPS map", unit="block", disable=not progress):
                if whole:
                    src.read_direct(data, np.s_[a:b], np.s_[a:b])
                else:
                    data[a:b] = src[a:b, :n_slots, :]
        else:
            mean, samples = f["mean"], f.get("samples")
            step = _published_block_rows(mean, info.n_pix)
            blocks = [(a, min(a + step, info.n_pix)) for a in range(0, info.n_pix, step)]
            for a, b in tqdm(blocks, desc="Loading DECaPS map", unit="block", disable=not progress):
                mean.read_direct(data, np.s_[a:b, :, :], np.s_[a:b, 0:1, :])
                if n_samples:
                    samples.read_direct(data, np.s_[a:b, :n_samples, :], np.s_[a:b, 1:, :])
    return InMemoryStore(info, data.view(np.uint16), pixels)


def _published_block_rows(dset: h5py.Dataset, n_pix: int) -> int:
    """Rows per read: whole published chunks, so each chunk is decompressed exactly once."""
    chunk_rows = dset.chunks[0] if dset.chunks else 65536
    return max(1, min(n_pix, chunk_rows))


def published_blocks(f: h5py.File, info: DecapsFileInfo, *, start_row: int = 0):
    """Stream the values of an open published file in whole published chunk rows.

    Yields ``(a, b, values)``: pixels ``a:b`` as a float16 array (b - a, 1 + n_samples,
    n_dist), slot 0 the mean; the array is reused by the next block. Starts at the chunk
    row holding ``start_row``. Memory: one chunk row (about 290 MB for the release).

    Raises
    ------
    MapFileError
        If the file cannot be read completely.
    """
    mean, samples = f["mean"], f.get("samples")
    step = _published_block_rows(mean, info.n_pix)
    buf = np.empty((step, 1 + info.n_samples, info.n_dist), dtype=VALUE_DTYPE)
    for a in range((start_row // step) * step, info.n_pix, step):
        b = min(a + step, info.n_pix)
        view = buf[:b - a]
        with _reading(info.path, f"pixels {a} to {b - 1}"):
            mean.read_direct(view, np.s_[a:b, :, :], np.s_[:, 0:1, :])
            if samples is not None:
                samples.read_direct(view, np.s_[a:b, :, :], np.s_[:, 1:, :])
        yield a, b, view


def write_pixel_info(out: h5py.File, columns, *, nside: int, n_pix: int, coarse_nside: int,
                     attrs, source: str) -> None:
    """Write the ``pixel_info`` group of a repacked file (pixel-major or compact).

    ``columns`` maps each of :data:`PIXEL_DATASETS` to an array or dataset of length
    ``n_pix``, read in slices; any other 1-D column of length ``n_pix`` in it (e.g. the
    ``n_stars`` and ``no_reliable_range`` of a map built with ``dustmaps_ext_build``) is
    copied with its own dtype. ``attrs`` are the group's attributes (the release's). Checks
    that ``healpix_index`` is strictly increasing and within ``nside``, and adds the coarse
    pixel index ``coarse_start`` (see :class:`~dustmaps_ext._core.pixels.PixelIndex`).
    """
    counts = np.zeros(12 * coarse_nside ** 2, dtype=np.int64)
    step = _INDEX_BLOCK_ROWS
    grp = out.create_group("pixel_info")
    for key, value in attrs.items():
        grp.attrs[key] = value
    last = -1  # the last pixel index seen, to check the order across blocks
    extra = [name for name in columns.keys() if name not in PIXEL_DTYPES and name != "coarse_start"
             and np.shape(columns[name]) == (n_pix,)]
    for name in (*PIXEL_DATASETS, *extra):
        dtype = PIXEL_DTYPES.get(name, np.asarray(columns[name][:0]).dtype)
        dset = grp.create_dataset(name, shape=(n_pix,), dtype=dtype)
        for a in range(0, n_pix, step):
            b = min(a + step, n_pix)
            with _reading(source, f"pixel_info/{name}"):
                block = np.asarray(columns[name][a:b])
            if block.shape != (b - a,):
                raise ValueError(f"pixel column {name} must have length {n_pix}")
            dset[a:b] = block.astype(dtype)
            if name == "healpix_index":
                last = _check_index_block(source, block, a, last, nside, counts)
    coarse = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cs = grp.create_dataset("coarse_start", data=coarse)
    cs.attrs["coarse_nside"] = np.int64(coarse_nside)


def create_contiguous(out: h5py.File, name: str, h5type, shape: tuple) -> h5py.Dataset:
    """Allocate a contiguous, unfiltered, unfilled dataset whose bytes are written later
    straight into the file (at ``out[name].id.get_offset()``)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    h5py.h5d.create(out.id, name.encode(), h5type, h5py.h5s.create_simple(tuple(shape)), dcpl=dcpl)
    return out[name]


# --------------------------------------------------------------------------- repack
def _fingerprint(src: Path, info: DecapsFileInfo) -> dict:
    st = src.stat()
    return {"src": str(src.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "n_pix": info.n_pix, "n_samples": info.n_samples, "n_dist": info.n_dist,
            "layout_version": LAYOUT_VERSION}


def repack_pixel_major(src, dst=None, *, progress: bool = True, coarse_nside: int = 256) -> Path:
    """Convert a published-layout DECaPS file into the pixel-major layout.

    The conversion streams the source one published chunk row at a time (about 290 MB of
    values for 200,842 pixels x 6 x 120), writes straight into the final byte positions of
    ``<dst>.partial`` and records its progress in ``<dst>.partial.json`` after each block,
    so an interrupted repack resumes where it stopped (or starts over if the source
    changed). Only a finished file is renamed to ``dst``; ``dst`` is never left half-written.

    Parameters
    ----------
    src : str or Path
        A published-layout file (``decaps_mean_and_samples.h5`` or ``decaps_mean.h5``).
    dst : str or Path, optional
        Output file; default ``<src stem>_repacked.h5`` beside ``src``.
    progress : bool
        Show a tqdm progress bar.
    coarse_nside : int
        nside of the coarse pixel index stored with the file.

    Returns
    -------
    Path
        ``dst``.
    """
    src = Path(src)
    dst = Path(dst) if dst is not None else default_repacked_path(src)
    progress = check_bool(progress, "progress")
    coarse_nside = check_nside(coarse_nside, "coarse_nside")
    info = inspect_decaps_file(src)
    if info.layout != "published":
        raise ValueError(f"{src} is already in the {info.layout} layout")
    coarse_nside = min(coarse_nside, info.nside)
    with file_lock(dst, action="repacked"):
        _repack_locked(src, dst, info, progress, coarse_nside)
    logger.info("repacked %s -> %s", src, dst)
    return dst


def _repack_locked(src: Path, dst: Path, info: DecapsFileInfo, progress: bool, coarse_nside: int) -> None:
    """The work of :func:`repack_pixel_major`, under its lock."""
    partial = dst.with_name(dst.name + ".partial")
    state_path = dst.with_name(dst.name + ".partial.json")
    fingerprint = _fingerprint(src, info)
    rows_done = 0
    if partial.exists() and state_path.exists():
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("fingerprint") == fingerprint:
            rows_done = int(state.get("rows_done", 0))
            logger.info("resuming repack of %s at pixel %d of %d", src, rows_done, info.n_pix)
    if rows_done == 0:
        _create_pixel_major(src, partial, info, coarse_nside)
        _write_state(state_path, fingerprint, 0)

    n_slots = 1 + info.n_samples
    with h5py.File(partial, "r") as out:
        data_offset = out["data"].id.get_offset()
    row_bytes = n_slots * info.n_dist * 2
    with h5py.File(src, "r") as f:
        step = _published_block_rows(f["mean"], info.n_pix)
        start = (rows_done // step) * step
        fd = os.open(partial, os.O_WRONLY)
        try:
            bar = tqdm(total=info.n_pix, initial=start, desc="Repacking DECaPS", unit="pix",
                       unit_scale=True, disable=not progress)
            with bar:
                for a, b, view in published_blocks(f, info, start_row=start):
                    pwrite_all(fd, memoryview(view).cast("B"), data_offset + a * row_bytes)
                    os.fsync(fd)
                    _write_state(state_path, fingerprint, b)
                    bar.update(b - a)
        finally:
            os.close(fd)
    with h5py.File(partial, "r+") as out:
        out.attrs["complete"] = True
    fsync_file(partial)
    os.replace(partial, dst)
    fsync_dir(dst.parent)
    state_path.unlink(missing_ok=True)


def pwrite_all(fd: int, buf: memoryview, offset: int) -> None:
    """Write all of ``buf`` at ``offset`` of the open file ``fd`` (pwrite may write less)."""
    while len(buf):
        n = os.pwrite(fd, buf, offset)
        buf = buf[n:]
        offset += n


def _write_state(path: Path, fingerprint: dict, rows_done: int) -> None:
    write_json_atomic(path, {"fingerprint": fingerprint, "rows_done": rows_done})


def _create_pixel_major(src: Path, partial: Path, info: DecapsFileInfo, coarse_nside: int) -> None:
    """Write the metadata and per-pixel datasets; allocate ``data`` (values come later)."""
    n_slots = 1 + info.n_samples
    with h5py.File(src, "r") as f, h5py.File(partial, "w") as out:
        out.attrs["layout"] = PIXEL_MAJOR_LAYOUT
        out.attrs["layout_version"] = LAYOUT_VERSION
        out.attrs["source"] = str(src.name)
        grp_in = f["pixel_info"]
        write_pixel_info(out, grp_in, nside=info.nside, n_pix=info.n_pix, coarse_nside=coarse_nside,
                         attrs={**grp_in.attrs, "n_samples": np.int64(info.n_samples)}, source=str(src))
        create_contiguous(out, "data", h5py.h5t.IEEE_F16LE, (info.n_pix, n_slots, info.n_dist))
        out["data"].attrs["slots"] = "mean," + ",".join(f"sample{k}" for k in range(info.n_samples))
