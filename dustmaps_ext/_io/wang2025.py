"""The Wang et al. (2025) table, in one place: facts, checks, the converted layout, its reader.

Facts of the release
    Where it is (:data:`URL`, the NADC mirror :data:`MIRROR_URL`, the environment variable
    :data:`URL_ENV`), its file names (:data:`GZ_NAME`, :data:`FITS_NAME`) and the converted
    file's (:data:`CONVERTED_NAME`), where they go (:func:`wang2025_paths`,
    :func:`default_fits_path`, :func:`default_table_path`), its HEALPix grid (:data:`NSIDE`,
    RING, :data:`NROWS` rows) and its columns (:data:`COLUMNS`, the model's own list).
    :func:`validate_columns` is the one check of columns and rows, for the converter
    (:func:`convert_table`), for ``fetch()`` (:func:`check_fits_table`, from the FITS
    headers alone) and for the build pipeline's writer.

Converted layout
    The release (``data_v3.fits``, ~1 GB of float32 columns) is converted once into an HDF5
    file holding two contiguous, unfiltered, 64 KiB-aligned 2D datasets, one row per
    nside-1024 RING pixel (12,582,912 rows): ``ebv_records`` (the 24 columns of
    :data:`~dustmaps_ext._core.parametric.EBV_FIELDS`, all that E(B-V) and the density need:
    one 96-byte record per point) and ``aux_records`` (the 18 others: sigmas, cloud columns,
    the remaining table columns). Together they hold the table's 21 columns and the 21
    per-sightline constants of :func:`dustmaps_ext._core.parametric.derive_constants`. Their
    byte offsets come from h5py and the records are read through one read-only ``mmap`` of
    the file: opening is instant and only the pages a query touches are read. The file is
    written under a temporary name, marked complete, and moved into place atomically.
"""

from __future__ import annotations

import logging
import mmap
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._core.parametric import (
    AUX_FIELDS,
    EBV_FIELDS,
    TABLE_COLUMNS,
    build_records,
    record_column,
    record_dtype,
)
from ..errors import InvalidDownloadError
from .files import (
    advise_access,
    atomic_output,
    map_data_dir,
    map_read_only,
    release_pages,
)

__all__ = ["URL", "MIRROR_URL", "URL_ENV", "GZ_NAME", "FITS_NAME", "CONVERTED_NAME", "NSIDE",
           "ORDERING", "NROWS", "COLUMNS", "FORMAT_NAME", "FORMAT_VERSION", "wang2025_dir",
           "wang2025_paths", "default_fits_path", "default_table_path", "validate_columns",
           "read_fits_table_header", "check_fits_header", "check_fits_table", "ParametricTable",
           "convert_fits_table", "convert_table", "open_table"]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- facts
#: Primary URL of the released table (GitHub release of dustmaps3d).
URL = "https://github.com/Grapeknight/dustmaps3d/releases/download/v3/data_v3.fits.gz"
#: Mirror at the China-VO NADC (record DOI 10.12149/101619), tried when the primary fails.
MIRROR_URL = "https://nadc.china-vo.org/res/file_upload/download?id=51939"
#: Environment variable that replaces :data:`URL`.
URL_ENV = "DUSTMAPS_EXT_WANG2025_URL"
#: Names of the download, the unpacked table and the converted file.
GZ_NAME = "data_v3.fits.gz"
FITS_NAME = "data_v3.fits"
CONVERTED_NAME = "data_v3_columns.h5"
#: HEALPix resolution and ordering of the released table.
NSIDE = 1024
ORDERING = "RING"
#: Rows of the released table: one per nside-1024 RING pixel. The evaluator needs the full
#: table, so a table of another length is refused (tests shrink this to stay fast).
NROWS = 12 * NSIDE ** 2
#: Columns of the released table, in release order (distances in kpc, reddening in mag,
#: ``b_lim`` in deg): the model's own list.
COLUMNS = TABLE_COLUMNS
#: ``format`` attribute of a converted file and its version.
FORMAT_NAME = "dustmaps_ext.wang2025.records"
FORMAT_VERSION = 2
_DATASETS = (("ebv_records", EBV_FIELDS), ("aux_records", AUX_FIELDS))
_ALIGN = 1 << 16          # dataset start aligned to 64 KiB (a multiple of any page size)
_CHUNK_ROWS = 1 << 20     # rows converted at a time
_FITS_BLOCK = 2880
_MAX_HDUS = 16


