"""``dustmaps-ext query``: files of every format in and out, atomic writes, progress, one-off form.

Reference: the query object's own answer (DECaPSQuery on the demo map) at the same rows.
"""

from __future__ import annotations

import os
import subprocess
import sys

import astropy.units as u
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table

from dustmaps_ext import catalog
from dustmaps_ext._demo import demo_map_path
from dustmaps_ext.cli import main
from dustmaps_ext.decaps import DECaPSQuery
from dustmaps_ext.extinction import extinction_coefficient
from helpers.catalog_maps import star_positions

N = 5000
MAP = ["--map", "decaps-full", "--map-file", str(demo_map_path())]


@pytest.fixture(scope="module")
def frame():
    l_deg, b_deg, d_kpc = star_positions(N, seed=23)
    plx = 1.0 / d_kpc
    plx[::29] = -0.5
    return pd.DataFrame({"source_id": np.arange(N, dtype=np.int64), "l": l_deg, "b": b_deg,
                         "parallax": plx, "name": [f"s{i}" for i in range(N)]})


@pytest.fixture(scope="module")
def expected(frame):
    query = DECaPSQuery(demo_map_path(), progress=False)
    plx = frame["parallax"].to_numpy()
    good = plx > 0
    d = np.where(good, 1.0 / np.where(good, plx, 1.0), 1.0)
    ebv = query(SkyCoord(frame["l"].to_numpy() * u.deg, frame["b"].to_numpy() * u.deg,
                         distance=d * u.kpc, frame="galactic")).astype(np.float64)
    ebv[~good] = np.nan
    assert np.isfinite(ebv).sum() > N // 2
    return ebv


def test_parquet_streamed_by_batches_keeps_input_columns(tmp_path, frame, expected, capsys):
    src, dst = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), src, row_group_size=1200)
    assert main(["query", str(src), str(dst), *MAP, "--bands", "decam_g", "wise_w1",
                 "--chunk-rows", "700", "--no-progress"]) == 0
    assert f"wrote {dst} ({N} rows)" in capsys.readouterr().out
    out = pq.read_table(dst)
    assert out.schema.names == list(frame.columns) + ["ebv", "A_decam_g", "A_wise_w1"]
    assert out.schema.field("ebv").type == pa.float32()
    assert out.column("name").to_pylist() == frame["name"].tolist()
    np.testing.assert_array_equal(out.column("ebv").to_numpy(), expected.astype(np.float32))
    np.testing.assert_array_equal(out.column("A_wise_w1").to_numpy(),
                                  (extinction_coefficient("wise_w1") * expected).astype(np.float32))


@pytest.mark.parametrize("suffix_in, suffix_out", [(".fits", ".fits"), (".csv", ".ecsv"),
                                                   (".ecsv", ".parquet"), (".parquet", ".fits")])
def test_formats_by_extension(tmp_path, frame, expected, suffix_in, suffix_out):
    src, dst = tmp_path / f"in{suffix_in}", tmp_path / f"out{suffix_out}"
    table = Table.from_pandas(frame)
    if suffix_in == ".csv":
        table.write(src, format="ascii.csv")
    else:
        table.write(src)
    assert main(["query", str(src), str(dst), *MAP, "--flags", "--no-progress"]) == 0
    out = Table.read(dst)
    assert len(out) == N
    np.testing.assert_array_equal(np.asarray(out["ebv"], dtype=np.float32), expected.astype(np.float32))
    assert out["ebv_converged"].dtype == bool
    assert out["source_id"].tolist() == frame["source_id"].tolist()


def test_atomic_write_and_input_protection(tmp_path, frame, monkeypatch, capsys):
    src, dst = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), src, row_group_size=1000)
    real = catalog.extinction_columns
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(catalog, "extinction_columns", failing)
    assert main(["query", str(src), str(dst), *MAP, "--chunk-rows", "1000", "--no-progress"]) == 2
    assert "disk full" in capsys.readouterr().err
    assert not dst.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]
    monkeypatch.setattr(catalog, "extinction_columns", real)
    assert main(["query", str(src), str(src), *MAP]) == 2
    assert "OUTPUT must differ from INPUT" in capsys.readouterr().err
    dst.write_bytes(b"keep me")
    assert main(["query", str(src), str(dst), *MAP, "--no-progress"]) == 2
    assert "use --overwrite" in capsys.readouterr().err and dst.read_bytes() == b"keep me"
    assert main(["query", str(src), str(dst), *MAP, "--no-progress", "--overwrite"]) == 0
    assert pq.read_table(dst).num_rows == N
    assert main(["query", str(src), str(tmp_path / "x.parquet"), *MAP, "--bands", "g"]) == 2
    assert "valid bands: decam_g" in capsys.readouterr().err


def test_progress_bar_on_by_default_and_off_by_option_or_env(tmp_path, frame, capsys):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), src)
    assert main(["query", str(src), str(tmp_path / "a.parquet"), *MAP]) == 0
    assert "query:" in capsys.readouterr().err
    assert main(["query", str(src), str(tmp_path / "b.parquet"), *MAP, "--no-progress"]) == 0
    assert "query:" not in capsys.readouterr().err
    # tqdm reads TQDM_DISABLE when it is imported: a fresh process, as a user's shell gives
    env = dict(os.environ, TQDM_DISABLE="1")
    run = subprocess.run([sys.executable, "-m", "dustmaps_ext", "query", str(src),
                          str(tmp_path / "c.parquet"), *MAP], check=False, env=env,
                         capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "query:" not in run.stderr and (tmp_path / "c.parquet").is_file()


def test_one_off_positions_printed(capsys):
    assert main(["query", *MAP, "--l", "300", "265", "90", "--b", "1", "-4", "0",
                 "--distance", "2", "--bands", "decam_r"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["l", "b", "distance", "ebv", "A_decam_r"]
    query = DECaPSQuery(demo_map_path(), progress=False)
    ref = query(SkyCoord([300, 265, 90] * u.deg, [1, -4, 0] * u.deg, distance=2 * u.kpc,
                         frame="galactic")).astype(np.float32)
    printed = [float(line.split()[3]) for line in lines[2:]]
    np.testing.assert_allclose(printed[:2], ref[:2], atol=5e-5)
    assert np.isnan(printed[2])


def test_usage_errors(tmp_path, capsys):
    assert main(["query", *MAP]) == 2
    assert "give INPUT and OUTPUT" in capsys.readouterr().err
    assert main(["query", "a.fits", "b.fits", *MAP, "--l", "1", "--b", "2", "--distance", "1"]) == 2
    assert "not both" in capsys.readouterr().err
    (tmp_path / "a.txt").write_text("x")
    assert main(["query", str(tmp_path / "a.txt"), str(tmp_path / "b.fits"), *MAP]) == 2
    assert "unknown file type" in capsys.readouterr().err
