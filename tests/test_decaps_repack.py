"""repack(): the pixel-major layout, its restartability and its contents."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from dustmaps_ext_build.simulated_decaps import write_simulated_decaps
from dustmaps_ext_build.writers.decaps import write_decaps_release
from dustmaps_ext._io import decaps as layouts
from dustmaps_ext.decaps import DECaPSQueryLite, MapFileError, repack


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return write_simulated_decaps(tmp_path_factory.mktemp("rp") / "sim.h5", nside=64,
                                  chunk_pixels=500)


def _contents(path):
    with h5py.File(path) as f:
        return {name: f[name][()] for name in
                ["data"] + [f"pixel_info/{n}" for n in layouts.PIXEL_DATASETS]}


def test_repacked_values_equal_the_published_ones(published, tmp_path):
    dst = repack(published, tmp_path / "out.h5", progress=False, layout="pixel-major")
    got = _contents(dst)
    with h5py.File(published) as f:
        assert np.array_equal(got["data"][:, 0, :], f["mean"][:, 0, :])
        assert np.array_equal(got["data"][:, 1:, :], f["samples"][()])
        for name in layouts.PIXEL_DATASETS:
            assert np.array_equal(got[f"pixel_info/{name}"], f[f"pixel_info/{name}"][()], equal_nan=True)
        assert np.array_equal(h5py.File(dst)["pixel_info"].attrs["DM_bin_edges"],
                              f["pixel_info"].attrs["DM_bin_edges"])
    with h5py.File(dst) as f:  # contiguous and unfiltered, so it can be memory-mapped
        assert f["data"].chunks is None and f["data"].compression is None
        assert f.attrs["complete"]


def test_interrupted_repack_resumes_to_the_same_file(published, tmp_path, monkeypatch):
    clean = _contents(repack(published, tmp_path / "clean.h5", progress=False, layout="pixel-major"))
    dst = tmp_path / "resumed.h5"
    real_write = layouts.pwrite_all
    calls = {"n": 0}

    def dying_write(fd, buf, offset):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        real_write(fd, buf, offset)

    monkeypatch.setattr(layouts, "pwrite_all", dying_write)
    with pytest.raises(KeyboardInterrupt):
        repack(published, dst, progress=False, layout="pixel-major")
    assert not dst.exists()  # never a file that looks complete
    assert (tmp_path / "resumed.h5.partial").exists()
    with pytest.raises(MapFileError, match="unfinished repack"):
        DECaPSQueryLite(tmp_path / "resumed.h5.partial")
    monkeypatch.setattr(layouts, "pwrite_all", real_write)
    written = {"n": 0}

    def counting_write(fd, buf, offset):
        written["n"] += 1
        real_write(fd, buf, offset)

    monkeypatch.setattr(layouts, "pwrite_all", counting_write)
    repack(published, dst, progress=False, layout="pixel-major")
    n_blocks = -(-layouts.inspect_decaps_file(published).n_pix // 500)
    assert written["n"] == n_blocks - 2  # the two finished blocks were not redone
    resumed = _contents(dst)
    for name in clean:
        assert np.array_equal(resumed[name], clean[name], equal_nan=True)
    assert not (tmp_path / "resumed.h5.partial").exists()
    assert not (tmp_path / "resumed.h5.partial.json").exists()


def test_changed_source_restarts_from_scratch(published, tmp_path, monkeypatch):
    src = tmp_path / "src.h5"
    src.write_bytes(published.read_bytes())
    dst = tmp_path / "dst.h5"

    def die(fd, buf, offset):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(layouts, "pwrite_all", die)
    with pytest.raises(KeyboardInterrupt):
        repack(src, dst, progress=False, layout="pixel-major")
    monkeypatch.undo()
    write_simulated_decaps(src, nside=64, chunk_pixels=500, seed=99, overwrite=True)
    repack(src, dst, progress=False, layout="pixel-major")
    with h5py.File(src) as f, h5py.File(dst) as g:
        assert np.array_equal(g["data"][:, 1:, :], f["samples"][()])


def test_repack_refuses_a_repacked_file(published, tmp_path):
    dst = repack(published, tmp_path / "a.h5", progress=False, layout="pixel-major")
    with pytest.raises(ValueError, match="already in the pixel-major layout"):
        repack(dst, tmp_path / "b.h5", progress=False)


def test_unsorted_source_is_refused(tmp_path):
    n = 4
    path = tmp_path / "unsorted.h5"
    write_decaps_release(path, nside=8, healpix_index=np.arange(n), mean=np.zeros((n, 120)),
                         samples=np.zeros((n, 2, 120)), dm_reliable_min=np.zeros(n),
                         dm_reliable_max=np.zeros(n), converged=np.ones(n), infilled=np.zeros(n))
    with h5py.File(path, "r+") as f:
        f["pixel_info/healpix_index"][...] = np.array([3, 1, 2, 5], dtype=np.uint64)
    with pytest.raises(MapFileError, match="not sorted"):
        repack(path, tmp_path / "x.h5", progress=False)


@pytest.mark.parametrize("layout", ["compact", "pixel-major"])
def test_repack_keeps_a_built_maps_extra_pixel_columns(tmp_path, layout):
    # a map built with dustmaps_ext_build carries n_stars and no_reliable_range; a repack must
    # not drop them (and the standard columns keep their dtypes)
    n = 6
    rng = np.random.default_rng(3)
    n_stars = rng.integers(0, 500, n)
    no_range = np.array([1, 0, 0, 1, 0, 0], dtype=bool)
    src = tmp_path / "built.h5"
    write_decaps_release(src, nside=8, healpix_index=np.arange(n) * 3,
                         mean=np.sort(rng.random((n, 120)), axis=1),
                         samples=np.sort(rng.random((n, 2, 120)), axis=2),
                         dm_reliable_min=np.full(n, 8.0), dm_reliable_max=np.full(n, 14.0),
                         converged=np.ones(n), infilled=np.zeros(n), n_stars=n_stars,
                         no_reliable_range=no_range)
    dst = repack(src, tmp_path / f"{layout}.h5", progress=False, layout=layout)
    with h5py.File(src, "r") as f, h5py.File(dst, "r") as g:
        for name in ("n_stars", "no_reliable_range"):
            assert g["pixel_info"][name].dtype == f["pixel_info"][name].dtype
            np.testing.assert_array_equal(g["pixel_info"][name][()], f["pixel_info"][name][()])
        for name in layouts.PIXEL_DATASETS:
            assert g["pixel_info"][name].dtype == layouts.PIXEL_DTYPES[name]
    np.testing.assert_array_equal(h5py.File(dst, "r")["pixel_info/no_reliable_range"][()], no_range)
