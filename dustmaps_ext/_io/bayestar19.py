"""The Bayestar19 format (Green et al. 2019), in one place: facts, checks and an in-RAM store.

Facts: the Dataverse DOI (:data:`DOI`), the file name (:data:`FILE_NAME`), where dustmaps
looks for it (:func:`default_map_path`), and the record type of ``pixel_info``
(:data:`PIXEL_INFO_DTYPE`), which the reader checks and the build pipeline's writer writes.

Layout of ``bayestar2019.h5`` as dustmaps' ``BayestarQuery`` reads it:

* ``pixel_info``: a structured dataset, one record per pixel, with fields ``nside``,
  ``healpix_index`` (NESTED; several nsides), ``DM_reliable_min``, ``DM_reliable_max``
  (float32, NaN allowed) and ``converged``; attribute ``DM_bin_edges`` (120 values);
* ``samples`` (n_pix, n_samples, n_dist) and ``best_fit`` (n_pix, n_dist), float32, in
  Bayestar19's arbitrary reddening units.

:func:`load_bayestar19` reads it into one float32 array ``data[row, slot, k]`` with the
slot convention of :mod:`dustmaps_ext._core.voxel`: slot 0 is the best fit (``slot0 =
'best'``), slots 1..n_samples the samples. Rows keep the file's order; the pixel index
sorts a copy of the pixel ranges (the file lists pixels nside by nside).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from ..progress import tqdm

from .._core.modes import BAYESTAR_FLAGS_WITH_DISTANCE, BAYESTAR_FLAGS_WITHOUT_DISTANCE
from .._core.pixels import PixelIndex
from ..errors import MapFileError
from .files import map_data_dir, missing_map_error, open_hdf5
from .stores import InMemoryStore, PixelArrays

__all__ = ["DOI", "FILE_NAME", "PIXEL_INFO_DTYPE", "default_map_path", "Bayestar19FileInfo",
           "inspect_bayestar19_file", "Bayestar19Store", "load_bayestar19"]

logger = logging.getLogger(__name__)

#: Dataverse DOI of the Bayestar19 release (Green et al. 2019).
DOI = "10.7910/DVN/2EJ9TX"
#: File name of the release, as ``dustmaps.bayestar.BayestarQuery(version='bayestar2019')`` reads it.
FILE_NAME = "bayestar2019.h5"
#: Record type of ``pixel_info`` in ``bayestar2019.h5``.
PIXEL_INFO_DTYPE = np.dtype([("nside", "<u4"), ("healpix_index", "<u8"),
                             ("DM_reliable_min", "<f4"), ("DM_reliable_max", "<f4"),
                             ("converged", "u1")])
_PIXEL_FIELDS = PIXEL_INFO_DTYPE.names


def bayestar_dir() -> Path:
    """``<dustmaps data_dir>/bayestar``, read at call time."""
    return map_data_dir("bayestar")


def default_map_path() -> Path:
    """``<dustmaps data_dir>/bayestar/bayestar2019.h5``, where dustmaps' BayestarQuery looks.

    Raises
    ------
    FileNotFoundError
        If it is not there; the message says how to download it.
    """
    path = bayestar_dir() / FILE_NAME
    if not path.is_file():
        raise missing_map_error("Bayestar19 map", f": {path} is missing", "dustmaps_ext.bayestar",
                                "dustmaps_ext.bayestar.fetch()", "dustmaps-ext fetch bayestar2019")
    return path


@dataclass(frozen=True)
class Bayestar19FileInfo:
    """What a Bayestar19 file holds, checked by :func:`inspect_bayestar19_file`."""

    path: Path
    dm_bin_edges: np.ndarray
    n_pix: int
    n_samples: int
    nsides: tuple

    @property
    def n_dist(self) -> int:
        return int(self.dm_bin_edges.size)


def inspect_bayestar19_file(path) -> Bayestar19FileInfo:
    """Check that ``path`` is a complete Bayestar19-format file and describe it.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    MapFileError
        If it is not HDF5, or lacks a dataset, field or attribute of the layout, or has
        inconsistent shapes.
    """
    path = Path(path)
    with open_hdf5(path, "Bayestar19 map") as f:
        problems = []
        info = f.get("pixel_info")
        if not isinstance(info, h5py.Dataset) or info.dtype.names is None:
            raise MapFileError(f"{path} is not a Bayestar19 map: it has no structured "
                               f"'pixel_info' dataset (top-level items: {sorted(f.keys())})")
        missing = [k for k in _PIXEL_FIELDS if k not in info.dtype.names]
        if missing:
            problems.append("pixel_info fields " + ", ".join(missing))
        if "DM_bin_edges" not in info.attrs:
            problems.append("attribute pixel_info.DM_bin_edges")
        for name in ("samples", "best_fit"):
            if not isinstance(f.get(name), h5py.Dataset):
                problems.append(f"dataset {name}")
        if problems:
            raise MapFileError(f"{path} is not a complete Bayestar19 map file; missing: "
                               + ", ".join(problems))
        edges = np.asarray(info.attrs["DM_bin_edges"], dtype=np.float32)
        n_pix = int(info.shape[0])
        n_dist = edges.size
        if edges.ndim != 1 or n_dist < 2 or np.any(np.diff(edges) <= 0):
            problems.append("pixel_info.DM_bin_edges must be an increasing 1D array")
        samples, best = f["samples"], f["best_fit"]
        if samples.ndim != 3 or samples.shape[0] != n_pix or samples.shape[2] != n_dist:
            problems.append(f"samples has shape {samples.shape}, expected ({n_pix}, n_samples, {n_dist})")
        if best.shape != (n_pix, n_dist):
            problems.append(f"best_fit has shape {best.shape}, expected ({n_pix}, {n_dist})")
        if problems:
            raise MapFileError(f"{path} is not a consistent Bayestar19 map file: " + "; ".join(problems))
        nsides = tuple(int(n) for n in np.unique(info.fields("nside")[()]))
        return Bayestar19FileInfo(path=path, dm_bin_edges=edges, n_pix=n_pix,
                                  n_samples=int(samples.shape[1]), nsides=nsides)


class Bayestar19Store(InMemoryStore):
    """Bayestar19 in RAM: float32 ``data`` (n_pix, 1 + n_samples, n_dist), slot 0 the best fit."""

    value_dtype = np.dtype(np.float32)
    slot0 = "best"
    flag_dtypes = (BAYESTAR_FLAGS_WITH_DISTANCE, BAYESTAR_FLAGS_WITHOUT_DISTANCE)


def load_bayestar19(info: Bayestar19FileInfo, *, n_samples: int | None = None,
                    progress: bool = True) -> Bayestar19Store:
    """Read a Bayestar19 file into RAM (the first ``n_samples`` samples; default all).

    The values go straight into the final float32 array, block by block. NaN reliable
    distance moduli become +inf (minimum) and -inf (maximum), as dustmaps does.
    """
    n_samples = info.n_samples if n_samples is None else int(n_samples)
    data = np.empty((info.n_pix, 1 + n_samples, info.n_dist), dtype=np.float32)
    try:
        with h5py.File(info.path, "r") as f:
            pix = f["pixel_info"][()]
            samples, best = f["samples"], f["best_fit"]
            step = max(1, (64 << 20) // max(1, (1 + n_samples) * info.n_dist * 4))
            blocks = [(a, min(a + step, info.n_pix)) for a in range(0, info.n_pix, step)]
            for a, b in tqdm(blocks, desc="Loading Bayestar19", unit="block", disable=not progress):
                best.read_direct(data, np.s_[a:b, :], np.s_[a:b, 0, :])
                if n_samples:
                    samples.read_direct(data, np.s_[a:b, :n_samples, :], np.s_[a:b, 1:, :])
    except OSError as exc:
        raise MapFileError(f"{info.path} could not be read completely (truncated or corrupt): {exc}") from exc
    dm_min = np.asarray(pix["DM_reliable_min"], dtype=np.float32).copy()
    dm_max = np.asarray(pix["DM_reliable_max"], dtype=np.float32).copy()
    dm_min[~np.isfinite(dm_min)] = np.inf
    dm_max[~np.isfinite(dm_max)] = -np.inf
    index = PixelIndex(np.asarray(pix["healpix_index"]).astype(np.int64),
                       np.asarray(pix["nside"]).astype(np.int64), sort=True)
    converged = np.asarray(pix["converged"]).astype(np.uint8)
    pixels = PixelArrays(index, dm_min, dm_max, converged, np.zeros(info.n_pix, dtype=np.uint8))
    logger.info("loaded %s: %d pixels at nsides %s, %d samples", info.path, info.n_pix,
                info.nsides, n_samples)
    return Bayestar19Store(info, data, pixels)
