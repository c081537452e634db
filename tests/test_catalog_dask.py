"""add_extinction on Dask DataFrames (a LocalCluster of 2 worker processes) and lsdb Catalogs.

Reference: add_extinction on the same rows as one in-process pandas DataFrame (itself
tested against the query objects' own answers in test_catalog.py).
"""

from __future__ import annotations

import pickle

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask.base import tokenize

from dustmaps_ext.catalog import add_extinction
from dustmaps_ext.combined import BayestarDECaPSQuery
from dustmaps_ext.decaps import DECaPSQueryLite
from helpers.catalog_maps import make_map_files, star_positions

N = 4000
# lsdb 0.11 / nested-pandas call a pandas API that pandas 3.1 deprecates: not ours to fix
LSDB_NOISE = pytest.mark.filterwarnings("ignore:The inplace keyword in NestedFrame")


@pytest.fixture(scope="module")
def stars():
    l_deg, b_deg, d_kpc = star_positions(N, seed=31)
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    icrs = SkyCoord(l_deg * u.deg, b_deg * u.deg, frame="galactic").icrs
    plx = 1.0 / d_kpc
    plx[::53] = np.nan
    return pd.DataFrame({"id": np.arange(N), "ra": icrs.ra.deg, "dec": icrs.dec.deg,
                         "parallax": plx})


@pytest.fixture(scope="module")
def maps(tmp_path_factory, stars):
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    gal = SkyCoord(stars["ra"].to_numpy() * u.deg, stars["dec"].to_numpy() * u.deg).galactic
    return make_map_files(tmp_path_factory.mktemp("dask_maps"), gal.l.deg, gal.b.deg)


@pytest.fixture(scope="module")
def parquet_dataset(tmp_path_factory, stars):
    folder = tmp_path_factory.mktemp("dataset")
    dd.from_pandas(stars, npartitions=5).to_parquet(folder, write_index=False)
    return folder


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        yield client


def _sorted(frame):
    return frame.sort_values("id").reset_index(drop=True)


def test_lazy_graph_one_task_per_partition(maps, parquet_dataset):
    query = DECaPSQueryLite(maps["decaps_repacked"])
    ddf = dd.read_parquet(parquet_dataset)
    with dask.config.set({"tokenize.ensure-deterministic": True}):
        out = add_extinction(ddf, query, bands=["decam_g"])
        again = add_extinction(ddf, DECaPSQueryLite(maps["decaps_repacked"]), bands=["decam_g"])
    assert out.npartitions == ddf.npartitions
    assert tokenize(out) == tokenize(again)  # deterministic graph keys
    assert list(out.dtypes[["ebv", "A_decam_g"]]) == [np.float32, np.float32]
    graph = out.__dask_graph__()
    mine = [k for k in graph if isinstance(k, tuple) and k[0] == out._name]
    assert len(mine) == ddf.npartitions
    # the query object inside the graph travels by path
    assert len(pickle.dumps(query)) < 10_000


def test_local_cluster_equals_in_process(client, maps, parquet_dataset, stars):
    for query in (DECaPSQueryLite(maps["decaps_repacked"]),
                  BayestarDECaPSQuery(maps["decaps_repacked"], maps["bayestar"], progress=False)):
        ddf = dd.read_parquet(parquet_dataset)
        lazy = add_extinction(ddf, query, bands=["decam_g", "2mass_ks"], flags=True)
        got = _sorted(client.compute(lazy).result())
        ref = _sorted(add_extinction(stars, query, bands=["decam_g", "2mass_ks"], flags=True))
        assert np.isfinite(ref["ebv"]).sum() > N // 2
        pd.testing.assert_frame_equal(got[ref.columns], ref, check_dtype=True)
        # the workers really did it: each opened its own copy of the map
        assert len(client.scheduler_info()["workers"]) == 2


@LSDB_NOISE
def test_lsdb_catalog(maps, stars):
    lsdb = pytest.importorskip("lsdb")
    catalog = lsdb.from_dataframe(stars, ra_column="ra", dec_column="dec", lowest_order=2,
                                  highest_order=5, partition_rows=800)
    query = DECaPSQueryLite(maps["decaps_repacked"])
    lazy = add_extinction(catalog, query, bands=["decam_r"])
    assert isinstance(lazy, lsdb.Catalog)
    assert lazy.get_healpix_pixels() == catalog.get_healpix_pixels()
    with dask.config.set(scheduler="threads"):
        got = _sorted(lazy.compute().reset_index(drop=True))
    ref = _sorted(add_extinction(stars, query, bands=["decam_r"]))
    np.testing.assert_array_equal(got["id"].to_numpy(), ref["id"].to_numpy())
    np.testing.assert_array_equal(got["ebv"].to_numpy(dtype=np.float32), ref["ebv"].to_numpy())
    np.testing.assert_array_equal(got["A_decam_r"].to_numpy(dtype=np.float32),
                                  ref["A_decam_r"].to_numpy())


@LSDB_NOISE
def test_lsdb_catalog_from_hats_on_disk(maps, stars, tmp_path):
    lsdb = pytest.importorskip("lsdb")
    lsdb.from_dataframe(stars, ra_column="ra", dec_column="dec", partition_rows=1500).write_catalog(
        tmp_path / "stars_hats", catalog_name="stars", progress_bar=False)
    catalog = lsdb.open_catalog(tmp_path / "stars_hats")
    query = DECaPSQueryLite(maps["decaps_repacked"])
    with dask.config.set(scheduler="threads"):
        got = _sorted(add_extinction(catalog, query).compute().reset_index(drop=True))
    ref = _sorted(add_extinction(stars, query))
    np.testing.assert_array_equal(got["ebv"].to_numpy(dtype=np.float32), ref["ebv"].to_numpy())
