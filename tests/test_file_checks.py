"""Malformed map files and bad parameters: a clear error naming the file or parameter, never a
crash in a kernel, never a silent wrong number.

Every file is written by the repository's own writers in ``tmp_path`` and then damaged with
h5py (or by overwriting bytes), as a disk error, a foreign tool or a bad copy would.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import warnings

import astropy.units as u
import h5py
import numpy as np
import pytest
from astropy.coordinates import Distance, SkyCoord

from dustmaps_ext_build.simulated_decaps import write_simulated_decaps
from dustmaps_ext_build.writers.bayestar import write_simulated_bayestar19
from dustmaps_ext_build.writers.decaps import write_decaps_release
from dustmaps_ext._coords import galactic_arrays
from dustmaps_ext._core.pixels import first_unsorted_row
from dustmaps_ext._io import decaps as decaps_format
from dustmaps_ext._io import decaps_compact
from dustmaps_ext.combined import BayestarDECaPSQuery
from dustmaps_ext.decaps import DECaPSQuery, DECaPSQueryLite, LayoutPerformanceWarning, repack
from dustmaps_ext.errors import DownloadLockedError, MapFileError
from dustmaps_ext.healpix import nested_to_lb
from dustmaps_ext.wang2025 import Wang2025Query

NSIDE = 32
CHUNK = 200
QUERY_CLASSES = [DECaPSQuery, DECaPSQueryLite]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return write_simulated_decaps(tmp_path_factory.mktemp("checks") / "pub.h5", nside=NSIDE,
                                  chunk_pixels=CHUNK)


@pytest.fixture(scope="module")
def repacked(published):
    """The pixel-major layout (memory-mapped values; the compact layout has its own tests)."""
    return repack(published, published.with_name("rep.h5"), progress=False, layout="pixel-major")


@pytest.fixture(scope="module")
def pixel_coords(published):
    """Centres of every 7th pixel of the map, at 2 kpc, and the map's answers there."""
    with h5py.File(published) as f:
        pix = f["pixel_info/healpix_index"][::7].astype(np.int64)
    l_deg, b_deg = nested_to_lb(NSIDE, pix)
    coords = SkyCoord(l=l_deg * u.deg, b=b_deg * u.deg, distance=2 * u.kpc, frame="galactic")
    answers = DECaPSQuery(published, progress=False).query(coords)
    assert np.all(np.isfinite(answers))  # each of these pixels is in the map
    return coords, answers


def _copy(src, tmp_path, name):
    dst = tmp_path / name
    shutil.copy(src, dst)
    return dst


