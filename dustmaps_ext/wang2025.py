"""The parametric all-sky 3D dust map of Wang et al. (2025), as a :mod:`dustmaps` map.

Each nside-1024 HEALPix sightline stores a local bubble, a diffuse disk and up to four
clouds; E(B-V) is evaluated analytically at any distance, with the same numbers as the
authors' package dustmaps3d 2.2.13 (see ``docs/wang2025.rst``)::

    from astropy.coordinates import SkyCoord
    import astropy.units as u
    from dustmaps_ext.wang2025 import Wang2025Query

    q = Wang2025Query()
    c = SkyCoord(l=[30., 120.] * u.deg, b=[2., -5.] * u.deg, distance=[1.5, 3.] * u.kpc,
                 frame="galactic")
    ebv = q(c)                                   # E(B-V), mag, shape c.shape
    res = q.query(c, return_components=True)     # every quantity of the paper's §5

The released ``data_v3.fits`` is converted once (:func:`convert_table`) into a file that is
memory-mapped; queries then read only the records they need.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from dustmaps.map_base import DustMap

from ._coords import galactic_arrays
from ._core.parametric import (
    CLOUD_MIN_COLUMN,
    COMPONENT_FIELDS,
    N_CLOUDS,
    RECORD_FIELDS,
    RELEASE_MIN_POINTS,
    cloud_profiles,
    evaluate,
    parallel_slot,
)
from ._core.pixels import lb_to_ring
from ._io.fetchers import fetch_wang2025 as fetch
from ._io.files import missing_map_error
from ._io.wang2025 import (
    NSIDE,
    convert_table,
    default_fits_path,
    default_table_path,
    open_table,
    wang2025_dir,
)
from ._pickle import ReopenByPath

__all__ = ["Wang2025Query", "fetch", "convert_table", "default_table_path", "default_fits_path",
           "COMPONENT_DTYPE"]

logger = logging.getLogger(__name__)

#: dtype of the structured array returned by ``query(..., return_components=True)``.
COMPONENT_DTYPE = np.dtype([(name, dt) for name, dt in COMPONENT_FIELDS])


def _resolve_map(map_fname) -> Path:
    """The converted file to open, converting a FITS table first when needed."""
    if map_fname is None:
        converted = default_table_path()
        if converted.is_file():
            return converted
        fits_path = default_fits_path()
        if fits_path.is_file():
            logger.warning("converting %s once into %s (about a minute)", fits_path, converted)
            return convert_table(fits_path, converted, progress=False)
        raise missing_map_error("Wang et al. (2025) map", f" ({wang2025_dir()})",
                                "dustmaps_ext.wang2025", "dustmaps_ext.wang2025.fetch()",
                                "dustmaps-ext fetch wang2025")
    path = Path(map_fname)
    if path.suffix.lower() in (".fits", ".fit"):
        converted = path.with_name(path.stem + "_columns.h5")
        if not converted.is_file() or converted.stat().st_mtime < path.stat().st_mtime:
            logger.warning("converting %s once into %s", path, converted)
            convert_table(path, converted, progress=False)
        return converted
    return path


def _pixel_rows(l_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
    """Row (nside-1024 RING pixel) of each direction; -1 where l or b is not finite or
    |b| > 90. The same pixel as astropy-healpix (used by dustmaps3d) finds, boundaries
    included (see :func:`dustmaps_ext._core.pixels.lb_to_ring`)."""
    with parallel_slot(np.size(l_deg)) as parallel:
        return lb_to_ring(NSIDE, l_deg, b_deg, parallel=parallel)


def _as_structured(res: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(len(res["ebv"]), COMPONENT_DTYPE)
    for name in COMPONENT_DTYPE.names:
        out[name] = res[name]
    return out.reshape(shape)


class Wang2025Query(ReopenByPath, DustMap):
    """Query the parametric 3D dust map of Wang et al. (2025).

    Parameters
    ----------
    map_fname : str or path, optional
        A converted table (``.h5`` from :func:`convert_table`) or a released-format FITS
        table (converted once into ``<name>_columns.h5`` beside it). Default: the converted
        file in the dustmaps data directory, converting ``data_v3.fits`` there on first use.

    Raises
    ------
    FileNotFoundError
        If no map is found (the message says how to fetch it).
    ValueError
        If the table lacks columns or has the wrong number of rows.

    Notes
    -----
    Queries are thread-safe. Large queries use every core.
    """

    #: Bytes of records (from the first row) that large queries leave mapped between
    #: queries; the rest is dropped block by block. Bounds the peak RSS of any query to about
    #: this plus one block (~100 MB) plus the query's own arrays.
    resident_bytes = 512 * 2 ** 20

    def __init__(self, map_fname: str | os.PathLike | None = None):
        super().__init__()
        self._table = open_table(_resolve_map(map_fname))
        self._remember_init(map_fname=Path(self._table.path))

    def _release_block(self, first_row: int, stop_row: int) -> None:
        keep = self.resident_bytes // sum(r.strides[0] for r in self._table.records)
        if stop_row > keep:
            self._table.release(max(first_row, keep), stop_row)

    @property
    def map_fname(self) -> Path:
        """The converted table being read."""
        return self._table.path

    def release_memory(self) -> None:
        """Drop the table's pages from this process's resident set (they stay in the page
        cache, and later queries map them again). Large queries do this block by block;
        small ones keep the pages they touched mapped, so that repeating them is fast."""
        self._table.release(0, self._table.records[0].shape[0])

    # ----------------------------------------------------------------- coordinates

    def query(self, coords, return_components: bool = False):
        """E(B-V) at the given coordinates, or every quantity of the paper's §5.

        Parameters
        ----------
        coords : astropy.coordinates.SkyCoord
            Any frame and shape. With a distance, the map is evaluated there; without
            one, at each sightline's maximum reliable distance (as dustmaps3d does).
        return_components : bool
            Return a structured array (fields below) instead of E(B-V) alone.

        Returns
        -------
        ndarray
            E(B-V) in mag, shaped like ``coords``; or, with ``return_components``, a
            structured array shaped like ``coords`` with the fields

            - ``ebv`` (mag): E(B-V) from the Sun to the distance;
            - ``density`` (mag/kpc): dE(B-V)/dx there (the smooth bubble-edge step is
              left out, as in the paper and dustmaps3d);
            - ``sigma`` (mag): the fit's residual scatter for that distance range;
            - ``max_distance`` (kpc): the sightline's maximum reliable distance;
            - ``distance`` (kpc): the distance evaluated (``max_distance`` when none or
              NaN was given);
            - ``reliable`` (bool): 0 <= distance <= max_distance;
            - ``bubble_distance`` (kpc): distance of the Local Bubble's edge;
            - ``scale_height`` (kpc): the diffuse dust's scale height projected on the
              sightline, h / sin|b_lim| (the density falls by e over this distance);
            - ``n_clouds``: clouds on the sightline (components with column >= 0.001 mag);
            - ``in_cloud`` (bool): the point lies within a cloud, i.e. within half its
              size of its distance (if within several, the one with the highest density
              there is reported);
            - ``cloud_index``: that cloud's component number (1-4; 0 if none);
            - ``cloud_distance`` (kpc): its distance (where its density peaks,
              distance_k + 2 span_k + bubble in the table's terms);
            - ``cloud_size`` (kpc): its size along the sightline (span_k);
            - ``cloud_column`` (mag): its total E(B-V) (Cum_EBV_k).

            Cloud fields are NaN when ``in_cloud`` is False.

        Notes
        -----
        NaN or infinite coordinates, and negative or infinite distances, give NaN
        (``n_clouds`` = -1 where there is no sightline at all); dustmaps3d raises on NaN
        coordinates. A NaN distance means "no distance" (the maximum reliable distance),
        as in dustmaps3d.
        """
        flat = galactic_arrays(coords)
        return self._query_flat(flat.l_deg, flat.b_deg, flat.d_kpc, flat.shape, return_components)

    def query_lbd(self, l, b, d=None, return_components: bool = False):
        """Query with plain arrays, like ``dustmaps3d.dustmaps3d(l, b, d)``.

        Parameters
        ----------
        l, b : float or array_like
            Galactic longitude and latitude (deg).
        d : float or array_like, optional
            Distance (kpc); ``None`` or NaN: the maximum reliable distance.
        return_components : bool
            As in :meth:`query`.

        Returns
        -------
        ndarray
            As in :meth:`query`, with the broadcast shape of ``l``, ``b`` and ``d``.
        """
        arrays = [np.asarray(l, np.float64), np.asarray(b, np.float64)]
        if d is not None:
            arrays.append(np.asarray(d, np.float64))
        arrays = np.broadcast_arrays(*arrays)
        shape = arrays[0].shape
        flat = [a.ravel() for a in arrays]
        return self._query_flat(flat[0], flat[1], flat[2] if d is not None else None, shape,
                                return_components)

    def _query_flat(self, l_deg, b_deg, d_kpc, shape, return_components):
        rows = _pixel_rows(l_deg, b_deg)
        large = rows.size >= RELEASE_MIN_POINTS
        if large:
            self._table.advise(sequential=True)
        try:
            res = evaluate(self._table.records, rows, d_kpc, components=return_components,
                           release=self._release_block)
        finally:
            if large:
                self._table.advise(sequential=False)
        if return_components:
            out = _as_structured(res, shape)
        else:
            out = res.reshape(shape)
        return out[()] if shape == () else out

    # ----------------------------------------------------------------- sightlines

    def sightline_parameters(self, l: float, b: float) -> dict:
        """The table's parameters of the sightline through (l, b) (deg), by column name.

        Also holds the derived constants (``span_0``, ``centre_k``, ...) and ``row``, the
        sightline's nside-1024 RING pixel.
        """
        row = int(_pixel_rows(np.array([float(l)]), np.array([float(b)]))[0])
        if row < 0:
            raise ValueError(f"no sightline at l={l!r}, b={b!r} (need finite l and |b| <= 90)")
        out = {name: float(self._table.column(name)[row]) for name in RECORD_FIELDS}
        out["row"] = row
        return out

    def sightline_profile(self, l: float, b: float, distances=None) -> dict:
        """E(B-V) and density curves of one sightline, total and per component.

        Parameters
        ----------
        l, b : float
            Galactic longitude and latitude (deg).
        distances : array_like, optional
            Finite, non-negative distances (kpc). Default: 1000 steps from 0 to 1.2 times
            the maximum reliable distance.

        Returns
        -------
        dict
            ``distance`` (kpc, shape (n,)); ``ebv`` (mag), ``density`` (mag/kpc),
            ``sigma`` (mag), ``reliable`` (bool), shape (n,); ``diffuse_ebv``,
            ``diffuse_density`` (the bubble and diffuse disk), shape (n,);
            ``cloud_ebv``, ``cloud_density``, shape (n, 4), one column per component
            (``ebv`` is the sum of ``diffuse_ebv`` and the cloud columns); and the
            sightline's ``l``, ``b``, ``row``, ``max_distance``, ``bubble_distance``,
            ``scale_height`` (kpc), ``n_clouds`` and ``clouds``: one dict per component
            with ``index``, ``distance``, ``size`` (kpc), ``column`` (mag) and
            ``significant`` (column >= 0.001 mag).
        """
        par = self.sightline_parameters(l, b)
        row = par["row"]
        if distances is None:
            dmax = par["max_distance"]
            top = 1.2 * dmax if np.isfinite(dmax) and dmax > 0 else 10.0
            distances = np.linspace(0.0, top, 1000)
        x = np.asarray(distances, np.float64).ravel()
        if not np.all(np.isfinite(x)) or np.any(x < 0):
            raise ValueError("sightline_profile needs finite, non-negative distances")
        comp_ebv, comp_dens = cloud_profiles(self._table.records, row, x)
        total = evaluate(self._table.records, np.full(x.size, row, np.int64), x,
                         components=True)
        clouds = [{"index": k, "distance": par[f"centre_{k}"], "size": par[f"span_{k}"],
                   "column": par[f"Cum_EBV_{k}"],
                   "significant": bool(par[f"Cum_EBV_{k}"] >= CLOUD_MIN_COLUMN)}
                  for k in range(1, N_CLOUDS + 1)]
        return {
            "l": float(l), "b": float(b), "row": row, "distance": x,
            "ebv": total["ebv"], "density": total["density"], "sigma": total["sigma"],
            "reliable": total["reliable"],
            "diffuse_ebv": comp_ebv[:, 0], "diffuse_density": comp_dens[:, 0],
            "cloud_ebv": comp_ebv[:, 1:], "cloud_density": comp_dens[:, 1:],
            "max_distance": par["max_distance"], "bubble_distance": par["bubble"],
            "scale_height": par["span_0"], "n_clouds": sum(c["significant"] for c in clouds),
            "clouds": clouds,
        }
