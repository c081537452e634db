"""Stores shared by every voxel format: per-pixel arrays and a whole map in RAM.

:class:`PixelArrays` holds a map's pixel index and per-pixel flags (in RAM or as views of a
memory map); :class:`InMemoryStore` holds a whole map in RAM, with the slot convention of
:class:`~dustmaps_ext._core.voxel.VoxelStore`. The DECaPS format
(:mod:`dustmaps_ext._io.decaps`) uses both and adds its file-backed stores; Bayestar19
(:mod:`dustmaps_ext._io.bayestar19`) subclasses :class:`InMemoryStore`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._core.pixels import PixelIndex
from .._core.voxel import PixelTable, VoxelStore, VoxelStoreInfo

__all__ = ["PixelArrays", "InMemoryStore"]


@dataclass
class PixelArrays(PixelTable):
    """Per-pixel arrays of a map (in RAM or memory-mapped)."""

    index: PixelIndex
    dm_reliable_min: np.ndarray
    dm_reliable_max: np.ndarray
    converged: np.ndarray
    infilled: np.ndarray

    def flags(self, rows: np.ndarray) -> dict:
        """converged, infilled (bool) and reliable-distance bounds (float32) of each row.

        Rows of -1 give False and NaN.
        """
        inside = rows >= 0
        safe = np.where(inside, rows, 0)
        return {
            "converged": (self.converged[safe] != 0) & inside,
            "infilled": (self.infilled[safe] != 0) & inside,
            "dm_min": np.where(inside, self.dm_reliable_min[safe], np.float32(np.nan)),
            "dm_max": np.where(inside, self.dm_reliable_max[safe], np.float32(np.nan)),
        }


class InMemoryStore(VoxelStore):
    """A whole map in RAM: ``data`` (n_pix, n_slots, n_dist) uint16 and its pixel arrays."""

    chunk_coords = None  # answer any number of coordinates at once

    def __init__(self, info: VoxelStoreInfo, data: np.ndarray, pixels: PixelArrays) -> None:
        self.info = info
        self.data = data
        self.pixels = pixels
        self.n_samples = data.shape[1] - 1

    def data_for(self, rows: np.ndarray, want_samples: bool):
        return self.data, rows

    def release(self) -> None:
        """Nothing to release."""

    @property
    def nbytes(self) -> int:
        p = self.pixels
        return int(self.data.nbytes + p.index._starts.nbytes + p.dm_reliable_min.nbytes
                   + p.dm_reliable_max.nbytes + p.converged.nbytes + p.infilled.nbytes
                   + p.index._coarse_start.nbytes)
