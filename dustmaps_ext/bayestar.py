"""A fast, quiet reader of Bayestar19 (Green et al. 2019) with dustmaps' numbers.

:class:`Bayestar19Query` reads the same ``bayestar2019.h5`` as
``dustmaps.bayestar.BayestarQuery(version='bayestar2019')`` and answers every one of its
modes (``random_sample``, ``random_sample_per_pix``, ``samples``, ``median``, ``mean``,
``best``, ``percentile``) with the very same float32 numbers and flags, through the voxel
core shared with the DECaPS classes. It prints nothing, shows a progress bar that can be
turned off, and finds pixels with one HEALPix computation per coordinate instead of one
per nside.

Values are in Bayestar19's arbitrary reddening units. To convert to E(B-V) multiply by
:data:`BAYESTAR19_TO_EBV` (0.884, from E(g-r) on the SFD scale) or by
:data:`BAYESTAR19_TO_EBV_RZ` (0.996, from E(r-z)); both come from the Bayestar19 usage
notes (Green et al. 2019; argonaut.skymaps.info/usage).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ._core.modes import BAYESTAR_MODES
from ._io.bayestar19 import default_map_path, inspect_bayestar19_file, load_bayestar19
from ._pickle import ReopenByPath
from ._io.fetchers import fetch_bayestar2019 as fetch
from ._voxel_map import VoxelDustMap, check_max_samples
from .errors import MapFileError

__all__ = ["Bayestar19Query", "default_map_path", "fetch", "BAYESTAR19_TO_EBV",
           "BAYESTAR19_TO_EBV_RZ", "MapFileError"]

logger = logging.getLogger(__name__)

#: E(B-V) per Bayestar19 unit, from E(g-r) on the SFD scale (Bayestar19 usage notes).
BAYESTAR19_TO_EBV = 0.884
#: E(B-V) per Bayestar19 unit, from E(r-z) (Bayestar19 usage notes).
BAYESTAR19_TO_EBV_RZ = 0.996


class Bayestar19Query(ReopenByPath, VoxelDustMap):
    """Bayestar19, loaded into RAM, answering as dustmaps' ``BayestarQuery`` does.

    Parameters
    ----------
    map_fname : str or Path, optional
        A Bayestar19-format file. Default: :func:`default_map_path`.
    max_samples : int, optional
        Load only the first ``max_samples`` samples (as dustmaps' ``max_samples``).
    progress : bool, keyword-only
        Show a progress bar while loading.

    Notes
    -----
    Memory: ``n_pix x (1 + n_samples) x 120 x 4`` bytes (best fit and samples, float32,
    as dustmaps holds them) plus about 40 bytes per pixel of pixel information.
    """

    _valid_modes = BAYESTAR_MODES

    def __init__(self, map_fname=None, max_samples: int | None = None, *,
                 progress: bool = True) -> None:
        super().__init__()
        path = Path(map_fname) if map_fname is not None else default_map_path()
        self._info = inspect_bayestar19_file(path)
        n_samples = check_max_samples(max_samples, self._info.n_samples, path)
        self._store = load_bayestar19(self._info, n_samples=n_samples, progress=progress)
        self._remember_init(map_fname=self._info.path, max_samples=max_samples, progress=progress)

    @property
    def n_samples(self) -> int:
        """Posterior samples loaded."""
        return self._store.n_samples

    def query(self, coords, mode: str = "random_sample", return_flags: bool = False, pct=None,
              *, rng=None):
        """Bayestar19 reddening (arbitrary units; see the module) at the given coordinates.

        Parameters
        ----------
        coords : astropy.coordinates.SkyCoord
            Any frame and shape, with or without distances.
        mode : str
            ``'random_sample'`` (default, as dustmaps), ``'random_sample_per_pix'``,
            ``'samples'``, ``'median'``, ``'mean'`` (mean over the samples of the
            interpolated values), ``'best'`` (the file's best fit) or ``'percentile'``.
        return_flags : bool
            Also return flags: with distances ``converged`` and ``reliable_dist``; without,
            ``converged``, ``min_reliable_distmod`` and ``max_reliable_distmod`` (a NaN in
            the file reads +inf and -inf, as in dustmaps).
        pct : float or sequence of float
            Percentile(s) in [0, 100] for ``mode='percentile'``.
        rng : None, int or numpy.random.Generator, keyword-only
            Randomness of the random modes (dustmaps uses numpy's global state instead).

        Returns
        -------
        numpy.ndarray, or (numpy.ndarray, numpy.ndarray)
            float32 (float64 for percentiles), shaped as dustmaps: ``coords.shape`` with
            distances (plus a samples axis for ``'samples'``, a percentile axis for a list
            ``pct``), else ``coords.shape + (120,)`` (``'samples'``: samples before
            distances). Outside the map, for invalid positions and for NaN distances:
            NaN and False flags (dustmaps returns the farthest bin for a NaN distance).
        """
        return self._answer(coords, mode, return_flags, pct, rng)
