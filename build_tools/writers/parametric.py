"""Write the parametric map of Wang et al. (2025) in its released format (``data_v3.fits``).

The released table has one row per HEALPix RING pixel at nside 1024 (12,582,912 rows); the
adaptive sightlines (nside 64 to 1024) are repeated over their nside-1024 children. Columns
(distances in kpc, reddening in mag, ``b_lim`` in deg) are listed in :data:`PARAMETRIC_COLUMNS`.
Both :mod:`dustmaps_ext.wang2025` and dustmaps3d read what this module writes.

The file is written under a temporary name in the same folder, flushed to disk and only
then renamed to its final name (:func:`os.replace`, atomic on one file system): a build
killed during the write leaves no file that looks complete, and the rerun writes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from dustmaps_ext.files import atomic_output
from dustmaps_ext.formats import wang2025 as wang2025_format

__all__ = ["PARAMETRIC_COLUMNS", "RELEASE_NSIDE", "RELEASE_NROWS", "write_parametric_table"]

#: HEALPix nside (RING) and rows of the released table (the format's facts).
RELEASE_NSIDE = wang2025_format.NSIDE
RELEASE_NROWS = wang2025_format.NROWS

#: Column names of the released table, in release order (the evaluator's own list).
PARAMETRIC_COLUMNS = wang2025_format.COLUMNS


def write_parametric_table(path: str | Path, columns: Mapping[str, np.ndarray], *,
                           overwrite: bool = False, dtype=np.float64) -> Path:
    """Write a ``data_v3.fits``-format table.

    Parameters
    ----------
    path : str or Path
        Output FITS file; gzip-compressed when the name ends with ``.gz`` (readers open
        both; a region's table of mostly NaN rows shrinks to a few MB).
    columns : mapping of str to array
        Every column of :data:`PARAMETRIC_COLUMNS`, each of length :data:`RELEASE_NROWS`
        (one row per nside-1024 RING pixel). Extra columns are refused.
    overwrite : bool
        Replace an existing file (the new one takes its place only once complete).
    dtype : numpy dtype
        Floating type of the stored columns.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    ValueError
        If a column is missing, unknown, or has the wrong length.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    from astropy.table import Table

    unknown = [c for c in columns if c not in PARAMETRIC_COLUMNS]
    if unknown:
        raise ValueError(f"parametric table columns: unknown {unknown}")
    shapes = {np.shape(columns[c]) for c in PARAMETRIC_COLUMNS if c in columns}
    if len(shapes) > 1 or any(len(s) != 1 for s in shapes):
        raise ValueError(f"every column needs shape ({RELEASE_NROWS},); got "
                         f"{ {c: np.shape(columns[c]) for c in PARAMETRIC_COLUMNS if c in columns} }")
    n_rows = next(iter(shapes))[0] if shapes else 0
    wang2025_format.validate_columns(columns, n_rows, "parametric table to write")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another output or replace it "
                              "(--overwrite on the command line)")
    table = Table({c: np.asarray(columns[c], dtype=dtype) for c in PARAMETRIC_COLUMNS},
                  copy=False)
    # the temporary name keeps the suffixes, so that "*.fits.gz" is compressed as well
    with atomic_output(path, suffix="".join(path.suffixes) or ".fits") as tmp:
        table.write(tmp, format="fits")
    return path
