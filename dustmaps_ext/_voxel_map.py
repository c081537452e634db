"""The DustMap base of the voxel maps (DECaPS, Bayestar19): SkyCoord in, answers out.

Subclasses set ``_store`` (see :mod:`dustmaps_ext._io.layouts`), ``_info`` (with
``dm_bin_edges``) and ``_valid_modes``, and document their own ``query``, which calls
:meth:`VoxelDustMap._answer`.
"""

from __future__ import annotations

import astropy.units as u
from dustmaps.map_base import DustMap

from ._coords import galactic_arrays, restore_shape
from ._core.voxel import query_voxels

__all__ = ["VoxelDustMap"]


class VoxelDustMap(DustMap):
    """A map of cumulative reddening in HEALPix pixels x distance-modulus bins."""

    _store = None
    _info = None
    _valid_modes: tuple = ()

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
