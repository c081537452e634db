"""Gaussian weighting of stars onto HEALPix pixels (§4.2.2).

Each star contributes to every NESTED pixel whose centre lies within ``truncate_fwhm * FWHM``
of it on the sky, with weight ``exp(-theta^2 / (2 sigma^2))`` on the great-circle distance
``theta``, where ``FWHM = fwhm_pixels`` pixel sizes (pixel size ``sqrt(4 pi / (12 nside^2))``;
2.5 pixels = 1.07 arcmin at nside 8192) and ``sigma = FWHM / sqrt(8 ln 2)``. The default
truncation is 2 FWHM (5 pixels, 4.7 sigma). Stars are found with a KD-tree on unit vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import healpy as hp
import numpy as np
from scipy.spatial import cKDTree

from dustmaps_ext.healpix import check_nside, lb_to_unit_vectors

__all__ = ["PixelAssignment", "pixel_size_rad", "assign_stars_to_pixels", "pixels_touched",
           "WEIGHT_MODES", "likelihood_exponents"]

#: How a star's Gaussian weight can enter a pixel's fit (``DecapsBuildConfig.weight_mode``).
WEIGHT_MODES = ("loglike", "loglike_kish", "loglike_raw", "image")


def pixel_size_rad(nside: int) -> float:
    """Square root of the HEALPix pixel area (rad)."""
    return math.sqrt(4.0 * math.pi / (12.0 * nside * nside))


@dataclass(frozen=True)
class PixelAssignment:
    """Stars weighted onto pixels, CSR-like.

    Pixel ``pixels[i]`` uses stars ``star[indptr[i]:indptr[i+1]]`` with weights
    ``weight[indptr[i]:indptr[i+1]]`` (sorted by star index).
    """

    pixels: np.ndarray
    indptr: np.ndarray
    star: np.ndarray
    weight: np.ndarray

    def n_stars(self) -> np.ndarray:
        """Number of stars within the truncation radius of each pixel."""
        return np.diff(self.indptr)

    def stars_of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s = slice(self.indptr[i], self.indptr[i + 1])
        return self.star[s], self.weight[s]


def assign_stars_to_pixels(l_deg, b_deg, pixels, nside: int, *, fwhm_pixels: float = 2.5,
                           truncate_fwhm: float = 2.0) -> PixelAssignment:
    """Gaussian weights of stars on the given NESTED pixels.

    Parameters
    ----------
    l_deg, b_deg : array_like, shape (n_star,)
        Galactic coordinates of the stars (deg).
    pixels : array_like of int, shape (n_pix,)
        NESTED pixel indices at ``nside``.
    nside : int
        HEALPix nside (8192 for the real map).
    fwhm_pixels : float
        FWHM of the weighting Gaussian in pixel sizes (2.5).
    truncate_fwhm : float
        Truncation radius in FWHM (2).

    Returns
    -------
    PixelAssignment
    """
    nside = check_nside(nside)
    pixels = np.asarray(pixels, np.int64)
    if pixels.size and (pixels.min() < 0 or pixels.max() >= 12 * nside * nside):
        raise ValueError(f"pixels must lie in [0, {12 * nside * nside})")
    l_deg = np.asarray(l_deg, np.float64)
    b_deg = np.asarray(b_deg, np.float64)
    if l_deg.shape != b_deg.shape:
        raise ValueError("l_deg and b_deg must have the same shape")
    fwhm = fwhm_pixels * pixel_size_rad(nside)
    sigma = fwhm / math.sqrt(8.0 * math.log(2.0))
    radius = truncate_fwhm * fwhm
    chord = 2.0 * math.sin(0.5 * radius)
    centres = np.stack(hp.pix2vec(nside, pixels, nest=True), axis=-1) if pixels.size else \
        np.zeros((0, 3))
    if l_deg.size == 0 or pixels.size == 0:
        return PixelAssignment(pixels, np.zeros(pixels.size + 1, np.int64),
                               np.zeros(0, np.int64), np.zeros(0, np.float64))
    tree = cKDTree(lb_to_unit_vectors(l_deg, b_deg))
    hits = tree.query_ball_point(centres, chord, return_sorted=True)
    counts = np.array([len(h) for h in hits], np.int64)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    star = np.concatenate([np.asarray(h, np.int64) for h in hits]) if indptr[-1] else \
        np.zeros(0, np.int64)
    owner = np.repeat(np.arange(pixels.size), counts)
    stars_xyz = lb_to_unit_vectors(l_deg[star], b_deg[star])
    cosang = np.clip(np.einsum("ij,ij->i", stars_xyz, centres[owner]), -1.0, 1.0)
    # great-circle distance, accurate at small angles
    cross = np.linalg.norm(np.cross(stars_xyz, centres[owner]), axis=1)
    theta = np.arctan2(cross, cosang)
    weight = np.exp(-0.5 * (theta / sigma) ** 2)
    return PixelAssignment(pixels, indptr, star, weight)


def pixels_touched(l_deg, b_deg, nside: int, *, fwhm_pixels: float = 2.5,
                   truncate_fwhm: float = 2.0) -> np.ndarray:
    """Sorted NESTED pixels within the truncation radius of at least one star."""
    nside = check_nside(nside)
    radius = truncate_fwhm * fwhm_pixels * pixel_size_rad(nside)
    vecs = lb_to_unit_vectors(np.asarray(l_deg, float), np.asarray(b_deg, float))
    out = [hp.query_disc(nside, v, radius, inclusive=False, nest=True) for v in vecs]
    return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)


def likelihood_exponents(weights, mode: str = "loglike") -> np.ndarray:
    """Exponents of the stars' likelihoods in a pixel's fit for a weighting choice.

    Parameters
    ----------
    weights : array_like, shape (n,)
        The stars' Gaussian pixel weights ``w`` (:func:`assign_stars_to_pixels`).
    mode : {"loglike", "loglike_kish", "loglike_raw", "image"}
        ``"loglike"``: ``w n / sum(w)`` (the ``n`` stars weigh ``n`` in all);
        ``"loglike_kish"``: ``w sum(w) / sum(w^2)``, which sum to Kish's effective number
        of stars ``sum(w)^2 / sum(w^2)`` -- the normalisation under which the posterior's
        width matches the scatter of the weighted estimate (the sampler's samples then
        cover a truth drawn from its prior, :mod:`.calibration`); ``"loglike_raw"``: ``w``;
        ``"image"``: ``w`` (used as a factor on the image, not as an exponent).

    Returns
    -------
    numpy.ndarray, shape (n,), float64
    """
    w = np.asarray(weights, np.float64)
    if mode not in WEIGHT_MODES:
        raise ValueError(f"weight mode must be one of {WEIGHT_MODES}, not {mode!r}")
    if w.ndim != 1 or np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be a 1D array of finite, non-negative values")
    total = w.sum()
    if w.size == 0 or total == 0.0:
        return w.copy()
    if mode == "loglike":
        return w * (w.size / total)
    if mode == "loglike_kish":
        return w * (total / np.dot(w, w))
    return w.copy()
