"""The DustMap base of the voxel maps (DECaPS, Bayestar19): SkyCoord in, answers out.

Subclasses set ``_store`` (a :class:`~dustmaps_ext._core.voxel.VoxelStore`), ``_info``
(with ``dm_bin_edges``) and ``_valid_modes``, and document their own ``query``, which calls
:meth:`VoxelDustMap._answer`. Other maps built on these (the combined map) read them
through the properties :attr:`~VoxelDustMap.store` and :attr:`~VoxelDustMap.valid_modes`.
"""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from dustmaps.map_base import DustMap

from ._coords import galactic_arrays, restore_shape
from ._core.voxel import VoxelStore, query_voxels

__all__ = ["VoxelDustMap", "check_max_samples"]


def check_max_samples(max_samples, available: int, path) -> int:
    """``max_samples`` as an int in ``[1, available]`` (``available`` when None).

    Raises
    ------
    TypeError
        If it is not an integer.
    ValueError
        If it is out of range (the message names the file and its samples).
    """
    if max_samples is None:
        return int(available)
    if isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)):
        raise TypeError(f"max_samples must be an integer; got {max_samples!r}")
    if not 1 <= max_samples <= available:
        raise ValueError(f"max_samples must be between 1 and {available} (the samples in "
                         f"{path.name}); got {max_samples}")
    return int(max_samples)


class VoxelDustMap(DustMap):
    """A map of cumulative reddening in HEALPix pixels x distance-modulus bins."""

    _store: VoxelStore | None = None
    _info = None
    _valid_modes: tuple = ()

    @property
    def map_fname(self) -> Path:
        """The file this object reads."""
        return self._info.path

    @property
    def store(self) -> VoxelStore:
        """The store that holds the map's values and pixel information."""
        return self._store

    @property
    def valid_modes(self) -> tuple:
        """The query modes this map answers."""
        return tuple(self._valid_modes)

    def _answer(self, coords, mode, return_flags, pct, rng):
        """Flatten ``coords``, run the array core and give the answers the coordinates' shape."""
        flat = galactic_arrays(coords)
        result = query_voxels(self._store, flat.l_deg, flat.b_deg, flat.d_kpc, mode=mode,
                              valid_modes=self._valid_modes, pct=pct,
                              return_flags=return_flags, rng=rng)
        return restore_shape(result, flat)

    @property
    def distmods(self) -> u.Quantity:
        """Distance-modulus edges of the map (mag)."""
        return self._info.dm_bin_edges * u.mag

    @property
    def distances(self) -> u.Quantity:
        """Distances (kpc) of the distance-modulus edges."""
        return 10.0 ** (0.2 * self._info.dm_bin_edges - 2.0) * u.kpc
