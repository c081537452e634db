"""The memory-mapped layout of the Wang et al. (2025) parametric table.

The release (``data_v3.fits``, ~1 GB of float32 columns) is converted once into an HDF5
file holding two contiguous, unfiltered, 64 KiB-aligned 2D datasets, one row per nside-1024
RING pixel (12,582,912 rows): ``ebv_records`` (the 24 columns of
:data:`~dustmaps_ext._core.parametric.EBV_FIELDS`, all that E(B-V) and the density need:
one 96-byte record per point) and ``aux_records`` (the 18 others: sigmas, cloud columns,
the remaining table columns). Together they hold the table's 21 columns and the 21
per-sightline constants of :func:`dustmaps_ext._core.parametric.derive_constants`. Their
byte offsets come from h5py and the records are read through one read-only ``mmap`` of the
file: opening is instant and only the pages a query touches are read. The file is written
under a temporary name, marked complete, and moved into place with :func:`os.replace`.
"""

from __future__ import annotations

import logging
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._core.parametric import (AUX_FIELDS, EBV_FIELDS, TABLE_COLUMNS, build_records,
                                record_column, record_dtype)

__all__ = ["NSIDE", "NROWS", "FORMAT_NAME", "FORMAT_VERSION", "ParametricTable",
           "convert_fits_table", "open_table", "validate_columns"]

logger = logging.getLogger(__name__)

#: HEALPix resolution and ordering of the released table.
NSIDE = 1024
#: Rows of the released table: one per nside-1024 RING pixel.
NROWS = 12 * NSIDE ** 2
#: ``format`` attribute of a converted file and its version.
FORMAT_NAME = "dustmaps_ext.wang2025.records"
FORMAT_VERSION = 2
_DATASETS = (("ebv_records", EBV_FIELDS), ("aux_records", AUX_FIELDS))
_ALIGN = 1 << 16          # dataset start aligned to 64 KiB (a multiple of any page size)
_CHUNK_ROWS = 1 << 20     # rows converted at a time


def validate_columns(names, n_rows: int, source: str) -> None:
    """Check that a table has every column of the release and one row per pixel.

    Parameters
    ----------
    names : iterable of str
        Column names found.
    n_rows : int
        Row count found.
    source : str
        What to call the table in the error message.

    Raises
    ------
    ValueError
        Naming the missing columns, or the row count found and the one needed.
    """
    names = set(names)
    missing = [c for c in TABLE_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{source}: the Wang et al. (2025) table lacks the columns "
                         f"{', '.join(missing)} (it needs {', '.join(TABLE_COLUMNS)})")
    if n_rows != NROWS:
        raise ValueError(f"{source}: the Wang et al. (2025) table has {n_rows:,} rows; it "
                         f"needs {NROWS:,} (one per HEALPix nside-{NSIDE} RING pixel)")


def convert_fits_table(src: str | os.PathLike, dst: str | os.PathLike, *,
                       progress: bool = True) -> Path:
    """Convert a ``data_v3.fits``-format table into the memory-mapped layout.

    Parameters
    ----------
    src : path
        The FITS table (uncompressed).
    dst : path
        The HDF5 file to write; its folder is created. An existing file is replaced.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    Path
        ``dst``.

    Raises
    ------
    FileNotFoundError
        If ``src`` does not exist.
    ValueError
        If ``src`` has no binary table, lacks columns or has the wrong number of rows.
    """
    import h5py
    from astropy.io import fits
    from ..progress import tqdm

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"no parametric table at {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    logger.info("converting %s into the memory-mapped layout %s", src, dst)
    with fits.open(src, memmap=True) as hdul:
        hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU)), None)
        if hdu is None:
            raise ValueError(f"{src}: no binary table HDU")
        validate_columns(hdu.columns.names, int(hdu.header["NAXIS2"]), str(src))
        data = hdu.data
        col_dtypes = {c: data.dtype[c].newbyteorder("=") for c in TABLE_COLUMNS}
        rec_dtype = record_dtype({c: np.empty(0, dt) for c, dt in col_dtypes.items()})
        try:
            with h5py.File(tmp, "w", alignment_threshold=1, alignment_interval=_ALIGN) as f:
                sets = []
                for name, fields in _DATASETS:
                    ds = f.create_dataset(name, shape=(NROWS, len(fields)), dtype=rec_dtype,
                                          chunks=None)
                    ds.attrs["fields"] = np.array(fields, dtype=h5py.string_dtype())
                    sets.append(ds)
                bar = tqdm(total=NROWS, unit="row", unit_scale=True, disable=not progress,
                           desc="converting data_v3")
                for lo in range(0, NROWS, _CHUNK_ROWS):
                    hi = min(lo + _CHUNK_ROWS, NROWS)
                    cols = {c: np.asarray(data.field(c)[lo:hi]).astype(col_dtypes[c])
                            for c in TABLE_COLUMNS}
                    for ds, block in zip(sets, build_records(cols, rec_dtype)):
                        ds[lo:hi] = block
                    bar.update(hi - lo)
                bar.close()
                f.attrs["format"] = FORMAT_NAME
                f.attrs["format_version"] = FORMAT_VERSION
                f.attrs["nside"] = NSIDE
                f.attrs["ordering"] = "RING"
                f.attrs["source_name"] = src.name
                f.attrs["source_size"] = src.stat().st_size
                f.attrs["complete"] = True  # written last: the completeness marker
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
    logger.info("wrote %s", dst)
    return dst


