"""Add reddening and band extinctions to a catalogue: tables, data frames, Dask, lsdb.

:func:`add_extinction` takes an astropy Table, a pandas DataFrame, a Dask DataFrame or an
lsdb Catalog and returns the same kind of object with new columns: ``ebv`` (the query
object's own answer, float32 by default) and, for each requested band, ``A_<band>``
(see :mod:`dustmaps_ext.extinction`). In-memory inputs are answered in chunks of rows, so
the extra memory is bounded by the chunk size, not by the catalogue. Dask and lsdb inputs
give a lazy result with one task per partition; the query object travels to the workers
by file path (it pickles to its path and options and reopens its map there).

Input columns
    Positions: ``ra``/``dec`` (deg, ICRS) if both are present, else ``l``/``b`` (deg,
    Galactic). Distances: ``distance`` (kpc) if present, else ``parallax`` (mas), turned
    into ``1 / parallax`` kpc for ``parallax > 0``; rows whose parallax is zero, negative
    or NaN (or whose distance is negative, infinite or NaN) get NaN in every new column
    (and False flags), never a number. Columns with astropy units are converted to these
    units. Every name can be changed (``ra_col``, ``dec_col``, ``l_col``, ``b_col``,
    ``distance_col``, ``parallax_col``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .extinction import DEFAULT_R_V, bayestar19_coefficient, extinction_coefficient

__all__ = ["CatalogOptions", "add_extinction", "extinction_columns", "parallax_to_distance"]

#: Rows answered at once for in-memory inputs (bounds the temporary arrays).
DEFAULT_CHUNK_ROWS = 500_000
_ALLOWED_MODES = ("mean", "median", "percentile", "random_sample", "random_sample_per_pix", "best")


def parallax_to_distance(parallax_mas) -> np.ndarray:
    """Distance (kpc) ``1 / parallax`` (mas) for ``parallax > 0``; NaN otherwise.

    Zero, negative and NaN parallaxes give NaN: their inverse is not a distance.
    """
    p = np.asarray(parallax_mas, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, 1.0 / p, np.nan)


@dataclass(frozen=True)
class CatalogOptions:
    """What :func:`add_extinction` computes and from which columns (checked on creation)."""

    bands: tuple = ()
    r_v: Any = DEFAULT_R_V
    mode: str = "mean"
    pct: Any = None
    flags: bool = False
    dtype: Any = np.float32
    ra_col: str = "ra"
    dec_col: str = "dec"
    l_col: str = "l"
    b_col: str = "b"
    distance_col: str = "distance"
    parallax_col: str = "parallax"
    ebv_col: str = "ebv"
    band_prefix: str = "A_"
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    seed: int | None = None
    _suffixes: tuple = field(default=("",), repr=False)

    def __post_init__(self):
        if isinstance(self.bands, str):
            object.__setattr__(self, "bands", (self.bands,))
        object.__setattr__(self, "bands", tuple(self.bands))
        if self.mode not in _ALLOWED_MODES:
            raise ValueError(f"mode must be one of {', '.join(_ALLOWED_MODES)} for a catalogue "
                             f"column; got {self.mode!r} ('samples' has no single column: use "
                             "mode='percentile' with pct=[...] for a spread)")
        dt = np.dtype(self.dtype)
        if dt.kind != "f":
            raise ValueError(f"dtype must be a floating type; got {dt}")
        object.__setattr__(self, "dtype", dt)
        if self.mode == "percentile":
            if self.pct is None:
                raise ValueError("mode='percentile' needs pct (a number or a list of numbers)")
            pcts = np.atleast_1d(np.asarray(self.pct, dtype=np.float64))
            if np.ndim(self.pct) == 0:
                suffixes = ("",)
            else:
                suffixes = tuple(f"_p{p:g}".replace(".", "_") for p in pcts)
            object.__setattr__(self, "_suffixes", suffixes)
        elif self.pct is not None:
            raise ValueError(f"pct is only used with mode='percentile'; got mode={self.mode!r}")
        if isinstance(self.chunk_rows, bool) or int(self.chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be a positive integer; got {self.chunk_rows!r}")

    @property
    def value_columns(self) -> list[str]:
        """Names of the float columns added (flags not included)."""
        names = [self.ebv_col + s for s in self._suffixes]
        for band in self.bands:
            names += [f"{self.band_prefix}{band}{s}" for s in self._suffixes]
        return names


def _coefficients(query, opts: CatalogOptions, r_v_values) -> list:
    """One coefficient (float or per-row array) per band, on the query's reddening scale."""
    from .bayestar import Bayestar19Query

    if isinstance(query, Bayestar19Query):
        return [bayestar19_coefficient(b) for b in opts.bands]
    return [extinction_coefficient(b, r_v_values) for b in opts.bands]


