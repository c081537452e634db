"""dustmaps_ext.extinction against the paper's Table 2, dust_extinction and plausibility.

References: Zucker et al. (2025) Table 2 (typed here from the paper's text, independently of
the module's dict), its eq. (1) read as A_b / A_V = R + R_V R', and dust_extinction's G23
curve (Gordon et al. 2023) called directly.
"""

from __future__ import annotations

import itertools

import astropy.units as u
import numpy as np
import pytest
from dust_extinction.parameter_averages import F99, G23

from dustmaps_ext.extinction import (
    BAYESTAR19_BANDS,
    DECAPS_BANDS,
    bayestar19_coefficient,
    curve_coefficient,
    extinction_coefficient,
)

# Zucker et al. (2025), Table 2: filter, R, R'
TABLE2 = """
DECam g 1.3285 -0.0169
DECam r 0.7000 0.0631
DECam i 0.3529 0.0982
DECam z 0.1814 0.0989
DECam Y 0.1297 0.0933
VISTA J 0.0823 0.0609
VISTA H 0.0492 0.0371
VISTA K 0.0318 0.0241
2MASS J 0.0835 0.0624
2MASS H 0.0489 0.0370
2MASS K 0.0315 0.0239
WISE W1 0.0484 0.0052
WISE W2 0.0746 -0.0080
"""
NAMES = {"DECam": "decam", "VISTA": "vista", "2MASS": "2mass", "WISE": "wise"}
# effective wavelengths (um) for the order test and the curve comparison
LAMBDA_UM = {"decam_g": 0.481, "decam_r": 0.641, "decam_i": 0.781, "decam_z": 0.916,
             "decam_y": 0.988, "vista_j": 1.252, "vista_h": 1.645, "vista_ks": 2.147,
             "wise_w1": 3.35, "wise_w2": 4.60}


def _table2():
    rows = {}
    for line in TABLE2.strip().splitlines():
        survey, band, r, rp = line.split()
        band = band.lower()
        if band == "k":
            band = "ks"
        rows[f"{NAMES[survey]}_{band}"] = (float(r), float(rp))
    return rows


def test_thirteen_bands_named_as_the_issue():
    assert set(DECAPS_BANDS) == set(_table2()) and len(DECAPS_BANDS) == 13


@pytest.mark.parametrize("r_v", [3.32, 3.1, 2.9])
def test_table2_reproduced(r_v):
    for band, (r, rp) in _table2().items():
        assert extinction_coefficient(band, r_v) == pytest.approx(r_v * (r + r_v * rp), rel=1e-12)


def test_sum_reading_is_a_plausible_curve_and_r_alone_is_not():
    """The reading R + R_V R' follows G23 at R_V = 3.32 within 20% in every optical/IR band;
    R alone (the baseline that should lose) is off by a factor ~3 in the near-IR."""
    table = _table2()
    curve = G23(Rv=3.32)
    worst_sum, worst_r = 0.0, 0.0
    for band, lam in LAMBDA_UM.items():
        if lam > 3.0:  # G23 stops at 32 um but the WISE W2 value is known to be high
            continue
        ref = float(curve(lam * u.micron))  # A_lambda / A_V
        r, rp = table[band]
        worst_sum = max(worst_sum, abs((r + 3.32 * rp) / ref - 1))
        worst_r = max(worst_r, abs(r / ref - 1))
    assert worst_sum < 0.2
    assert worst_r > 0.6
    ratio_r_alone = table["decam_g"][0] / table["vista_ks"][0]
    assert ratio_r_alone == pytest.approx(42, abs=0.5)
    assert extinction_coefficient("decam_g") / extinction_coefficient("vista_ks") == pytest.approx(11.4, abs=0.1)


def test_monotone_in_wavelength():
    for seq in (["decam_g", "decam_r", "decam_i", "decam_z", "decam_y", "vista_j", "vista_h",
                 "vista_ks", "wise_w1", "wise_w2"],
                ["decam_g", "decam_r", "decam_i", "decam_z", "decam_y", "2mass_j", "2mass_h",
                 "2mass_ks"]):
        values = [extinction_coefficient(b) for b in seq]
        assert all(a > b for a, b in itertools.pairwise(values)), dict(zip(seq, values))


def test_per_star_r_v_broadcasts():
    r_v = np.array([[3.0, 3.32], [3.5, 4.0]])
    out = extinction_coefficient("decam_i", r_v)
    assert out.shape == (2, 2)
    for idx in np.ndindex(2, 2):
        assert out[idx] == extinction_coefficient("decam_i", float(r_v[idx]))


def test_curve_path_is_dust_extinction_itself():
    lam = np.array([0.45, 0.55, 0.8, 1.6]) * u.micron
    np.testing.assert_allclose(curve_coefficient(lam, 3.1), 3.1 * G23(Rv=3.1)(lam), rtol=1e-14)
    assert extinction_coefficient(550 * u.nm, 3.32) == pytest.approx(3.32 * float(G23(Rv=3.32)(550 * u.nm)))
    assert curve_coefficient(1.2 * u.micron, 3.1, curve="F99") == pytest.approx(
        3.1 * float(F99(Rv=3.1)(1.2 * u.micron)))
    # A_V / E(B-V) = R_V at V, by definition of the curve's normalisation
    assert curve_coefficient(0.55 * u.micron, 3.1, curve="F99") == pytest.approx(3.1, rel=0.03)


def test_bad_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown band 'g'; valid bands: decam_g, decam_r"):
        extinction_coefficient("g")
    with pytest.raises(ValueError, match="ps1_g, ps1_r"):
        bayestar19_coefficient("decam_g")
    with pytest.raises(ValueError, match="dust_extinction offers: .*G23"):
        curve_coefficient(550 * u.nm, curve="nope")
    with pytest.raises(ValueError, match="finite and positive"):
        extinction_coefficient("decam_g", [3.1, -1.0])
    with pytest.raises(TypeError, match="Quantity"):
        curve_coefficient(550.0)


def test_bayestar19_coefficients_green2019_table1():
    assert BAYESTAR19_BANDS == ("ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_y", "2mass_j",
                                "2mass_h", "2mass_ks")
    values = [bayestar19_coefficient(b) for b in BAYESTAR19_BANDS]
    assert values == [3.518, 2.617, 1.971, 1.549, 1.263, 0.7927, 0.4690, 0.3026]
    assert bayestar19_coefficient("PS1_G") == 3.518
