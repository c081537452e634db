"""Star catalogs for the parametric build: reading Parquet, FITS, HDF5, CSV or ECSV, checking them.

A catalog holds, per star, the Galactic position, the E(B-V) measurement with its error and
the distance with its lower and upper errors (the 68% interval below and above the
estimate), which the weights of Wang et al. (2025, eq. 10-14) use. Canonical column names:

=================== ======  ==============================================
``l``, ``b``        deg     Galactic longitude and latitude
``ebv``             mag     measured E(B-V)
``ebv_err``         mag     its 1-sigma error (> 0)
``distance``        kpc     distance estimate (> 0)
``distance_err_lo`` kpc     distance minus the lower 68% bound (>= 0)
``distance_err_hi`` kpc     the upper 68% bound minus distance (>= 0)
=================== ======  ==============================================

Files with other names are read through ``column_map`` (canonical name -> file name).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = ["CATALOG_COLUMNS", "CATALOG_FORMATS", "StarCatalog", "read_catalog", "write_catalog"]

logger = logging.getLogger(__name__)

#: Canonical column names of a star catalog.
CATALOG_COLUMNS = ("l", "b", "ebv", "ebv_err", "distance", "distance_err_lo", "distance_err_hi")

_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".fits": "fits", ".fit": "fits",
             ".fits.gz": "fits", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5",
             ".csv": "csv", ".csv.gz": "csv", ".ecsv": "ecsv", ".ecsv.gz": "ecsv"}
#: Catalog formats that :func:`read_catalog` and :func:`write_catalog` handle.
CATALOG_FORMATS = ("parquet", "fits", "hdf5", "csv", "ecsv")
_FORMAT_HINT = ("name it with format= (Python) or --format (build-parametric): one of "
                + ", ".join(CATALOG_FORMATS))


@dataclass(frozen=True)
class StarCatalog:
    """Validated star measurements, one float64 array per :data:`CATALOG_COLUMNS` entry.

    Build one with :meth:`from_arrays` (checks and drops unusable rows) or
    :func:`read_catalog`.
    """

    l: np.ndarray
    b: np.ndarray
    ebv: np.ndarray
    ebv_err: np.ndarray
    distance: np.ndarray
    distance_err_lo: np.ndarray
    distance_err_hi: np.ndarray

    def __len__(self) -> int:
        return int(self.l.size)

    @classmethod
    def from_arrays(cls, columns: Mapping[str, np.ndarray], *, source: str = "catalog",
                    drop_invalid: bool = True) -> "StarCatalog":
        """Check and convert columns into a catalog.

        Parameters
        ----------
        columns : mapping of str to array_like
            Every name of :data:`CATALOG_COLUMNS`, all 1-D of the same length; other keys
            are ignored.
        source : str
            Name used in error messages (e.g. the file path).
        drop_invalid : bool
            Drop rows with non-finite values, ``|b| > 90``, ``ebv_err <= 0``,
            ``distance <= 0`` or negative distance errors, with a warning saying how many;
            if False, such rows raise a ValueError.

        Raises
        ------
        ValueError
            Missing columns, mismatched lengths, non-numeric data, or invalid rows when
            ``drop_invalid`` is False.
        """
        missing = [c for c in CATALOG_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"{source}: missing column(s) {missing}; a star catalog needs "
                             f"{list(CATALOG_COLUMNS)} (use column_map to rename)")
        arrays = {}
        for c in CATALOG_COLUMNS:
            a = np.asarray(columns[c])
            if a.ndim != 1:
                raise ValueError(f"{source}: column {c!r} must be 1-D, got shape {a.shape}")
            if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
                raise TypeError(f"{source}: column {c!r} must be numeric, got {a.dtype}")
            arrays[c] = np.ascontiguousarray(a, dtype=np.float64)
        sizes = {c: a.size for c, a in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"{source}: columns have different lengths {sizes}")
        good = np.ones(arrays["l"].size, dtype=bool)
        for a in arrays.values():
            good &= np.isfinite(a)
        with np.errstate(invalid="ignore"):
            good &= np.abs(arrays["b"]) <= 90.0
            good &= arrays["ebv_err"] > 0.0
            good &= arrays["distance"] > 0.0
            good &= arrays["distance_err_lo"] >= 0.0
            good &= arrays["distance_err_hi"] >= 0.0
        n_bad = int(good.size - good.sum())
        if n_bad:
            if not drop_invalid:
                raise ValueError(f"{source}: {n_bad} row(s) have non-finite or out-of-range values")
            warnings.warn(f"{source}: dropped {n_bad} of {good.size} stars with non-finite or "
                          "out-of-range values (|b| > 90, ebv_err <= 0, distance <= 0 or "
                          "negative distance errors)", RuntimeWarning, stacklevel=2)
            arrays = {c: a[good] for c, a in arrays.items()}
        arrays["l"] = np.mod(arrays["l"], 360.0)
        return cls(**arrays)

    def as_dict(self) -> dict[str, np.ndarray]:
        """The columns as a dict (the arrays themselves, not copies)."""
        return {c: getattr(self, c) for c in CATALOG_COLUMNS}

    def take(self, index) -> "StarCatalog":
        """A catalog with the rows selected by ``index`` (integer or boolean array)."""
        return StarCatalog(**{c: getattr(self, c)[index] for c in CATALOG_COLUMNS})


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in CATALOG_FORMATS:
            raise ValueError(f"unknown catalog format {fmt!r}; {_FORMAT_HINT}")
        return fmt
    name = path.name.lower()
    for suffix, kind in sorted(_SUFFIXES.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return kind
    raise ValueError(f"{path}: cannot tell the catalog format from the file name (known "
                     f"suffixes: {', '.join(sorted(_SUFFIXES))}); {_FORMAT_HINT}")


def read_catalog(path: str | Path, *, column_map: Mapping[str, str] | None = None,
                 format: str | None = None, hdf5_group: str = "/",
                 drop_invalid: bool = True) -> StarCatalog:
    """Read a star catalog from Parquet, FITS (first table HDU), HDF5, CSV or ECSV.

    Parameters
    ----------
    path : str or Path
        The file. The format follows the suffix (``.parquet``/``.pq``, ``.fits``/``.fit``/
        ``.fits.gz``, ``.h5``/``.hdf5``, ``.csv``/``.csv.gz`` (comma-separated, a header
        line of column names), ``.ecsv``) unless ``format`` is given.
    column_map : mapping, optional
        Canonical name -> name in the file, for the columns named differently.
    format : {'parquet', 'fits', 'hdf5', 'csv', 'ecsv'}, optional
        Override the format guessed from the suffix.
    hdf5_group : str
        HDF5 group holding one 1-D dataset per column.
    drop_invalid : bool
        See :meth:`StarCatalog.from_arrays`.

    Returns
    -------
    StarCatalog

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Unknown format, missing columns (named in the message) or invalid values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"star catalog not found: {path}")
    kind = _format_of(path, format)
    names = {c: (column_map or {}).get(c, c) for c in CATALOG_COLUMNS}
    unknown = set(column_map or {}) - set(CATALOG_COLUMNS)
    if unknown:
        raise ValueError(f"column_map has unknown canonical name(s) {sorted(unknown)}")
    if kind == "parquet":
        import pyarrow.parquet as pq

        available = set(pq.read_schema(path).names)
        _require(path, names, available)
        table = pq.read_table(path, columns=list(names.values()))
        raw = {c: table.column(n).to_numpy() for c, n in names.items()}
    elif kind == "fits":
        from astropy.io import fits

        with fits.open(path, memmap=False) as hdul:
            hdu = next((h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU))),
                       None)
            if hdu is None:
                raise ValueError(f"{path}: no table HDU in this FITS file")
            _require(path, names, set(hdu.columns.names))
            raw = {c: np.array(hdu.data[n]) for c, n in names.items()}
    elif kind == "csv":
        import pyarrow.csv as pacsv

        try:
            table = pacsv.read_csv(path)
        except Exception as exc:  # pyarrow's ArrowInvalid and friends
            raise ValueError(f"{path}: not a readable CSV table ({exc})") from exc
        _require(path, names, set(table.column_names))
        raw = {c: _numeric_column(path, n, table.column(n).to_numpy()) for c, n in names.items()}
    elif kind == "ecsv":
        from astropy.table import Table

        try:
            table = Table.read(path, format="ascii.ecsv")
        except Exception as exc:  # astropy raises several types for malformed files
            raise ValueError(f"{path}: not a readable ECSV table ({exc})") from exc
        _require(path, names, set(table.colnames))
        raw = {c: np.asarray(table[n]) for c, n in names.items()}
    else:
        import h5py

        with h5py.File(path, "r") as f:
            if hdf5_group not in f:
                raise ValueError(f"{path}: no HDF5 group {hdf5_group!r}")
            group = f[hdf5_group]
            _require(path, names, set(group.keys()))
            raw = {c: group[n][()] for c, n in names.items()}
    logger.info("read %d stars from %s", len(raw["l"]), path)
    return StarCatalog.from_arrays(raw, source=str(path), drop_invalid=drop_invalid)