def _float_column(columns: Mapping[str, Any], name: str, unit: str) -> np.ndarray:
    col = columns[name]
    col_unit = getattr(col, "unit", None)
    if col_unit is not None and str(col_unit) not in ("", "None"):
        import astropy.units as u

        values = u.Quantity(col, copy=False)
        try:
            return np.asarray(values.to_value(unit), dtype=np.float64)
        except u.UnitConversionError as exc:
            raise ValueError(f"column {name!r} has unit {col_unit}, which is not convertible "
                             f"to {unit}") from exc
    if hasattr(col, "to_numpy"):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    arr = np.ma.filled(np.ma.asarray(col, dtype=np.float64), np.nan) if np.ma.isMaskedArray(col) \
        else np.asarray(col, dtype=np.float64)
    return arr


def _positions(columns: Mapping[str, Any], opts: CatalogOptions):
    """Frame (``'icrs'`` or ``'galactic'``), longitude and latitude (deg) and distance (kpc)
    of the rows, from whichever columns exist."""
    names = set(columns.keys())
    if opts.ra_col in names and opts.dec_col in names:
        frame = "icrs"
        lon = _float_column(columns, opts.ra_col, "deg")
        lat = _float_column(columns, opts.dec_col, "deg")
    elif opts.l_col in names and opts.b_col in names:
        frame = "galactic"
        lon = _float_column(columns, opts.l_col, "deg")
        lat = _float_column(columns, opts.b_col, "deg")
    else:
        raise ValueError(f"no positions: the input needs columns {opts.ra_col!r} and "
                         f"{opts.dec_col!r} (ICRS, deg) or {opts.l_col!r} and {opts.b_col!r} "
                         f"(Galactic, deg); it has {sorted(names)}")
    if opts.distance_col in names:
        d_kpc = _float_column(columns, opts.distance_col, "kpc")
    elif opts.parallax_col in names:
        d_kpc = parallax_to_distance(_float_column(columns, opts.parallax_col, "mas"))
    else:
        raise ValueError(f"no distances: the input needs a column {opts.distance_col!r} (kpc) "
                         f"or {opts.parallax_col!r} (mas); it has {sorted(names)}")
    return frame, lon, lat, d_kpc