def wang2025_dir() -> Path:
    """``<dustmaps data_dir>/wang2025``, read at call time."""
    return map_data_dir("wang2025")


def wang2025_paths() -> tuple[Path, Path, Path]:
    """(``data_v3.fits.gz``, ``data_v3.fits``, converted table) under the current data directory."""
    directory = wang2025_dir()
    return directory / GZ_NAME, directory / FITS_NAME, directory / CONVERTED_NAME


def default_fits_path() -> Path:
    """Where ``fetch()`` puts the released table: ``<dustmaps data_dir>/wang2025/data_v3.fits``."""
    return wang2025_paths()[1]


def default_table_path() -> Path:
    """The converted table: ``<dustmaps data_dir>/wang2025/data_v3_columns.h5``."""
    return wang2025_paths()[2]


def validate_columns(names, n_rows: int, source: str, *, error: type[Exception] = ValueError) -> None:
    """Check that a table has every column of the release and one row per pixel.

    Parameters
    ----------
    names : iterable of str
        Column names found.
    n_rows : int
        Row count found.
    source : str
        What to call the table in the error message.
    error : exception class
        What to raise (``fetch()`` raises :class:`~dustmaps_ext.errors.InvalidDownloadError`).

    Raises
    ------
    ValueError
        Naming the missing columns, or the row count found and the one needed.
    """
    names = set(names)
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise error(f"{source}: the Wang et al. (2025) table lacks the columns "
                    f"{', '.join(missing)} (it needs {', '.join(COLUMNS)})")
    if n_rows != NROWS:
        raise error(f"{source}: the Wang et al. (2025) table has {n_rows:,} rows; it "
                    f"needs {NROWS:,} (one per HEALPix nside-{NSIDE} {ORDERING} pixel)")


def _hdu_data_bytes(header) -> int:
    """Bytes of an HDU's data, padded to whole FITS blocks (FITS standard, section 4.4.1)."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    n = 1
    for i in range(1, naxis + 1):
        n *= int(header[f"NAXIS{i}"])
    n = abs(int(header["BITPIX"])) // 8 * int(header.get("GCOUNT", 1)) * (
        int(header.get("PCOUNT", 0)) + n)
    return -(-n // _FITS_BLOCK) * _FITS_BLOCK


def _skip(fh, n: int) -> None:
    while n > 0:
        block = fh.read(min(n, 1 << 20))
        if not block:
            raise EOFError("file ends inside an HDU")
        n -= len(block)


def read_fits_table_header(fh, where: str):
    """Read FITS headers from a stream up to the first binary table, without its data.

    Returns
    -------
    (astropy.io.fits.Header, int)
        The table's header and the bytes the file needs up to the end of the table's data.

    Raises
    ------
    InvalidDownloadError
        If the stream is not FITS or holds no binary table in its first 16 HDUs.
    """
    from astropy.io import fits

    offset = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a bad header is reported by the exception below
        try:
            for index in range(_MAX_HDUS):
                start = fh.tell() if hasattr(fh, "tell") else None
                header = fits.Header.fromfile(fh)
                if index == 0 and header.get("SIMPLE") is not True:
                    raise ValueError("the first header lacks SIMPLE = T")
                size = (fh.tell() - start) if start is not None else 0
                offset += size + _hdu_data_bytes(header)
                if header.get("XTENSION") == "BINTABLE":
                    return header, offset
                _skip(fh, _hdu_data_bytes(header))
        except (ValueError, KeyError, EOFError, OSError) as exc:
            raise InvalidDownloadError(f"{where} is not a readable FITS file "
                                       f"({type(exc).__name__}: {exc})") from exc
    raise InvalidDownloadError(f"{where} holds no FITS binary table in its first "
                               f"{_MAX_HDUS} HDUs")


def check_fits_header(header, where: str) -> None:
    """The table's header must list every column and one row per pixel (:func:`validate_columns`)."""
    names = [str(header.get(f"TTYPE{i}", "")).strip()
             for i in range(1, int(header.get("TFIELDS", 0)) + 1)]
    validate_columns(names, int(header.get("NAXIS2", -1)), where, error=InvalidDownloadError)


