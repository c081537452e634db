"""Write the parametric map of Wang et al. (2025) in its released format (``data_v3.fits``).

The released table has one row per HEALPix RING pixel at nside 1024 (12,582,912 rows); the
adaptive sightlines (nside 64 to 1024) are repeated over their nside-1024 children. Columns
(distances in kpc, reddening in mag, ``b_lim`` in deg) are listed in :data:`PARAMETRIC_COLUMNS`.
Both :mod:`dustmaps_ext.wang2025` and dustmaps3d read what this module writes.
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
        Output FITS file (uncompressed; gzip it separately to imitate the download).
    columns : mapping of str to array
        Every column of :data:`PARAMETRIC_COLUMNS`, each of length :data:`RELEASE_NROWS`
        (one row per nside-1024 RING pixel). Extra columns are refused.
    overwrite : bool
        Replace an existing file.
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
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    table = Table({c: np.asarray(columns[c], dtype=dtype) for c in PARAMETRIC_COLUMNS},
                  copy=False)
    with atomic_output(path, suffix=".fits") as tmp:
        table.write(tmp, format="fits")
    return path
