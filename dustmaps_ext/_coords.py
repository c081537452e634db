"""SkyCoord in, plain arrays out, and answers back in the coordinates' shape.

Every query class of the package (DECaPS, Bayestar19, the combined map, Wang et al. 2025)
uses :func:`galactic_arrays` instead of dustmaps' ``ensure_flat_galactic`` decorator: it
reads Galactic l, b and the distance straight from the (transformed) coordinates without
building a second SkyCoord, and works for any frame and shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord, SphericalRepresentation, UnitSphericalRepresentation

__all__ = ["FlatCoords", "galactic_arrays", "restore_shape"]


@dataclass(frozen=True)
class FlatCoords:
    """Flat Galactic coordinates of a query and the shape to give the answers."""

    l_deg: np.ndarray
    b_deg: np.ndarray
    d_kpc: np.ndarray | None
    shape: tuple
    is_scalar: bool


def galactic_arrays(coords) -> FlatCoords:
    """Flatten any SkyCoord (any frame, shape, with or without distance) to Galactic arrays.

    Raises
    ------
    TypeError
        If ``coords`` is not an astropy SkyCoord (or coordinate frame).
    """
    if not isinstance(coords, SkyCoord):
        if hasattr(coords, "transform_to") and hasattr(coords, "represent_as"):
            coords = SkyCoord(coords)
        else:
            raise TypeError(f"coords must be an astropy.coordinates.SkyCoord; got {type(coords).__name__}")
    gal = coords if coords.frame.name == "galactic" else coords.transform_to("galactic")
    data = gal.data
    if not isinstance(data, (SphericalRepresentation, UnitSphericalRepresentation)):
        data = data.represent_as(SphericalRepresentation)
    l_deg = np.ravel(data.lon.to_value(u.deg)).astype(np.float64, copy=False)
    b_deg = np.ravel(data.lat.to_value(u.deg)).astype(np.float64, copy=False)
    d_kpc = None
    if isinstance(data, SphericalRepresentation) and data.distance.unit.physical_type == "length":
        d_kpc = np.ravel(data.distance.to_value(u.kpc)).astype(np.float64, copy=False)
        d_kpc = np.broadcast_to(d_kpc, l_deg.shape) if d_kpc.size == 1 else d_kpc
    return FlatCoords(l_deg, b_deg, d_kpc, tuple(coords.shape), bool(coords.isscalar))


def restore_shape(result, flat: FlatCoords):
    """Give every array of ``result`` (an array or a tuple of arrays) the coordinates' shape.

    The first axis (one entry per coordinate) becomes ``flat.shape``; a scalar coordinate
    drops it, as dustmaps does.
    """
    if isinstance(result, tuple):
        return tuple(restore_shape(r, flat) for r in result)
    if flat.is_scalar:
        return result[0]
    return result.reshape(flat.shape + result.shape[1:])
