"""Settings and constants of a DECaPS-format build, shared by every stage of the pipeline.

:class:`DecapsBuildConfig` lives here, below :mod:`.pipeline` and :mod:`.assemble`, so that
both import it without importing each other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

import numpy as np

from dustmaps_ext.formats import decaps as decaps_format
from dustmaps_ext.healpix import check_nside, in_lon_lat_box

from . import pixelize, prior
from .sampler import RETRY_SETTINGS, SamplerSettings

__all__ = ["DM_EDGES", "DecapsBuildConfig"]


#: Distance-modulus edges of the map (the DECaPS format's; the star posteriors' grid too).
DM_EDGES = decaps_format.DM_BIN_EDGES


@dataclass(frozen=True)
class DecapsBuildConfig:
    """Settings of a DECaPS-format build.

    Parameters
    ----------
    nside : int
        HEALPix nside of the map (8192 for the real map).
    nside_block : int
        A block is one NESTED pixel at this nside, i.e. ``(nside / nside_block)**2`` map pixels.
    sampler : SamplerSettings
        Temperatures, burn-in, number of samples; with ``retry`` the rounds and steps follow
        the paper's escalating settings.
    retry : bool
        Re-run non-converged pixels (3 times under each of 4 settings).
    retry_settings : tuple
        (sweeps_per_round, n_rounds) of each setting.
    min_stars : int
        Pixels with fewer stars are infilled (10).
    fwhm_pixels, truncate_fwhm : float
        Star weighting (2.5 pixels, truncated at 2 FWHM).
    weight_mode : {"loglike", "loglike_kish", "loglike_raw", "image"}
        How a star's Gaussian weight ``w_k`` enters the fit. ``"loglike"`` (the default):
        each star's log likelihood is multiplied by ``w_k * n / sum(w)``, the Gaussian's
        relative weights with the ``n`` stars weighing ``n`` in all, which gives the map the
        point-spread function of the weighting Gaussian (1.07 arcmin FWHM at nside 8192);
        ``"loglike_kish"``: by ``w_k sum(w) / sum(w^2)`` (the same PSF; exponents summing
        to Kish's effective number of stars, ~0.18 n: the samples' spread then matches the
        scatter of the weighted fit, but the prior weighs ~5x more);
        ``"loglike_raw"``: by ``w_k`` itself (the same PSF, the prior weighs ~10x more);
        ``"image"``: the posterior is multiplied by ``w_k``, which under the softened
        likelihood ``log(w L + eps)`` makes every star within the truncation radius count
        almost equally (a top-hat of 2.15 arcmin radius).
    n_keep_samples : int
        Samples written per pixel (5), drawn at random (seeded per pixel) from the chain's.
    p_reliable_min, p_reliable_max : float
        Appendix B thresholds (0.5 and 5).
    infill_window, infill_train, infill_median : int
        Widths of the §4.2.4 infill (21, 51, 11).
    infill_seam_deg : float, optional
        Longitude (deg) where the infill's ring image is cut (:func:`.infill.ring_origin`);
        None: the middle of the longitudes outside ``l_range_deg`` (122.5 deg for DECaPS).
    seed : int
        Base seed.
    prior_model : FlaredSechDiskDustModel or SmoothDiskDustModel
        Mean of the jump prior (default: bayestar's flared sech^2 disk with an inner hole).
    prior_rounding : {"floor", "split"}
        How the jump prior's continuous jumps become 0.01 mag quanta
        (:func:`.prior.log_jump_prior_table`): ``"floor"`` as the C++ code of the released
        map (the prior's mean profile falls below the model's nearby), ``"split"`` keeping
        the model's mean.
    l_range_deg, b_range_deg : (float, float)
        Footprint: only pixels whose centres lie in this box are mapped (longitudes may
        wrap, e.g. (239, 366)); the default is the DECaPS footprint.
    """

    nside: int = decaps_format.NSIDE
    nside_block: int = 256
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    retry: bool = True
    retry_settings: tuple = RETRY_SETTINGS
    min_stars: int = 10
    fwhm_pixels: float = 2.5
    truncate_fwhm: float = 2.0
    weight_mode: str = "loglike"
    n_keep_samples: int = 5
    p_reliable_min: float = 0.5
    p_reliable_max: float = 5.0
    infill_window: int = 21
    infill_train: int = 51
    infill_median: int = 11
    infill_seam_deg: float | None = None
    seed: int = 0
    prior_model: prior.FlaredSechDiskDustModel = field(
        default_factory=prior.FlaredSechDiskDustModel)
    prior_rounding: str = "floor"
    l_range_deg: tuple = decaps_format.L_RANGE_DEG
    b_range_deg: tuple = decaps_format.B_RANGE_DEG

    def in_footprint(self, l_deg, b_deg) -> np.ndarray:
        """Whether directions (deg) lie in the footprint box (the package's one boundary
        rule, :func:`dustmaps_ext.healpix.in_lon_lat_box`)."""
        return in_lon_lat_box(l_deg, b_deg, self.l_range_deg, self.b_range_deg)

    def __post_init__(self):
        for name in ("nside", "nside_block"):
            check_nside(getattr(self, name), name)
        if self.nside_block > self.nside:
            raise ValueError("nside_block must not exceed nside")
        if self.min_stars < 1 or self.n_keep_samples < 1:
            raise ValueError("min_stars and n_keep_samples must be >= 1")
        if self.weight_mode not in pixelize.WEIGHT_MODES:
            raise ValueError(f"weight_mode must be one of {pixelize.WEIGHT_MODES}, not "
                             f"{self.weight_mode!r}")
        if self.prior_rounding not in ("floor", "split"):
            raise ValueError("prior_rounding must be 'floor' or 'split', not "
                             f"{self.prior_rounding!r}")
        if not (math.isfinite(self.prior_model.sigma_ln) and self.prior_model.sigma_ln > 0):
            raise ValueError("prior_model.sigma_ln (the jump prior's width in ln(jump)) "
                             f"must be positive and finite, not {self.prior_model.sigma_ln!r}")
        if self.n_keep_samples > self.sampler.n_samples:
            raise ValueError("n_keep_samples cannot exceed the sampler's n_samples")

    def fingerprint(self) -> str:
        """Stable hash of every setting (for resume checks)."""
        d = dataclasses.asdict(self)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()