def _ask(query, frame: str, lon, lat, d_kpc, opts: CatalogOptions, rng):
    """The query object's answer (values, flag fields dict or None) at plain arrays."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    from .wang2025 import Wang2025Query

    if isinstance(query, Wang2025Query):
        if frame == "galactic":
            l_deg, b_deg = lon, lat
        else:
            gal = SkyCoord(lon * u.deg, lat * u.deg, frame=frame).galactic
            l_deg, b_deg = gal.l.deg, gal.b.deg
        if opts.mode != "mean":
            raise ValueError("the Wang et al. (2025) map has one value per point: use mode='mean'")
        if not opts.flags:
            return query.query_lbd(l_deg, b_deg, d_kpc), None
        comp = query.query_lbd(l_deg, b_deg, d_kpc, return_components=True)
        return comp["ebv"], {"reliable": comp["reliable"], "sigma": comp["sigma"]}
    # one SkyCoord in the input's frame: the query object makes its own Galactic arrays
    coords = SkyCoord(lon * u.deg, lat * u.deg, distance=d_kpc * u.kpc, frame=frame)
    kwargs = {"mode": opts.mode, "return_flags": opts.flags}
    if opts.mode == "percentile":
        kwargs["pct"] = opts.pct
    if opts.mode.startswith("random"):
        kwargs["rng"] = rng
    out = query.query(coords, **kwargs)
    if not opts.flags:
        return out, None
    values, flags = out
    return values, {name: flags[name] for name in flags.dtype.names}


def extinction_columns(columns: Mapping[str, Any], query, opts: CatalogOptions | None = None,
                       **options) -> dict[str, np.ndarray]:
    """The new columns for one block of rows, as plain numpy arrays.

    Parameters
    ----------
    columns : mapping of str to array_like
        The input columns (an astropy Table, a pandas DataFrame or a dict of arrays).
    query : DustMap
        A query object of this package.
    opts : CatalogOptions, optional
        What to compute; or give its fields as keyword arguments.

    Returns
    -------
    dict of str to numpy.ndarray
        ``ebv`` (or ``ebv_p16``, ... for a list of percentiles), ``A_<band>`` and, with
        flags, ``ebv_<flag>`` columns, in that order.
    """
    opts = opts if opts is not None else CatalogOptions(**options)
    frame, lon, lat, d_kpc = _positions(columns, opts)
    n = lon.size
    usable = np.isfinite(d_kpc) & (d_kpc >= 0)
    # rows without a usable distance are asked at 1 kpc and blanked afterwards: no map
    # answers them (the Wang map would read a NaN distance as its maximum distance)
    d_query = np.where(usable, d_kpc, 1.0)
    if isinstance(opts.r_v, str):
        r_v = _float_column(columns, opts.r_v, "")
    else:
        r_v = opts.r_v
    rng = np.random.default_rng(opts.seed) if opts.mode.startswith("random") else None
    if n:
        values, flag_fields = _ask(query, frame, lon, lat, d_query, opts, rng)
    else:
        values, flag_fields = np.empty(0), None
    ebv = np.asarray(values, dtype=np.float64).reshape(n, len(opts._suffixes))
    ebv[~usable] = np.nan
    out = {}
    for k, suffix in enumerate(opts._suffixes):
        out[opts.ebv_col + suffix] = ebv[:, k].astype(opts.dtype)
    for band, coef in zip(opts.bands, _coefficients(query, opts, r_v)):
        coef = np.asarray(coef, dtype=np.float64)
        for k, suffix in enumerate(opts._suffixes):
            out[f"{opts.band_prefix}{band}{suffix}"] = (coef * ebv[:, k]).astype(opts.dtype)
    if opts.flags:
        if flag_fields is None:  # zero rows: ask one point for the flag names and types
            _, flag_fields = _ask(query, "galactic", np.zeros(1), np.zeros(1), np.ones(1), opts, rng)
            flag_fields = {k: v[:0] for k, v in flag_fields.items()}
        for name, arr in flag_fields.items():
            arr = np.array(arr)
            if arr.dtype.kind == "b":
                arr[~usable] = False
            elif arr.dtype.kind == "f":
                arr[~usable] = np.nan
            out[f"{opts.ebv_col}_{name}"] = arr
    return out


def _chunked_columns(columns, n_rows: int, query, opts: CatalogOptions,
                     on_chunk=None) -> dict[str, np.ndarray]:
    """:func:`extinction_columns` over blocks of ``opts.chunk_rows`` rows, into full arrays;
    ``on_chunk(n)`` (a progress bar's ``update``) is called after each block."""
    out: dict[str, np.ndarray] = {}
    for start in range(0, max(n_rows, 1), opts.chunk_rows):
        stop = min(start + opts.chunk_rows, n_rows)
        block = {name: columns[name][start:stop] for name in _needed(columns, opts)}
        part = extinction_columns(block, query, opts)
        for name, arr in part.items():
            if name not in out:
                out[name] = np.empty((n_rows,) + arr.shape[1:], dtype=arr.dtype)
            out[name][start:stop] = arr
        if on_chunk is not None:
            on_chunk(stop - start)
    return out


def _needed(columns, opts: CatalogOptions) -> list[str]:
    wanted = {opts.ra_col, opts.dec_col, opts.l_col, opts.b_col, opts.distance_col,
              opts.parallax_col}
    if isinstance(opts.r_v, str):
        wanted.add(opts.r_v)
    # .keys(): the column names of a Table, a DataFrame and a dict alike (iterating a Table
    # gives its rows)
    return [name for name in columns.keys() if name in wanted]  # noqa: SIM118


def _add_to_pandas(frame, query, opts: CatalogOptions):
    """One pandas partition in, the same partition with the new columns out."""
    new = _chunked_columns(frame, len(frame), query, opts)
    out = frame.copy(deep=False)
    for name, arr in new.items():
        out[name] = arr
    return out


def _meta_of(meta_frame, query, opts: CatalogOptions):
    """The empty frame with the output's columns and dtypes (for Dask and lsdb)."""
    return _add_to_pandas(meta_frame.iloc[:0], query, opts)


def add_extinction(data, query, *, bands: Sequence[str] = (), r_v=DEFAULT_R_V,
                   mode: str = "mean", pct=None, flags: bool = False, dtype=np.float32,
                   ra_col: str = "ra", dec_col: str = "dec", l_col: str = "l", b_col: str = "b",
                   distance_col: str = "distance", parallax_col: str = "parallax",
                   ebv_col: str = "ebv", band_prefix: str = "A_",
                   chunk_rows: int = DEFAULT_CHUNK_ROWS, seed: int | None = None):
    """Add E(B-V) and band extinctions to a catalogue.

    Parameters
    ----------
    data : astropy.table.Table, pandas.DataFrame, dask.dataframe.DataFrame or lsdb.Catalog
        The catalogue (see the module for the input columns).
    query : DustMap
        A query object of this package: :class:`~dustmaps_ext.decaps.DECaPSQuery`,
        :class:`~dustmaps_ext.decaps.DECaPSQueryLite`,
        :class:`~dustmaps_ext.bayestar.Bayestar19Query`,
        :class:`~dustmaps_ext.combined.BayestarDECaPSQuery` or
        :class:`~dustmaps_ext.wang2025.Wang2025Query`.
    bands : sequence of str
        Bands for ``A_<band>`` columns: :data:`~dustmaps_ext.extinction.DECAPS_BANDS`
        (coefficients ``R_V (R + R_V R')`` of Zucker et al. 2025, Table 2), or for a
        Bayestar19Query :data:`~dustmaps_ext.extinction.BAYESTAR19_BANDS` (Green et al.
        2019, Table 1).
    r_v : float or str
        R_V of the DECaPS-band coefficients, or the name of a column holding one per star.
    mode : str
        The query mode: ``'mean'`` (default), ``'median'``, ``'percentile'`` (with
        ``pct``), ``'random_sample'``, ``'random_sample_per_pix'`` or ``'best'``, where the
        map offers it.
    pct : float or sequence of float
        Percentile(s) for ``mode='percentile'``; a list gives columns ``ebv_p16``,
        ``A_decam_g_p16``, ... per percentile.
    flags : bool
        Add the map's flags as ``ebv_<flag>`` columns (DECaPS: ``converged``,
        ``infilled``, ``reliable_dist``; the combined map adds ``source``; Wang et al.:
        ``reliable`` and ``sigma``).
    dtype : numpy dtype
        Type of the value columns: float32 (default). DECaPS answers in float16, which
        many readers (TOPCAT/STILTS among them) cannot read; float16 only if asked.
    ra_col, dec_col, l_col, b_col, distance_col, parallax_col : str
        Input column names.
    ebv_col, band_prefix : str
        Output names: ``ebv_col`` and ``band_prefix + band``.
    chunk_rows : int
        Rows answered at once (bounds the temporary memory).
    seed : int, optional
        Seed of the random modes (each chunk and partition draws from ``seed``).

    Returns
    -------
    Same kind as ``data``
        A new table or frame (the input is left unchanged) with the new columns; for Dask
        and lsdb a lazy object with one task per partition.

    Raises
    ------
    ValueError
        For missing columns, an unknown band (listing the valid ones) or bad options.
    TypeError
        For an input of another kind.

    Examples
    --------
    >>> import pandas as pd
    >>> from dustmaps_ext._demo import demo_map_path
    >>> from dustmaps_ext.decaps import DECaPSQuery
    >>> from dustmaps_ext.catalog import add_extinction
    >>> stars = pd.DataFrame({"l": [300.0, 300.0, 90.0], "b": [1.0, 1.0, 0.0],
    ...                       "parallax": [0.5, -0.1, 0.5]})
    >>> out = add_extinction(stars, DECaPSQuery(demo_map_path(), progress=False),
    ...                      bands=["decam_g"])
    >>> list(out.columns)
    ['l', 'b', 'parallax', 'ebv', 'A_decam_g']
    >>> str(out["ebv"].dtype)
    'float32'
    >>> out["ebv"].isna().tolist()  # negative parallax; outside the map
    [False, True, True]
    """
    opts = CatalogOptions(bands=bands, r_v=r_v, mode=mode, pct=pct, flags=flags, dtype=dtype,
                          ra_col=ra_col, dec_col=dec_col, l_col=l_col, b_col=b_col,
                          distance_col=distance_col, parallax_col=parallax_col, ebv_col=ebv_col,
                          band_prefix=band_prefix, chunk_rows=chunk_rows, seed=seed)
    if opts.bands:  # check the band names before any work
        _coefficients(query, opts, DEFAULT_R_V)
    kind = type(data).__module__.split(".")[0]
    if kind == "lsdb":
        meta = _meta_of(data.meta, query, opts)
        return data.map_partitions(_add_to_pandas, query, opts, meta=meta)
    if kind == "dask":
        meta = _meta_of(data._meta, query, opts)
        return data.map_partitions(_add_to_pandas, query, opts, meta=meta)
    if kind == "pandas" and hasattr(data, "columns"):
        return _add_to_pandas(data, query, opts)
    from astropy.table import Table

    if isinstance(data, Table):
        new = _chunked_columns(data, len(data), query, opts)
        out = data.copy(copy_data=False)
        for name, arr in new.items():
            out[name] = arr
        return out
    raise TypeError("data must be an astropy Table, a pandas DataFrame, a Dask DataFrame or an "
                    f"lsdb Catalog; got {type(data).__name__}")
