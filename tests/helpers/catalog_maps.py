"""Small map files of every kind for the catalogue, pickling and query-command tests.

* DECaPS: the demo map shipped with the package (published layout) and a repacked copy;
* Bayestar19: a simulated Bayestar19-format file of the same simulated galaxy;
* Wang et al. (2025): a converted table of the release's shape (12,582,912 rows, as the
  reader requires), written sparsely: only the rows of the sightlines the tests ask for hold
  parameters (random ones, hard cases included), the rest of the file is a hole in the file
  system, so it costs a few MB on disk and a fraction of a second to write.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from dustmaps_ext_build.writers.bayestar import write_simulated_bayestar19

from dustmaps_ext._core.parametric import build_records, record_dtype
from dustmaps_ext._demo import demo_map_path
from dustmaps_ext._io import parametric_table as pt
from dustmaps_ext.decaps import repack
from dustmaps_ext.wang2025 import _pixel_rows
from helpers.parametric_cases import random_columns


def star_positions(n: int, seed: int = 17):
    """(l, b, distance kpc): ~70% inside the DECaPS footprint, the rest anywhere."""
    rng = np.random.default_rng(seed)
    inside = rng.random(n) < 0.7
    l_deg = np.where(inside, (rng.uniform(-121, 6, n)) % 360, rng.uniform(0, 360, n))
    b_deg = np.where(inside, rng.uniform(-9.5, 9.5, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n))))
    d_kpc = 10 ** rng.uniform(-1.3, 1.2, n)
    return l_deg, b_deg, d_kpc


def write_sparse_wang_table(path, l_deg, b_deg, seed: int = 3) -> Path:
    """A converted Wang et al. table whose rows under (l, b) hold random sightlines."""
    rows = np.unique(_pixel_rows(np.asarray(l_deg, float), np.asarray(b_deg, float)))
    rows = rows[rows >= 0]
    columns = random_columns(rows.size, np.random.default_rng(seed))
    dtype = record_dtype(columns)
    records = build_records(columns, dtype)
    with h5py.File(path, "w", alignment_threshold=1, alignment_interval=1 << 16) as f:
        for (name, fields), block in zip(pt._DATASETS, records):
            ds = f.create_dataset(name, shape=(pt.NROWS, len(fields)), dtype=dtype, chunks=None)
            ds.attrs["fields"] = np.array(fields, dtype=h5py.string_dtype())
            ds[rows] = block  # sorted, unique rows; everything else stays unwritten
        f.attrs["format"] = pt.FORMAT_NAME
        f.attrs["format_version"] = pt.FORMAT_VERSION
        f.attrs["nside"] = pt.NSIDE
        f.attrs["ordering"] = "RING"
        f.attrs["complete"] = True
    return Path(path)


def make_map_files(folder: Path, l_deg, b_deg) -> dict:
    """Every map file the tests need, in ``folder``."""
    folder = Path(folder)
    return {
        "decaps": demo_map_path(),
        "decaps_repacked": repack(demo_map_path(), folder / "decaps_demo_repacked.h5", progress=False),
        "bayestar": write_simulated_bayestar19(folder / "bayestar2019.h5", nsides=(32, 64),
                                               n_samples=3),
        "wang": write_sparse_wang_table(folder / "wang_columns.h5", l_deg, b_deg),
    }
