"""Star catalogs: the three file formats, column renaming and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from dustmaps_ext_build.parametric.catalog import (CATALOG_COLUMNS, StarCatalog, read_catalog,
                                            write_catalog)


def _columns(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return {"l": rng.uniform(0, 360, n), "b": rng.uniform(-90, 90, n),
            "ebv": rng.uniform(0, 1, n), "ebv_err": rng.uniform(0.01, 0.05, n),
            "distance": rng.uniform(0.1, 5, n), "distance_err_lo": rng.uniform(0, 0.5, n),
            "distance_err_hi": rng.uniform(0, 0.8, n)}


@pytest.mark.parametrize("suffix", [".parquet", ".fits", ".h5", ".csv", ".ecsv"])
def test_round_trip(tmp_path, suffix):
    cat = StarCatalog.from_arrays(_columns())
    path = write_catalog(cat, tmp_path / f"stars{suffix}")
    back = read_catalog(path)
    for c in CATALOG_COLUMNS:
        np.testing.assert_array_equal(getattr(back, c), getattr(cat, c))
    with pytest.raises(FileExistsError):
        write_catalog(cat, path)


def test_column_map_and_missing_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = _columns()
    cols["ebv_error"] = cols.pop("ebv_err")
    path = tmp_path / "renamed.parquet"
    pq.write_table(pa.table(cols), path)
    with pytest.raises(ValueError, match=r"missing column\(s\) 'ebv_err'"):
        read_catalog(path)
    cat = read_catalog(path, column_map={"ebv_err": "ebv_error"})
    np.testing.assert_array_equal(cat.ebv_err, cols["ebv_error"])
    with pytest.raises(ValueError, match="'nope' \\(for 'ebv'\\)"):
        read_catalog(path, column_map={"ebv": "nope", "ebv_err": "ebv_error"})
    with pytest.raises(ValueError, match="unknown canonical"):
        read_catalog(path, column_map={"EBV": "ebv"})


def test_hdf5_group_and_format_errors(tmp_path):
    import h5py

    path = tmp_path / "stars.hdf5"
    with h5py.File(path, "w") as f:
        g = f.create_group("gaia")
        for c, a in _columns().items():
            g.create_dataset(c, data=a)
    assert len(read_catalog(path, hdf5_group="gaia")) == 50
    with pytest.raises(ValueError, match="missing column"):
        read_catalog(path)
    with pytest.raises(ValueError, match="no HDF5 group"):
        read_catalog(path, hdf5_group="lamost")
    odd = tmp_path / "stars.votable"
    odd.write_text("l,b\n")
    with pytest.raises(ValueError, match="cannot tell the catalog format.*--format"):
        read_catalog(odd)
    with pytest.raises(ValueError, match="unknown catalog format 'votable'.*--format"):
        read_catalog(odd, format="votable")
    with pytest.raises(FileNotFoundError):
        read_catalog(tmp_path / "absent.fits")


def test_invalid_rows_are_dropped_with_a_warning():
    cols = _columns(10)
    cols["ebv"][0] = np.nan
    cols["ebv_err"][1] = 0.0
    cols["distance"][2] = -1.0
    cols["b"][3] = 95.0
    cols["distance_err_hi"][4] = -0.1
    cols["l"][5] = 365.0
    with pytest.warns(RuntimeWarning, match="dropped 5 of 10"):
        cat = StarCatalog.from_arrays(cols)
    assert len(cat) == 5
    assert cat.l[0] == pytest.approx(5.0)  # longitudes wrapped into [0, 360)
    with pytest.raises(ValueError, match="5 row"):
        StarCatalog.from_arrays(cols, drop_invalid=False)


def test_shape_and_type_errors():
    cols = _columns(10)
    cols["b"] = cols["b"][:5]
    with pytest.raises(ValueError, match="different lengths"):
        StarCatalog.from_arrays(cols)
    cols = _columns(10)
    cols["l"] = np.array(["a"] * 10)
    with pytest.raises(TypeError, match="numeric"):
        StarCatalog.from_arrays(cols)


def test_csv_written_by_other_tools(tmp_path):
    """A plain CSV (pandas-style, renamed columns, an empty field) and a gzipped one."""
    import gzip

    cols = _columns(20)
    header = ",".join(("EBV_ERR" if c == "ebv_err" else c) for c in cols)
    lines = [header] + [",".join(repr(float(cols[c][i])) for c in cols) for i in range(20)]
    lines[3] = lines[3].replace(lines[3].split(",")[2], "", 1)  # a missing ebv value
    text = "\n".join(lines) + "\n"
    path = tmp_path / "stars.csv"
    path.write_text(text)
    with pytest.warns(RuntimeWarning, match="dropped 1 of 20"):
        cat = read_catalog(path, column_map={"ebv_err": "EBV_ERR"})
    assert len(cat) == 19
    np.testing.assert_array_equal(cat.distance, np.delete(cols["distance"], 2))
    gz = tmp_path / "stars.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    with pytest.warns(RuntimeWarning):
        np.testing.assert_array_equal(read_catalog(gz, column_map={"ebv_err": "EBV_ERR"}).l,
                                      cat.l)
    bad = tmp_path / "bad.csv"
    bad.write_text("l,b\n1,2,3,4\n")
    with pytest.raises(ValueError, match="not a readable CSV"):
        read_catalog(bad)
