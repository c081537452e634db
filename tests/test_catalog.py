"""add_extinction on astropy Tables and pandas DataFrames: the query object's own answers,
the extinction coefficients, the parallax rule, flags, percentiles and column options.

Reference: each query object asked directly with a SkyCoord (and the coefficients of
dustmaps_ext.extinction, themselves tested against the paper's Table 2).
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table

from dustmaps_ext.bayestar import Bayestar19Query
from dustmaps_ext.catalog import add_extinction, parallax_to_distance
from dustmaps_ext.combined import BayestarDECaPSQuery
from dustmaps_ext.decaps import DECaPSQuery, DECaPSQueryLite
from dustmaps_ext.extinction import bayestar19_coefficient, extinction_coefficient
from dustmaps_ext.wang2025 import Wang2025Query
from helpers.catalog_maps import make_map_files, star_positions

N = 600


@pytest.fixture(scope="module")
def stars():
    l_deg, b_deg, d_kpc = star_positions(N, seed=11)
    parallax = 1.0 / d_kpc
    parallax[::37] = -0.2  # negative parallaxes
    parallax[5::41] = 0.0
    parallax[7::43] = np.nan
    icrs = SkyCoord(l_deg * u.deg, b_deg * u.deg, frame="galactic").icrs
    return pd.DataFrame({"ra": icrs.ra.deg, "dec": icrs.dec.deg, "l": l_deg, "b": b_deg,
                         "parallax": parallax, "mag_g": np.linspace(12, 20, N)})


@pytest.fixture(scope="module")
def maps(tmp_path_factory, stars):
    return make_map_files(tmp_path_factory.mktemp("catalog_maps"), stars["l"].to_numpy(),
                          stars["b"].to_numpy())


@pytest.fixture(scope="module")
def lite(maps):
    return DECaPSQueryLite(maps["decaps_repacked"])


def _inverse(x):
    with np.errstate(divide="ignore"):
        return 1.0 / np.asarray(x, dtype=np.float64)


def _direct(query, frame, **kwargs):
    """The object's own answer at the rows' positions (ICRS + 1/parallax)."""
    d = _inverse(frame["parallax"].to_numpy())
    good = np.isfinite(d) & (d > 0)
    coords = SkyCoord(frame["ra"].to_numpy() * u.deg, frame["dec"].to_numpy() * u.deg,
                      distance=np.where(good, d, 1.0) * u.kpc, frame="icrs")
    if isinstance(query, Wang2025Query):
        out = query.query(coords)
    else:
        out = query.query(coords, **kwargs)
    out = np.array(out, dtype=np.float64)
    out[~good] = np.nan
    return out


def test_parallax_rule():
    np.testing.assert_array_equal(parallax_to_distance([2.0, 0.0, -1.0, np.nan, 0.5]),
                                  [0.5, np.nan, np.nan, np.nan, 2.0])


@pytest.mark.parametrize("kind", ["DECaPSQuery", "DECaPSQueryLite", "Bayestar19Query",
                                  "BayestarDECaPSQuery", "Wang2025Query"])
def test_values_equal_the_query_objects_answer(kind, maps, stars):
    query = {"DECaPSQuery": lambda: DECaPSQuery(maps["decaps"], progress=False),
             "DECaPSQueryLite": lambda: DECaPSQueryLite(maps["decaps_repacked"]),
             "Bayestar19Query": lambda: Bayestar19Query(maps["bayestar"], progress=False),
             "BayestarDECaPSQuery": lambda: BayestarDECaPSQuery(maps["decaps_repacked"], maps["bayestar"],
                                                                progress=False),
             "Wang2025Query": lambda: Wang2025Query(maps["wang"])}[kind]()
    kwargs = {"mode": "mean"} if kind != "Wang2025Query" else {}
    bands = ["ps1_g", "2mass_ks"] if kind == "Bayestar19Query" else ["decam_g", "vista_ks"]
    out = add_extinction(stars, query, bands=bands, chunk_rows=97)
    expected = _direct(query, stars, **kwargs)
    assert np.isfinite(expected).sum() > 40
    assert out["ebv"].dtype == np.float32
    np.testing.assert_array_equal(out["ebv"].to_numpy(), expected.astype(np.float32))
    for band in bands:
        coef = (bayestar19_coefficient(band) if kind == "Bayestar19Query"
                else extinction_coefficient(band))
        np.testing.assert_array_equal(out[f"A_{band}"].to_numpy(), (coef * expected).astype(np.float32))
    assert list(out.columns[:len(stars.columns)]) == list(stars.columns)
    assert "ebv" not in stars.columns  # the input is left alone


def test_invalid_parallaxes_give_nan_never_a_number(lite, stars, maps):
    wang = Wang2025Query(maps["wang"])  # NaN distance means "max distance" to the Wang map
    bad = ~(stars["parallax"] > 0)
    assert bad.sum() > 20
    for query in (lite, wang):
        out = add_extinction(stars, query, bands=["decam_r"], flags=True)
        assert out.loc[bad, ["ebv", "A_decam_r"]].isna().all().all()
        for col in out.columns:
            if col.startswith("ebv_") and out[col].dtype == bool:
                assert not out.loc[bad, col].any()


def test_table_input_with_units_and_galactic_columns(lite, stars):
    table = Table({"l": stars["l"].to_numpy() * u.deg, "b": stars["b"].to_numpy() * u.deg,
                   "distance": 1000.0 * _inverse(stars["parallax"].to_numpy()) * u.pc})
    out = add_extinction(table, lite)
    assert isinstance(out, Table) and "ebv" not in table.colnames
    expected = _direct(lite, stars, mode="mean")
    np.testing.assert_array_equal(np.asarray(out["ebv"]), expected.astype(np.float32))


def test_dtype_float16_only_when_asked(lite, stars):
    raw = lite.query(SkyCoord(stars["l"].to_numpy() * u.deg, stars["b"].to_numpy() * u.deg,
                              distance=2 * u.kpc, frame="galactic"))
    assert raw.dtype == np.float16  # what the map answers
    frame = stars.assign(distance=2.0)
    assert add_extinction(frame, lite)["ebv"].dtype == np.float32
    assert add_extinction(frame, lite, dtype="float64")["ebv"].dtype == np.float64
    half = add_extinction(frame, lite, dtype=np.float16)["ebv"].to_numpy()
    np.testing.assert_array_equal(half, raw)
    with pytest.raises(ValueError, match="floating"):
        add_extinction(frame, lite, dtype=int)


def test_percentiles_flags_and_column_names(maps, stars):
    full = DECaPSQuery(maps["decaps"], progress=False)
    frame = stars.rename(columns={"ra": "RA_ICRS", "dec": "DE_ICRS", "parallax": "plx"}).drop(
        columns=["l", "b"])
    out = add_extinction(frame, full, bands=["decam_i"], mode="percentile", pct=[16, 84],
                         flags=True, ra_col="RA_ICRS", dec_col="DE_ICRS", parallax_col="plx",
                         ebv_col="EBV", band_prefix="ext_", chunk_rows=50)
    assert [c for c in out.columns if c not in frame.columns] == [
        "EBV_p16", "EBV_p84", "ext_decam_i_p16", "ext_decam_i_p84", "EBV_converged",
        "EBV_infilled", "EBV_reliable_dist"]
    expected = _direct(full, stars, mode="percentile", pct=[16, 84])
    np.testing.assert_array_equal(out["EBV_p84"].to_numpy(), expected[:, 1].astype(np.float32))
    coords = SkyCoord(stars["ra"].to_numpy() * u.deg, stars["dec"].to_numpy() * u.deg,
                      distance=np.abs(np.nan_to_num(_inverse(stars["parallax"]), posinf=1.0)) * u.kpc)
    _, flags = full.query(coords, return_flags=True)
    good = (stars["parallax"] > 0).to_numpy()
    np.testing.assert_array_equal(out["EBV_converged"].to_numpy()[good], flags["converged"][good])


def test_per_star_r_v_column(lite, stars):
    frame = stars.assign(rv=np.linspace(2.9, 3.7, N))
    out = add_extinction(frame, lite, bands=["decam_z"], r_v="rv")
    expected = extinction_coefficient("decam_z", frame["rv"].to_numpy()) * _direct(lite, stars, mode="mean")
    np.testing.assert_array_equal(out["A_decam_z"].to_numpy(), expected.astype(np.float32))


def test_combined_map_source_flag(maps, stars):
    combined = BayestarDECaPSQuery(maps["decaps_repacked"], maps["bayestar"], progress=False)
    out = add_extinction(stars, combined, flags=True)
    assert set(out["ebv_source"]) <= {"decaps", "bayestar", "none"}
    assert (out["ebv_source"] == "decaps").sum() > 100


def test_clear_errors(lite, stars, maps):
    with pytest.raises(ValueError, match="no positions.*'ra' and 'dec'"):
        add_extinction(stars[["parallax"]], lite)
    with pytest.raises(ValueError, match="no distances.*'parallax'"):
        add_extinction(stars[["ra", "dec"]], lite)
    with pytest.raises(ValueError, match="unknown band 'G'; valid bands: decam_g"):
        add_extinction(stars, lite, bands=["G"])
    with pytest.raises(ValueError, match="unknown Bayestar19 band 'decam_g'"):
        add_extinction(stars, Bayestar19Query(maps["bayestar"], progress=False), bands=["decam_g"])
    with pytest.raises(ValueError, match="'samples' has no single column"):
        add_extinction(stars, lite, mode="samples")
    with pytest.raises(ValueError, match="needs pct"):
        add_extinction(stars, lite, mode="percentile")
    with pytest.raises(ValueError, match="use mode='mean'"):
        add_extinction(stars, Wang2025Query(maps["wang"]), mode="median")
    with pytest.raises(TypeError, match="astropy Table, a pandas DataFrame"):
        add_extinction(stars.to_dict(), lite)


def test_empty_input(lite, stars):
    out = add_extinction(stars.iloc[:0], lite, bands=["decam_g"], flags=True)
    assert len(out) == 0 and out["ebv"].dtype == np.float32 and "ebv_converged" in out