def _numeric_column(path: Path, name: str, values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "O":  # missing values or text in a numeric column
        try:
            return np.array([np.nan if v is None else float(v) for v in values])
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{path}: column {name!r} must be numeric ({exc})") from exc
    return values


def _require(path: Path, names: Mapping[str, str], available: set) -> None:
    missing = [f"{n!r}" + ("" if n == c else f" (for {c!r})")
               for c, n in names.items() if n not in available]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; found "
                         f"{sorted(available)}")


def write_catalog(catalog: StarCatalog, path: str | Path, *, format: str | None = None,
                  overwrite: bool = False) -> Path:
    """Write a catalog with the canonical column names (Parquet, FITS, HDF5, CSV or ECSV
    by suffix, or ``format``)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    kind = _format_of(path, format)
    cols = catalog.as_dict()
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(cols), path)
    elif kind == "fits":
        from astropy.table import Table

        Table(cols).write(path, format="fits", overwrite=True)
    elif kind in ("csv", "ecsv"):
        from astropy.table import Table

        Table(cols).write(path, format="ascii.csv" if kind == "csv" else "ascii.ecsv",
                          overwrite=True)
    else:
        import h5py

        with h5py.File(path, "w") as f:
            for c, a in cols.items():
                f.create_dataset(c, data=a)
    return path