@contextlib.contextmanager
def _published_layout_ok():
    """The Lite class warns about the published layout; these tests are about errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayoutPerformanceWarning)
        yield


def _open(cls, path):
    if cls is DECaPSQuery:
        return cls(path, progress=False)
    with _published_layout_ok():
        return cls(path)


def _replace_dataset(path, name, values, **kwargs):
    """Write ``values`` in place of dataset ``name``, keeping its attributes."""
    with h5py.File(path, "r+") as f:
        attrs = dict(f[name].attrs)
        del f[name]
        dset = f.create_dataset(name, data=values, **kwargs)
        for key, value in attrs.items():
            dset.attrs[key] = value


# ----------------------------------------------------------------- point 5: coarse index
@pytest.mark.parametrize("damage", ["beyond the table", "all negative", "shifted by one"])
@pytest.mark.parametrize("cls", QUERY_CLASSES + [BayestarDECaPSQuery])
def test_damaged_coarse_start_is_refused_on_open(repacked, tmp_path, damage, cls):
    path = _copy(repacked, tmp_path, "damaged.h5")
    with h5py.File(path, "r+") as f:
        cs = f["pixel_info/coarse_start"]
        good = cs[()]
        cs[...] = {"beyond the table": np.full_like(good, 10 ** 9),
                   "all negative": np.full_like(good, -5),
                   "shifted by one": np.minimum(good + 1, good[-1])}[damage]
    with pytest.raises(MapFileError, match="coarse_start does not match") as err:
        if cls is BayestarDECaPSQuery:
            bayestar = write_simulated_bayestar19(tmp_path / "b19.h5", nsides=(16, 32), n_samples=2)
            cls(path, bayestar, progress=False)
        else:
            _open(cls, path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("coarse_nside", [128, 3, 0])
@pytest.mark.parametrize("cls", QUERY_CLASSES)
def test_impossible_coarse_nside_is_refused(repacked, tmp_path, coarse_nside, cls):
    path = _copy(repacked, tmp_path, "cn.h5")
    with h5py.File(path, "r+") as f:
        f["pixel_info/coarse_start"].attrs["coarse_nside"] = coarse_nside
    with pytest.raises(MapFileError, match="coarse_nside") as err:
        _open(cls, path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("cls", QUERY_CLASSES)
def test_repacked_file_without_coarse_start(repacked, tmp_path, cls):
    path = _copy(repacked, tmp_path, "nocoarse.h5")
    with h5py.File(path, "r+") as f:
        del f["pixel_info/coarse_start"]
    with pytest.raises(MapFileError, match="coarse_start is missing") as err:
        _open(cls, path)
    assert str(path) in str(err.value)


def test_intact_repacked_file_still_answers_as_the_published_one(repacked, pixel_coords):
    coords, answers = pixel_coords
    for query in (DECaPSQuery(repacked, progress=False), DECaPSQueryLite(repacked)):
        assert np.array_equal(query.query(coords), answers)


# ----------------------------------------------------------------- point 6: byte order/dtype
@pytest.mark.parametrize("dtype", [">f2", ">f4", "<f4"])
def test_lite_refuses_values_it_cannot_map_and_the_ram_class_reads_them(repacked, tmp_path,
                                                                        pixel_coords, dtype):
    coords, answers = pixel_coords
    path = _copy(repacked, tmp_path, "be.h5")
    with h5py.File(path) as f:
        values = f["data"][()]
    _replace_dataset(path, "data", values.astype(dtype))
    with pytest.raises(MapFileError, match=f"data is stored as \\{dtype}") as err:
        DECaPSQueryLite(path)
    assert str(path) in str(err.value)
    assert np.array_equal(DECaPSQuery(path, progress=False).query(coords), answers)


# ----------------------------------------------------------------- point 7: parameters
@pytest.mark.parametrize("value, error, message", [
    (-1, ValueError, "chunk_coords must be at least 1; got -1"),
    (0, ValueError, "chunk_coords must be at least 1; got 0"),
    (1.5, TypeError, "chunk_coords must be an integer"),
    (True, TypeError, "chunk_coords must be an integer"),
    ("8", TypeError, "chunk_coords must be an integer"),
])
def test_lite_chunk_coords_is_checked(repacked, value, error, message):
    with pytest.raises(error, match=message):
        DECaPSQueryLite(repacked, chunk_coords=value)


def test_lite_smallest_chunk_gives_the_same_answers(repacked, pixel_coords):
    coords, answers = pixel_coords
    assert np.array_equal(DECaPSQueryLite(repacked, chunk_coords=1).query(coords), answers)


def test_flags_that_must_be_booleans(repacked, pixel_coords):
    coords, _ = pixel_coords
    with pytest.raises(TypeError, match="mean_only must be True or False"):
        DECaPSQueryLite(repacked, mean_only="no")
    with pytest.raises(TypeError, match="progress must be True or False"):
        DECaPSQuery(repacked, progress="no")
    with pytest.raises(TypeError, match="return_flags must be True or False"):
        DECaPSQueryLite(repacked).query(coords, return_flags="no")
    with pytest.raises(ValueError, match="max_samples must be between 1 and 5"):
        DECaPSQuery(repacked, max_samples=0, progress=False)


# ----------------------------------------------------------------- point 8: pixel order
@pytest.mark.parametrize("damage", ["reversed", "duplicated", "two swapped", "beyond the sphere"])
@pytest.mark.parametrize("reader", ["DECaPSQuery", "DECaPSQueryLite", "repack"])
def test_published_pixel_table_out_of_order_is_refused(published, tmp_path, damage, reader):
    path = _copy(published, tmp_path, "order.h5")
    with h5py.File(path, "r+") as f:
        hp_index = f["pixel_info/healpix_index"][()]
        if damage == "reversed":
            hp_index = hp_index[::-1].copy()
        elif damage == "duplicated":
            hp_index[10] = hp_index[11]
        elif damage == "two swapped":
            hp_index[[5, 300]] = hp_index[[300, 5]]
        else:
            hp_index[-1] = 12 * NSIDE ** 2
        f["pixel_info/healpix_index"][...] = hp_index
    match = "is not a HEALPix pixel" if damage == "beyond the sphere" else "is not sorted"
    with pytest.raises(MapFileError, match=match) as err:
        if reader == "repack":
            repack(path, tmp_path / "out.h5", progress=False)
        else:
            _open({"DECaPSQuery": DECaPSQuery, "DECaPSQueryLite": DECaPSQueryLite}[reader], path)
    assert str(path) in str(err.value)


# ----------------------------------------------------------------- point 10: distance units
@pytest.mark.parametrize("distance", [[1.0, 2.0], [1.0, 2.0] * u.dimensionless_unscaled,
                                      [11.5, 12.0] * u.mag])
@pytest.mark.parametrize("frame", ["galactic", "icrs"])
def test_distance_without_length_unit_is_refused(distance, frame):
    if frame == "galactic":
        coords = SkyCoord(l=[250, 260] * u.deg, b=[1, 2] * u.deg, distance=distance, frame=frame)
    else:
        coords = SkyCoord(ra=[250, 260] * u.deg, dec=[-30, -40] * u.deg, distance=distance, frame=frame)
    with pytest.raises(ValueError, match=r"Distance\(distmod=\.\.\.\)"):
        galactic_arrays(coords)


def test_distance_unit_checked_by_every_query_class(repacked, pixel_coords):
    coords, _ = pixel_coords
    plain = SkyCoord(l=coords.l, b=coords.b, distance=np.full(len(coords), 11.5), frame="galactic")
    for query in (DECaPSQuery(repacked, progress=False), DECaPSQueryLite(repacked)):
        with pytest.raises(ValueError, match="not a length"):
            query.query(plain)
    # Wang2025Query reads its coordinates through the same flattener
    with pytest.raises(ValueError, match="not a length"):
        Wang2025Query.query(object.__new__(Wang2025Query), plain)


def test_distance_modulus_given_as_distance_answers_like_kpc(repacked, pixel_coords):
    coords, _ = pixel_coords
    query = DECaPSQueryLite(repacked)
    distmod = Distance(distmod=np.full(len(coords), 11.5) * u.mag)
    as_distmod = SkyCoord(l=coords.l, b=coords.b, distance=distmod, frame="galactic")
    as_kpc = SkyCoord(l=coords.l, b=coords.b, distance=distmod.to(u.kpc), frame="galactic")
    got = query.query(as_distmod)
    assert got.shape == (len(coords),)  # one value each, not a 120-bin profile
    assert np.array_equal(got, query.query(as_kpc))


# ----------------------------------------------------------------- point 11: malformed files
def _corrupt_chunk(path, name, first_row=0):
    """Overwrite the middle of the stored chunk of ``name`` that holds ``first_row`` (sample 0,
    distance 0) with garbage bytes."""
    with h5py.File(path) as f:
        info = f[name].id.get_chunk_info_by_coord((first_row, 0, 0))
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 8)
        fh.write(b"\xa5\x5a" * min(64, max(4, (info.size - 16) // 2)))


def test_corrupt_published_chunk_read_by_lite(published, tmp_path, pixel_coords):
    path = _copy(published, tmp_path, "corrupt.h5")
    _corrupt_chunk(path, "mean", 0)
    coords, _ = pixel_coords
    first = coords[:1]  # the map's first pixel: in the damaged chunk
    with _published_layout_ok():
        query = DECaPSQueryLite(path)
    with pytest.raises(MapFileError, match="corrupt or truncated chunk") as err:
        query.query(first)
    assert str(path) in str(err.value) and "/mean" in str(err.value)


def test_corrupt_published_chunk_read_by_repack(published, tmp_path):
    path = _copy(published, tmp_path, "corrupt.h5")
    _corrupt_chunk(path, "samples", CHUNK)
    with pytest.raises(MapFileError, match="corrupt or truncated chunk") as err:
        repack(path, tmp_path / "out.h5", progress=False)
    assert str(path) in str(err.value) and f"pixels {CHUNK} to {2 * CHUNK - 1}" in str(err.value)


def test_corrupt_published_chunk_read_by_the_ram_class(published, tmp_path):
    path = _copy(published, tmp_path, "corrupt.h5")
    _corrupt_chunk(path, "mean", 0)
    with pytest.raises(MapFileError, match="corrupt or truncated chunk") as err:
        DECaPSQuery(path, progress=False)
    assert str(path) in str(err.value)


def test_published_values_of_another_float_type_are_read_right_by_lite(published, tmp_path,
                                                                      pixel_coords):
    coords, answers = pixel_coords
    path = _copy(published, tmp_path, "f4.h5")
    with h5py.File(path) as f:
        mean, samples = f["mean"][()], f["samples"][()]
    _replace_dataset(path, "mean", mean.astype(">f4"), chunks=(CHUNK, 1, 1))
    _replace_dataset(path, "samples", samples.astype("<f8"), chunks=(CHUNK, 1, 1))
    with _published_layout_ok():
        lite = DECaPSQueryLite(path)
    assert np.array_equal(lite.query(coords), answers)
    assert np.array_equal(lite.query(coords, mode="median"),
                          DECaPSQuery(published, progress=False).query(coords, mode="median"))


@pytest.mark.parametrize("name, dtype", [("pixel_info/healpix_index", np.float64),
                                         ("pixel_info/DM_reliable_min", np.int32),
                                         ("pixel_info/converged", np.float32),
                                         ("mean", np.int16)])
@pytest.mark.parametrize("cls", QUERY_CLASSES)
def test_published_datasets_of_a_wrong_type_are_refused(published, tmp_path, name, dtype, cls):
    path = _copy(published, tmp_path, "dtype.h5")
    with h5py.File(path) as f:
        values = f[name][()]
    _replace_dataset(path, name, np.nan_to_num(values).astype(dtype))
    with pytest.raises(MapFileError, match=f"{name} has dtype") as err:
        _open(cls, path)
    assert str(path) in str(err.value)


def test_zero_pixel_map(tmp_path):
    path = tmp_path / "empty.h5"
    write_decaps_release(path, nside=8, healpix_index=np.arange(4), mean=np.zeros((4, 120)),
                         samples=np.zeros((4, 2, 120)), dm_reliable_min=np.zeros(4),
                         dm_reliable_max=np.zeros(4), converged=np.ones(4), infilled=np.zeros(4))
    with h5py.File(path, "r+") as f:  # the same file with every per-pixel array emptied
        for name in ["mean", "samples"] + [f"pixel_info/{n}" for n in decaps_format.PIXEL_DATASETS]:
            shape = (0,) + f[name].shape[1:]
            dtype = f[name].dtype
            del f[name]
            f.create_dataset(name, shape=shape, dtype=dtype)
    for run in (lambda: repack(path, tmp_path / "out.h5", progress=False),
                lambda: DECaPSQuery(path, progress=False)):
        with pytest.raises(MapFileError, match="holds no pixels") as err:
            run()
        assert str(path) in str(err.value)
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("content", ["truncated", "not HDF5", "empty"])
def test_wang2025_table_that_is_not_hdf5(published, tmp_path, content):
    path = tmp_path / "data_v3_columns.h5"
    data = {"truncated": published.read_bytes()[:5000], "not HDF5": b"<html>not found</html>",
            "empty": b""}[content]
    path.write_bytes(data)
    with pytest.raises(MapFileError, match="not a readable HDF5 file") as err:
        Wang2025Query(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"<html>not found</html>", b"SIMPLE  =  garbage", b""])
def test_wang2025_fits_that_is_not_fits(tmp_path, content):
    path = tmp_path / "data_v3.fits"
    path.write_bytes(content)
    with pytest.raises(MapFileError, match="not a readable FITS file") as err:
        Wang2025Query(path)
    assert str(path) in str(err.value)
    assert not (tmp_path / "data_v3_columns.h5").exists()


# ----------------------------------------------------------------- point 12: repack lock
@pytest.mark.parametrize("layout", ["compact", "pixel-major"])
def test_two_repacks_of_one_file_at_once(published, tmp_path, monkeypatch, layout):
    dst = tmp_path / "rep.h5"
    started, go_on = threading.Event(), threading.Event()
    writer = decaps_compact if layout == "compact" else decaps_format
    real_write = writer.pwrite_all

    def slow_write(fd, buf, offset):
        started.set()
        assert go_on.wait(60)
        real_write(fd, buf, offset)

    monkeypatch.setattr(writer, "pwrite_all", slow_write)
    outcome = {}

    def first():
        try:
            outcome["path"] = repack(published, dst, progress=False, layout=layout)
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    worker = threading.Thread(target=first)
    worker.start()
    try:
        assert started.wait(60)
        with pytest.raises(DownloadLockedError, match="already being repacked") as err:
            repack(published, dst, progress=False, layout=layout)
        assert str(dst) in str(err.value)
    finally:
        go_on.set()
        worker.join(120)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["path"] == dst
    monkeypatch.undo()
    clean = repack(published, tmp_path / "clean.h5", progress=False, layout=layout)
    assert np.array_equal(DECaPSQuery(dst, progress=False).store.data,
                          DECaPSQuery(clean, progress=False).store.data)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["clean.h5", "rep.h5"]  # no lock, no .partial, no .partial.json


# ----------------------------------------------------------------- the compiled table check
def _first_bad_row_numpy(values, nside, previous):
    v = values.astype(np.int64)
    bad = (v < 0) | (v >= 12 * nside ** 2) | (np.diff(v, prepend=np.int64(previous)) <= 0)
    return int(np.argmax(bad)) if bad.any() else -1


@pytest.mark.parametrize("seed", range(6))
def test_first_unsorted_row_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    nside, coarse = 64, 4
    values = np.sort(rng.choice(12 * nside ** 2, 3000, replace=False)).astype(np.uint64)
    if seed % 3 == 1:  # a duplicate, an earlier pixel or one beyond the sphere
        i = int(rng.integers(1, values.size))
        values[i] = [values[i - 1], values[max(0, i - 5)], 12 * nside ** 2][seed % 2 + i % 2]
    elif seed % 3 == 2:
        values[int(rng.integers(0, values.size))] = np.uint64(2 ** 63 + 5)  # negative as int64
    previous = -1 if seed < 3 else int(values[0]) - 1
    counts = np.zeros(12 * coarse ** 2, np.int64)
    bad = first_unsorted_row(values, nside, previous, counts)
    assert bad == _first_bad_row_numpy(values, nside, previous)
    good = values[: bad if bad >= 0 else values.size].astype(np.int64)
    shift = 2 * int(np.log2(nside // coarse))
    assert np.array_equal(counts, np.bincount(good >> shift, minlength=counts.size))
    assert first_unsorted_row(values.astype(">u8"), nside, previous) == bad  # any byte order
