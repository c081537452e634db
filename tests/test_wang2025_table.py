"""Validation of released-format tables and of converted files: clear errors naming what
is missing or wrong."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
from astropy.table import Table

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # dustmaps warns on import without ~/.dustmapsrc
    import dustmaps.map_base  # noqa: F401

from dustmaps_ext._core.parametric import AUX_FIELDS, EBV_FIELDS, TABLE_COLUMNS
from dustmaps_ext._io import wang2025 as pt
from dustmaps_ext.wang2025 import Wang2025Query, convert_table


def _small_fits(path, n=100, drop=()):
    cols = {c: np.ones(n, np.float32) for c in TABLE_COLUMNS if c not in drop}
    Table(cols).write(path, format="fits")
    return path


def test_missing_columns_are_named(tmp_path):
    src = _small_fits(tmp_path / "t.fits", drop=("span_3", "sigma_1_4"))
    with pytest.raises(ValueError, match="lacks the columns span_3, sigma_1_4"):
        convert_table(src, tmp_path / "t.h5", progress=False)
    assert not list(tmp_path.glob("*.h5")) and not list(tmp_path.glob(".*tmp"))


def test_wrong_row_count_is_named(tmp_path):
    src = _small_fits(tmp_path / "t.fits", n=1000)
    with pytest.raises(ValueError, match=r"has 1,000 rows; it needs 12,582,912"):
        convert_table(src, tmp_path / "t.h5", progress=False)
    with pytest.raises(ValueError, match="has 1,000 rows"):
        Wang2025Query(src)


def test_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="no parametric table"):
        convert_table(tmp_path / "nope.fits", tmp_path / "t.h5", progress=False)
    with pytest.raises(FileNotFoundError, match="no converted"):
        Wang2025Query(tmp_path / "nope.h5")


def _fake_converted(path, *, rows=pt.NROWS, ebv_fields=EBV_FIELDS, complete=True,
                    chunks=False, fmt=pt.FORMAT_NAME):
    with h5py.File(path, "w") as f:
        for name, fields in (("ebv_records", ebv_fields), ("aux_records", AUX_FIELDS)):
            ds = f.create_dataset(name, shape=(rows, len(fields)), dtype="f4",
                                  chunks=(1024, len(fields)) if chunks else None)
            ds.attrs["fields"] = np.array(fields, dtype=h5py.string_dtype())
        f.attrs["format"] = fmt
        f.attrs["format_version"] = pt.FORMAT_VERSION
        if complete:
            f.attrs["complete"] = True
    return path


@pytest.mark.parametrize("kwargs, message", [
    ({"complete": False}, "incomplete"),
    ({"rows": 10}, "has 10 rows; it needs 12,582,912"),
    ({"ebv_fields": EBV_FIELDS[:-2], "rows": 10}, "lacks the columns norm_4, offset_4"),
    ({"fmt": "something else"}, "not a converted"),
    ({"chunks": True}, "not stored contiguously"),
])
def test_bad_converted_files(tmp_path, kwargs, message):
    path = _fake_converted(tmp_path / "x.h5", **kwargs)
    with pytest.raises(ValueError, match=message):
        pt.open_table(path)