def check_fits_table(path: str | os.PathLike) -> None:
    """Check a plain ``data_v3.fits`` from its headers, and that its data is all there.

    Raises
    ------
    InvalidDownloadError
        If it is not the table (naming what is wrong) or is truncated.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        header, needed = read_fits_table_header(fh, str(path))
    check_fits_header(header, str(path))
    size = path.stat().st_size
    if size < needed:
        raise InvalidDownloadError(f"{path} is truncated: {size} bytes, its headers "
                                   f"announce {needed}")


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
    logger.info("converting %s into the memory-mapped layout %s", src, dst)
    with fits.open(src, memmap=True) as hdul:
        hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU)), None)
        if hdu is None:
            raise ValueError(f"{src}: no binary table HDU")
        validate_columns(hdu.columns.names, int(hdu.header["NAXIS2"]), str(src))
        data = hdu.data
        col_dtypes = {c: data.dtype[c].newbyteorder("=") for c in COLUMNS}
        rec_dtype = record_dtype({c: np.empty(0, dt) for c, dt in col_dtypes.items()})
        with atomic_output(dst) as tmp:
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
                            for c in COLUMNS}
                    for ds, block in zip(sets, build_records(cols, rec_dtype)):
                        ds[lo:hi] = block
                    bar.update(hi - lo)
                bar.close()
                f.attrs["format"] = FORMAT_NAME
                f.attrs["format_version"] = FORMAT_VERSION
                f.attrs["nside"] = NSIDE
                f.attrs["ordering"] = ORDERING
                f.attrs["source_name"] = src.name
                f.attrs["source_size"] = src.stat().st_size
                f.attrs["complete"] = True  # written last: the completeness marker
    logger.info("wrote %s", dst)
    return dst


def convert_table(src: str | os.PathLike, dst: str | os.PathLike | None = None, *,
                  progress: bool = True) -> Path:
    """Convert a released ``data_v3.fits`` table once into the memory-mapped layout.

    Parameters
    ----------
    src : path
        The uncompressed FITS table.
    dst : path, optional
        Output file; default :func:`default_table_path`. Written atomically (temporary
        name, then rename), replacing an existing file.
    progress : bool
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        The converted file.

    Raises
    ------
    FileNotFoundError
        If ``src`` does not exist.
    ValueError
        If ``src`` lacks columns or does not have 12,582,912 rows (the error names them).
    """
    dst = default_table_path() if dst is None else Path(dst)
    return convert_fits_table(src, dst, progress=progress)


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
        advise_access(self._map, sequential)

    def release(self, first_row: int, stop_row: int) -> None:
        """Drop the pages of rows ``[first_row, stop_row)`` from this process's resident set.

        The data stay in the operating system's page cache; a later read maps them again.
        Does nothing where ``madvise`` is not available.
        """
        for rec, offset in zip(self.records, self._offsets):
            row_bytes = rec.strides[0]
            release_pages(self._map, offset + first_row * row_bytes, offset + stop_row * row_bytes)


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
    mm = map_read_only(path)
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
