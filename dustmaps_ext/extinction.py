"""From reddening to extinction in a band: ``A_band = coefficient x E(B-V)``.

Three sources of coefficients, each for the maps whose reddening scale it matches:

DECaPS bands (Zucker et al. 2025, Table 2 and eq. 1)
    The paper models a star's magnitudes as ``m = M + mu + A_V (R + R_V R')`` (eq. 1),
    with the mean reddening vector ``R`` and the differential vector ``R'`` of its
    Table 2, and releases ``E(B-V) = A_V / R_V`` with the mean ``R_V = 3.32``. Hence
    ``A_b / A_V = R_b + R_V R'_b`` and

        ``A_b / E(B-V) = R_V (R_b + R_V R'_b)``.

    brutus, which computed the stellar posteriors, applies the two vectors the same way:
    its reddened magnitude is ``mag + A_V (R_0 + R_V dR/dR_V)``, ``R_0`` being the vector
    "for R_V = 0" and ``dR/dR_V`` its derivative. ``R`` alone is not an extinction curve:
    it would give ``A_g / A_Ks = 42`` and ``A_i / A_V = 0.35``, where the sum gives 11.4
    and 0.68, close to the usual values near ``R_V = 3.1`` to 3.3 (about 10 to 12, and 0.6
    to 0.7). These coefficients apply to E(B-V) of the DECaPS map, of the combined map
    (DECaPS' scale; its Bayestar19 part is converted to E(B-V) first) and of the Wang et
    al. (2025) map, whose E(B-V) is a Johnson B-V colour excess (from synthetic B, V
    photometry); for Wang's map they are an approximation (its E(B-V) was not built from
    ``A_V / R_V``).

Bayestar19 bands (Green et al. 2019, Table 1)
    Bayestar19 is in arbitrary units; ``A_b = coefficient x value`` with the
    coefficients of Green et al. (2019), Table 1, for Pan-STARRS 1 grizy and 2MASS JHKs
    (:data:`BAYESTAR19_COEFFICIENTS`; no ``R_V`` dependence). They apply to the values
    of :class:`~dustmaps_ext.bayestar.Bayestar19Query` only (not to its E(B-V) after the
    0.884 or 0.996 conversion).

Any other band or wavelength
    ``A_lambda / E(B-V) = R_V A_lambda / A_V`` from a published extinction curve of the
    ``dust_extinction`` package (Gordon et al. 2023, ``G23``, by default; any of its
    ``parameter_averages`` models by name) at the given ``R_V`` and wavelength.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

# numpy is imported where it is used, so that ``dustmaps-ext --help`` (which lists the band
# names) stays free of heavy imports

__all__ = [
    "BAYESTAR19_BANDS",
    "BAYESTAR19_COEFFICIENTS",
    "DECAPS_BANDS",
    "DECAPS_TABLE2",
    "DEFAULT_R_V",
    "bayestar19_coefficient",
    "curve_coefficient",
    "extinction_coefficient",
]

#: Mean R_V of the DECaPS stellar inference (Zucker et al. 2025, §4.1.1 and §5).
DEFAULT_R_V = 3.32

#: Zucker et al. (2025), Table 2: band -> (R, R'), normalised to A_V = 1 mag at R_V = 3.32.
DECAPS_TABLE2: Mapping[str, tuple[float, float]] = MappingProxyType({
    "decam_g": (1.3285, -0.0169),
    "decam_r": (0.7000, 0.0631),
    "decam_i": (0.3529, 0.0982),
    "decam_z": (0.1814, 0.0989),
    "decam_y": (0.1297, 0.0933),
    "vista_j": (0.0823, 0.0609),
    "vista_h": (0.0492, 0.0371),
    "vista_ks": (0.0318, 0.0241),
    "2mass_j": (0.0835, 0.0624),
    "2mass_h": (0.0489, 0.0370),
    "2mass_ks": (0.0315, 0.0239),
    "wise_w1": (0.0484, 0.0052),
    "wise_w2": (0.0746, -0.0080),
})
#: The 13 band names of :data:`DECAPS_TABLE2`, in the paper's order.
DECAPS_BANDS = tuple(DECAPS_TABLE2)

#: Green et al. (2019), Table 1: extinction per unit of Bayestar19 reddening.
BAYESTAR19_COEFFICIENTS: Mapping[str, float] = MappingProxyType({
    "ps1_g": 3.518,
    "ps1_r": 2.617,
    "ps1_i": 1.971,
    "ps1_z": 1.549,
    "ps1_y": 1.263,
    "2mass_j": 0.7927,
    "2mass_h": 0.4690,
    "2mass_ks": 0.3026,
})
#: The band names of :data:`BAYESTAR19_COEFFICIENTS`.
BAYESTAR19_BANDS = tuple(BAYESTAR19_COEFFICIENTS)


def _check_r_v(r_v):
    import numpy as np

    arr = np.asarray(r_v, dtype=np.float64)
    if arr.size and not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
        raise ValueError(f"r_v must be finite and positive; got {r_v!r}")
    return arr


def _unknown_band(band, valid) -> ValueError:
    return ValueError(f"unknown band {band!r}; valid bands: {', '.join(valid)} "
                      "(or a wavelength as an astropy Quantity)")


def extinction_coefficient(band, r_v=DEFAULT_R_V, *, curve: str = "G23"):
    """``A_band / E(B-V)`` on the DECaPS reddening scale (``E(B-V) = A_V / R_V``).

    Parameters
    ----------
    band : str or astropy.units.Quantity
        One of :data:`DECAPS_BANDS` (``decam_g``, ..., ``wise_w2``; case-insensitive),
        computed from Zucker et al. (2025) Table 2 as ``R_V (R + R_V R')``; or a
        wavelength (any spectral unit), computed with :func:`curve_coefficient`.
    r_v : float or array_like
        R_V; an array gives one coefficient per star (broadcast). Table 2's ``R'`` is the
        derivative at R_V = 3.32 (the prior's spread is 0.18), so values far from it
        extrapolate a linear model.
    curve : str, keyword-only
        The ``dust_extinction.parameter_averages`` model for a wavelength.

    Returns
    -------
    float or numpy.ndarray
        A float for a scalar ``r_v``, else an array shaped like ``r_v``.

    Raises
    ------
    ValueError
        For an unknown band (the message lists the valid ones) or an ``r_v`` that is not
        finite and positive.

    Examples
    --------
    >>> from dustmaps_ext.extinction import extinction_coefficient
    >>> round(extinction_coefficient("decam_g"), 4)
    4.2243
    >>> round(extinction_coefficient("2mass_ks"), 4)
    0.368
    """
    if hasattr(band, "unit"):
        return curve_coefficient(band, r_v, curve=curve)
    if not isinstance(band, str) or band.lower() not in DECAPS_TABLE2:
        raise _unknown_band(band, DECAPS_BANDS)
    r, r_prime = DECAPS_TABLE2[band.lower()]
    rv = _check_r_v(r_v)
    out = rv * (r + rv * r_prime)
    return float(out) if out.ndim == 0 else out


def bayestar19_coefficient(band: str) -> float:
    """``A_band`` per unit of Bayestar19 reddening (Green et al. 2019, Table 1).

    Parameters
    ----------
    band : str
        One of :data:`BAYESTAR19_BANDS` (``ps1_g`` ... ``ps1_y``, ``2mass_j``,
        ``2mass_h``, ``2mass_ks``; case-insensitive).

    Raises
    ------
    ValueError
        For an unknown band (the message lists the valid ones).
    """
    if not isinstance(band, str) or band.lower() not in BAYESTAR19_COEFFICIENTS:
        raise ValueError(f"unknown Bayestar19 band {band!r}; valid bands: "
                         + ", ".join(BAYESTAR19_BANDS))
    return BAYESTAR19_COEFFICIENTS[band.lower()]


def curve_coefficient(wavelength, r_v=DEFAULT_R_V, *, curve: str = "G23"):
    """``A_lambda / E(B-V) = R_V A_lambda / A_V`` from a ``dust_extinction`` curve.

    Parameters
    ----------
    wavelength : astropy.units.Quantity
        Wavelength (or frequency, wavenumber) within the curve's range; scalar or array.
    r_v : float
        R_V of the curve (within the model's ``Rv_range``; 2.3 to 5.6 for ``G23``).
    curve : str
        A model of ``dust_extinction.parameter_averages`` (``G23`` by default: Gordon et
        al. 2023; ``F99``, ``CCM89``, ...).

    Returns
    -------
    float or numpy.ndarray

    Raises
    ------
    ValueError
        For an unknown curve, a wavelength outside its range or an ``R_V`` outside its
        ``Rv_range`` (the last two from ``dust_extinction``).
    """
    import astropy.units as u
    from dust_extinction import parameter_averages

    model_cls = getattr(parameter_averages, curve, None)
    names = [n for n in getattr(parameter_averages, "__all__", ()) if n[0].isupper()]
    if model_cls is None or not isinstance(model_cls, type):
        raise ValueError(f"unknown extinction curve {curve!r}; dust_extinction offers: "
                         + ", ".join(names))
    if not isinstance(wavelength, u.Quantity):
        raise TypeError("wavelength must be an astropy Quantity (e.g. 550 * u.nm)")
    rv = float(_check_r_v(r_v))
    if not math.isfinite(rv):
        raise ValueError(f"r_v must be a finite scalar for a curve; got {r_v!r}")
    import numpy as np

    out = rv * np.asarray(model_cls(Rv=rv)(wavelength), dtype=np.float64)
    return float(out) if out.ndim == 0 else out
