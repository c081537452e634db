"""The facts of each map format, one home each, public for the build pipeline and for users.

* ``formats.decaps`` -- the DECaPS release (Zucker et al. 2025): DOI, file names and
  sizes, nside, distance-modulus edges, chunking, per-pixel datasets and dtypes, the
  footprint (:func:`~dustmaps_ext._io.decaps.in_footprint`), default paths, the file check,
  the readers and :func:`~dustmaps_ext._io.decaps.repack`;
* ``formats.bayestar19`` -- Bayestar19 (Green et al. 2019): DOI, file name, default path,
  the ``pixel_info`` record type, the file check and the reader;
* ``formats.wang2025`` -- the table of Wang et al. (2025): URLs, file names, nside,
  ordering, row count, columns, the one column/row check, the converter and the reader.

The query classes, ``fetch()``, the command line and the writers of
:mod:`dustmaps_ext_build` all read these modules, so each fact is written once.

Example
-------
>>> from dustmaps_ext.formats import decaps, wang2025
>>> decaps.NSIDE, decaps.DM_BIN_EDGES[[0, -1]].tolist(), wang2025.NROWS
(8192, [4.0, 18.875], 12582912)
"""

from ._io import bayestar19, decaps, wang2025

__all__ = ["decaps", "bayestar19", "wang2025"]
