"""The numerics of the parametric model of Wang et al. (2025), public for the build pipeline.

The evaluator of :mod:`dustmaps_ext.wang2025` and the fit of :mod:`dustmaps_ext_build.parametric`
use the same compiled model terms, so that a fitted table reproduces the fit's curves to
the last bit:

* constants per sightline: :func:`diffuse_constants` (``span_0, total_0, c_0, step_0,
  offset_0``) and :func:`cloud_constants` (``centre, norm, offset, rate``), compiled for
  scalars (their ``py_func`` runs on numpy columns, :func:`derive_constants`);
* terms at a distance ``x`` (kpc): :func:`diffuse_terms`, :func:`cloud_terms` and
  :func:`cloud_density_term` (numba functions, inlined into the caller's kernel);
* the table's columns (:data:`TABLE_COLUMNS`, :data:`CLOUD_COLUMNS`), the model's sizes
  (:data:`N_CLOUDS`) and thresholds (:data:`CLOUD_MIN_COLUMN`, :data:`BUBBLE_EDGE_WIDTH`);
* :func:`build_records` and :func:`evaluate`, the evaluator on records.
"""

from ._core.parametric import (BUBBLE_EDGE_WIDTH, CLOUD_COLUMNS, CLOUD_MIN_COLUMN, N_CLOUDS,
                               TABLE_COLUMNS, build_records, derive_constants, evaluate)
from ._core.parametric import _cloud_constants as cloud_constants
from ._core.parametric import _cloud_density_term as cloud_density_term
from ._core.parametric import _cloud_terms as cloud_terms
from ._core.parametric import _diffuse_constants as diffuse_constants
from ._core.parametric import _diffuse_terms as diffuse_terms

__all__ = ["N_CLOUDS", "CLOUD_COLUMNS", "TABLE_COLUMNS", "CLOUD_MIN_COLUMN", "BUBBLE_EDGE_WIDTH",
           "diffuse_constants", "cloud_constants", "diffuse_terms", "cloud_terms",
           "cloud_density_term", "derive_constants", "build_records", "evaluate"]