@dataclass(eq=False)
class ParametricTable:
    """A converted table, memory-mapped read-only.

    Attributes
    ----------
    path : Path
        The converted file.
    records : (ndarray, ndarray)
        ``(ebv_records, aux_records)``, read-only views of the mapping, shapes
        (NROWS, len(EBV_FIELDS)) and (NROWS, len(AUX_FIELDS)), float32 or float64.
    """

    path: Path
    records: tuple[np.ndarray, np.ndarray]
    _map: mmap.mmap = field(repr=False)
    _offsets: tuple[int, int] = field(repr=False)

    def column(self, name: str) -> np.ndarray:
        """One column of the records (a strided view; no copy)."""
        return record_column(self.records, name)

    def advise(self, sequential: bool) -> None:
        """Hint the kernel how the records will be read: ``False`` (the default after
        opening) reads only the pages touched (no read-ahead: a few scattered points do not
        pull megabytes from disk), ``True`` restores normal read-ahead for large queries."""
        if hasattr(self._map, "madvise") and hasattr(mmap, "MADV_RANDOM"):
            self._map.madvise(mmap.MADV_NORMAL if sequential else mmap.MADV_RANDOM)

    def release(self, first_row: int, stop_row: int) -> None:
        """Drop the pages of rows ``[first_row, stop_row)`` from this process's resident set.

        The data stay in the operating system's page cache; a later read maps them again.
        Does nothing where ``madvise`` is not available.
        """
        if not hasattr(self._map, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        for rec, offset in zip(self.records, self._offsets):
            row_bytes = rec.strides[0]
            start = offset + first_row * row_bytes
            stop = min(offset + stop_row * row_bytes, len(self._map))
            start -= start % mmap.PAGESIZE
            if stop > start:
                self._map.madvise(mmap.MADV_DONTNEED, start, stop - start)


def open_table(path: str | os.PathLike) -> ParametricTable:
    """Open a converted file and memory-map its records.

    Parameters
    ----------
    path : path
        A file written by :func:`convert_fits_table`.

    Returns
    -------
    ParametricTable

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not a complete converted table (naming what is wrong).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no converted Wang et al. (2025) table at {path}")
    with h5py.File(path, "r") as f:
        where = f"{path} (re-create it with dustmaps_ext.wang2025.convert_table)"
        if f.attrs.get("format") != FORMAT_NAME:
            raise ValueError(f"{where}: not a converted Wang et al. (2025) table")
        if f.attrs.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{where}: layout version {f.attrs.get('format_version')}, "
                             f"this code reads version {FORMAT_VERSION}")
        if not f.attrs.get("complete", False):
            raise ValueError(f"{where}: incomplete (its conversion did not finish)")
        layouts = []
        for name, expected in _DATASETS:
            if name not in f:
                raise ValueError(f"{where}: no '{name}' dataset")
            ds = f[name]
            fields = tuple(s.decode() if isinstance(s, bytes) else str(s)
                           for s in ds.attrs.get("fields", []))
            missing = [c for c in expected if c not in fields]
            if missing:
                raise ValueError(f"{where}: lacks the columns {', '.join(missing)}")
            if fields != expected:
                raise ValueError(f"{where}: columns of '{name}' in an unexpected order")
            if ds.shape != (NROWS, len(expected)):
                raise ValueError(f"{where}: has {ds.shape[0]:,} rows; it needs {NROWS:,} "
                                 f"(one per HEALPix nside-{NSIDE} RING pixel)")
            dtype = ds.dtype
            if dtype not in (np.dtype("<f4"), np.dtype("<f8")) or not dtype.isnative:
                raise ValueError(f"{where}: records of type {dtype}; expected native "
                                 "float32/64")
            offset = ds.id.get_offset()
            layout = ds.id.get_create_plist().get_layout()
            if layout != h5py.h5d.CONTIGUOUS or offset is None or ds.compression is not None:
                raise ValueError(f"{where}: records are not stored contiguously and "
                                 "unfiltered")
            layouts.append((offset, dtype, ds.shape))
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    arrays = []
    for offset, dtype, shape in layouts:
        n_items = shape[0] * shape[1]
        if offset + n_items * dtype.itemsize > len(mm):
            raise ValueError(f"{path}: truncated (records run past the end of the file)")
        arrays.append(np.frombuffer(mm, dtype=dtype, count=n_items, offset=offset)
                      .reshape(shape))
    table = ParametricTable(path=path, records=(arrays[0], arrays[1]), _map=mm,
                            _offsets=(layouts[0][0], layouts[1][0]))
    table.advise(sequential=False)
    return table
