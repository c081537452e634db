"""The build pipeline of the parametric all-sky map of Wang et al. (2025, §3).

Modules: :mod:`.catalog` (star catalogs), :mod:`.sightlines` (adaptive HEALPix sightlines
and weights), :mod:`.model` (the model, eq. 15 loss and analytic gradient, numba),
:mod:`.fit` (one sightline), :mod:`.distance_errors` (cloud rises placed under the stars'
distance errors), :mod:`.mock` (catalogs drawn from the simulated galaxy),
:mod:`.pipeline` (blocks on Dask and the released table), :mod:`.recovery` (comparison of
a build with the simulated galaxy's truth).
"""

from .catalog import StarCatalog, read_catalog, write_catalog
from .fit import FitConfig, SightlineFit, fit_sightline
from .pipeline import ParametricBuildConfig, build_parametric_map

__all__ = ["StarCatalog", "read_catalog", "write_catalog", "FitConfig", "SightlineFit",
           "fit_sightline", "ParametricBuildConfig", "build_parametric_map"]
