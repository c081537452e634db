"""The realistic simulated release and the compact layout, against dustmaps 1.0.14 on the same file."""

from __future__ import annotations

import dustmaps.decaps as dm_decaps
import h5py
import numpy as np
import pytest
from dustmaps_ext_build.simulated_release import (
    sampler_like_values,
    write_realistic_decaps,
)

from dustmaps_ext._core import profile_codec
from dustmaps_ext._core.los import values_at_distmod
from dustmaps_ext._core.voxel import distances_needed
from dustmaps_ext._io import decaps_compact as compact
from dustmaps_ext._io.decaps import inspect_decaps_file
from dustmaps_ext._io.decaps_compact import COMPACT_CHUNK_COORDS, CompactStore
from dustmaps_ext.decaps import DECaPSQuery, DECaPSQueryLite, MapFileError, repack
from helpers.reference import quiet
from helpers.sky import decaps_coords as _coords

MODES = [("mean", None), ("median", None), ("samples", None), ("percentile", 30.0),
         ("percentile", [5, 50, 84.1])]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compact")
    published = write_realistic_decaps(folder / "real.h5", nside=64, chunk_pixels=700,
                                       infilled_fraction=0.05)
    packed = repack(published, folder / "real_compact.h5", progress=False)
    return {"published": published, "compact": packed}


@pytest.fixture(scope="module")
def reference(release):
    return quiet(dm_decaps.DECaPSQuery, str(release["published"]))


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


# --------------------------------------------------------------------- the simulated release
def test_realistic_values_are_like_the_samplers():
    rng = np.random.default_rng(3)
    truth = np.cumsum(rng.exponential(0.02, (400, 120)), axis=1)
    infilled = np.zeros(400, bool)
    infilled[:4] = True
    v = sampler_like_values(truth, rng, infilled=infilled)
    samples = v["samples"][~infilled].astype(np.float64)
    cents = np.rint(samples * 100)
    # exact multiples of 0.01 mag (float16 of k / 100), non-decreasing, many equal neighbours
    assert np.array_equal((cents / 100).astype(np.float16), v["samples"][~infilled])
    steps = np.diff(cents, axis=2)
    assert steps.min() >= 0 and 0.2 < np.mean(steps == 0) < 0.95
    # the mean is not a multiple of 0.01 mag, follows the samples, and infilled pixels are continuous
    mean = v["mean"][~infilled, 0].astype(np.float64)
    assert np.mean(np.rint(mean * 100) != mean * 100) > 0.3
    assert np.all(np.diff(mean, axis=1) >= 0)
    assert np.abs(mean[:, -1] - samples[:, :, -1].mean(axis=1)).mean() < 0.1 * mean[:, -1].mean()
    inf = v["samples"][infilled].astype(np.float64)
    assert np.mean(np.rint(inf * 100) != inf * 100) > 0.5


def test_dustmaps_reads_the_realistic_release(release, reference):
    coords = _coords(400, seed=5)
    with h5py.File(release["published"]) as f:
        assert f["mean"].chunks == (700, 1, 1) and f["mean"].compression == "gzip"
        infilled = f["pixel_info/infilled"][()]
        assert 0.01 < infilled.mean() < 0.1
    values = quiet(reference.query, coords, mode="mean")
    assert np.any(np.isfinite(values)) and np.any(values > 0)


# --------------------------------------------------------------------- the codec
def _decode(records, offsets, codes, rows, n_slots, n_read, upto, out):
    return profile_codec.decode_rows(records, offsets, rows, n_slots, n_read, upto, out.shape[2],
                                     profile_codec.CENT_TABLE, profile_codec.FLOAT_TABLE,
                                     codes.value_lookup, codes.tuple_lookup, codes.pair_lookup, out)


def _round_trip_every_prefix(values, codes, rng):
    """Encode ``values``; the whole records and every prefix of distances (the mean alone,
    some slots, all) decode to exactly the values."""
    n, n_slots, n_dist = values.shape
    records, offsets = compact._encode_block(values, codes)
    out = np.empty_like(values)
    assert _decode(records, offsets, codes, np.arange(n), n_slots, n_slots, np.empty(0, np.int64), out) == n
    assert np.array_equal(out, values)
    rows = rng.permutation(n)
    upto = rng.integers(0, n_dist + 1, n)
    upto[:min(n, n_dist + 1)] = np.arange(min(n, n_dist + 1))
    for n_read in sorted({1, 2, n_slots}):
        part = np.full_like(values, 0xFFFF)
        assert _decode(records, offsets, codes, rows, n_slots, n_read, upto, part) == n
        for j, r in enumerate(rows):
            assert np.array_equal(part[j, :n_read, :upto[j]], values[r, :n_read, :upto[j]])
    return records


def test_codec_round_trips_any_float16_profile():
    rng = np.random.default_rng(1)
    n = 300
    anything = rng.integers(0, 65536, (n, 3, 120)).astype(np.uint16)  # NaN, inf, negative too
    monotone = np.sort(rng.integers(0, 31744, (n, 3, 120)), axis=2).astype(np.uint16)
    cents = profile_codec.CENT_TABLE[np.cumsum(rng.poisson(0.7, (n, 3, 120)), axis=2)]
    constant = np.full((n, 3, 120), 0x3C00, np.uint16)
    for values in (anything, monotone, cents, constant):
        # codes fitted to these values, and codes fitted to other values (a later block of a map)
        for codes in (compact.fit_codes(values), compact.fit_codes(cents[:5])):
            _round_trip_every_prefix(values, codes, rng)
    # cents profiles cost far less than raw ones (the compact layout's point)
    assert compact._encode_block(cents, compact.fit_codes(cents))[0].size < 0.25 * cents.nbytes


@pytest.mark.parametrize("n_samples", [1, 4, 5, 7, 10])
def test_codec_round_trips_sampler_values_in_groups_of_samples(n_samples):
    """Samples are coded together in groups of five: any number of them (a partial group,
    several groups) round-trips, infilled (continuous) pixels and a mixed pixel too."""
    rng = np.random.default_rng(n_samples)
    truth = np.cumsum(rng.exponential(0.01, (200, 120)), axis=1)
    infilled = rng.random(200) < 0.2
    v = sampler_like_values(truth, rng, n_samples=n_samples, infilled=infilled)
    values = np.concatenate([v["mean"], v["samples"]], axis=1).view(np.uint16).copy()
    values[0, -1] = np.sort(rng.integers(0, 30000, 120))  # one sample not cents: no tuples
    values[1, 0] = rng.integers(0, 65536, 120)  # a raw mean
    _round_trip_every_prefix(values, compact.fit_codes(values), rng)


def test_contexts_and_fitted_codes_beat_pooled_and_flat_codes():
    """The baselines that should lose: the same values coded with one code per kind of
    symbol (the counts of all contexts pooled), and with codes fitted to nothing (every
    symbol equally likely), take more bytes than codes fitted per context."""
    rng = np.random.default_rng(2)
    truth = np.cumsum(rng.exponential(0.01, (500, 120)), axis=1)
    v = sampler_like_values(truth, rng)
    values = np.concatenate([v["mean"], v["samples"]], axis=1).view(np.uint16)
    counts = profile_codec.count_symbols(values)

    def size(counts):
        return compact._encode_block(values, profile_codec.PrefixCodes(*profile_codec.fit_code_lengths(counts)))[0].size

    fitted = size(counts)
    pooled = size(tuple(np.broadcast_to(c.sum(axis=0), c.shape) for c in counts))
    flat = size(tuple(np.zeros_like(c) for c in counts))
    assert fitted < 0.93 * pooled and fitted < 0.75 * flat  # measured: 0.88 and 0.70


def test_decoding_garbage_reports_an_error_and_reads_nothing_outside_the_record():
    rng = np.random.default_rng(9)
    truth = np.cumsum(rng.exponential(0.01, (50, 120)), axis=1)
    v = sampler_like_values(truth, rng)
    values = np.concatenate([v["mean"], v["samples"]], axis=1).view(np.uint16)
    codes = compact.fit_codes(values)
    records, offsets = compact._encode_block(values, codes)
    out = np.empty_like(values)
    every = np.arange(50)
    for trial in range(200):
        bad = records.copy()
        bad[rng.integers(0, bad.size, 1 + trial % 5)] ^= rng.integers(1, 256, 1 + trial % 5).astype(np.uint8)
        assert _decode(bad, offsets, codes, every, 6, 6, np.empty(0, np.int64), out) in (50, *profile_codec.DECODE_ERRORS)
    # a record cut short, and one with a byte too many, read whole, are errors
    short = offsets.copy()
    short[1:] -= 1
    assert _decode(records, short, codes, every[:1], 6, 6, np.empty(0, np.int64), out) < 0
    long = offsets.copy()
    long[1] += 1
    assert _decode(records, long, codes, every[:1], 6, 6, np.empty(0, np.int64), out) < 0
    # the records of a record's neighbours are never read: garbage after the last record
    # reads as zeros, not as the bytes that follow in memory
    tail = records[offsets[-2]:offsets[-1]]
    padded = np.concatenate([tail[:-1], [0xFF] * 64]).astype(np.uint8)
    assert _decode(padded[:tail.size - 1], np.array([0, tail.size - 1]), codes, every[:1], 6, 6,
                   np.empty(0, np.int64), out) < 0


def test_code_lengths_are_checked():
    value_lengths, tuple_lengths, pair_lengths = profile_codec.fit_code_lengths(
        profile_codec.count_symbols(np.zeros((1, 6, 120), np.uint16)))
    assert profile_codec.check_code_lengths(value_lengths, tuple_lengths, pair_lengths) is None
    too_long = value_lengths.copy()
    too_long[3, 4] = profile_codec.MAX_CODE_BITS + 1
    not_prefix = tuple_lengths.copy()
    not_prefix[0, :] = 1
    for args, what in (((too_long, tuple_lengths, pair_lengths), "outside"),
                       ((value_lengths, not_prefix, pair_lengths), "no prefix code"),
                       ((value_lengths, tuple_lengths, pair_lengths[:3]), "expected")):
        assert what in profile_codec.check_code_lengths(*args)
        with pytest.raises(ValueError, match=what):
            profile_codec.PrefixCodes(*args)


def test_distances_needed_cover_what_interpolation_reads():
    """The prefix a compact store decodes for a query with distances holds every value the
    interpolation reads: values beyond it, garbled, change no answer."""
    rng = np.random.default_rng(8)
    edges = np.arange(120, dtype=np.float32) * np.float32(0.125) + np.float32(4.0)
    data = np.sort(rng.integers(0, 20000, (400, 3, 120)), axis=2).astype(np.uint16)
    dm = np.concatenate([edges, edges[:-1] + 0.06, [3.0, 3.99, 18.875, 18.9, 25.0, np.nan],
                         rng.uniform(2.0, 21.0, 400 - 245)])
    needed = distances_needed(dm, edges)
    garbled = data.copy()
    for i, n in enumerate(needed):
        garbled[i, :, n:] = 0x7C00  # +inf
    rows = np.arange(400)
    for slot_first, n_slots in ((0, 1), (1, 2)):
        full = values_at_distmod(data, rows, dm, edges, slot_first=slot_first, n_slots=n_slots)
        part = values_at_distmod(garbled, rows, dm, edges, slot_first=slot_first, n_slots=n_slots)
        assert np.array_equal(full, part, equal_nan=True) and np.isfinite(full[:-1]).any()
    assert needed[:120].tolist() == list(range(1, 121))  # at an edge: up to it
    assert needed[120:239].tolist() == list(range(2, 121))  # between edges: up to the next
    assert needed[239:244].tolist() == [1, 1, 120, 120, 120] and needed[244] == 0  # NaN: nothing


# --------------------------------------------------------------------- compact queries = dustmaps
@pytest.mark.parametrize("cls", [DECaPSQuery, DECaPSQueryLite])
@pytest.mark.parametrize("with_distance", [True, False])
@pytest.mark.parametrize("mode,pct", MODES)
def test_every_mode_on_compact_equals_dustmaps_on_published(release, reference, cls, with_distance,
                                                            mode, pct):
    q = cls(release["compact"], **({"progress": False} if cls is DECaPSQuery else {}))
    coords = _coords(1200 if with_distance else 200, seed=2, with_distance=with_distance)
    ref, ref_flags = quiet(reference.query, coords, mode=mode, pct=pct, return_flags=True)
    mine, flags = q.query(coords, mode=mode, pct=pct, return_flags=True)
    assert _same(mine, ref)
    for name in ref_flags.dtype.names:
        assert np.array_equal(flags[name].astype(ref_flags[name].dtype), ref_flags[name], equal_nan=True)
    assert np.any(np.isfinite(mine)) and np.any(np.isnan(mine))


@pytest.mark.parametrize("mode", ["mean", "samples"])
def test_lite_default_chunks_on_threads_equal_dustmaps(release, reference, mode):
    """The default chunk size of a compact file (several chunks, on the package's threads)."""
    assert DECaPSQueryLite(release["compact"])._store.chunk_coords == COMPACT_CHUNK_COORDS
    n = 2 * COMPACT_CHUNK_COORDS + 1000
    assert n >= CompactStore.parallel_min_coords
    coords = _coords(n, seed=11)
    ref = quiet(reference.query, coords, mode=mode)
    mine = DECaPSQueryLite(release["compact"]).query(coords, mode=mode)
    assert _same(mine, ref) and np.isfinite(mine).any()


def test_random_modes_on_compact_draw_the_published_samples(release, reference):
    coords = _coords(500, seed=4)
    samples = quiet(reference.query, coords, mode="samples")
    got = DECaPSQueryLite(release["compact"]).query(coords, mode="random_sample", rng=7)
    inside = np.isfinite(got)
    assert inside.any()
    assert np.all(np.any(samples[inside] == got[inside, None], axis=1))


def test_compact_is_smaller_than_the_published_file(release):
    info = inspect_decaps_file(release["compact"])
    assert info.layout == "compact" and info.n_samples == 5
    with h5py.File(release["compact"]) as f, h5py.File(release["published"]) as g:
        compact_bytes = f["records"].size + f["record_offsets"].nbytes
        published_bytes = g["mean"].id.get_storage_size() + g["samples"].id.get_storage_size()
    assert compact_bytes < 0.6 * published_bytes


# --------------------------------------------------------------------- a subset (what a cutout writes)
def test_a_subset_written_by_write_compact_answers_as_the_full_map(release, reference, tmp_path):
    with h5py.File(release["published"]) as f:
        keep = np.flatnonzero(np.arange(f["mean"].shape[0]) % 3 == 0)
        columns = {name: f["pixel_info"][name][()][keep] for name in
                   ("healpix_index", "DM_reliable_min", "DM_reliable_max", "converged", "infilled")}
        values = np.concatenate([f["mean"][()], f["samples"][()]], axis=1)[keep]
        nside = int(f["pixel_info"].attrs["nside"])
        edges = f["pixel_info"].attrs["DM_bin_edges"]
    cut = compact.write_compact(tmp_path / "cut.h5", nside=nside, dm_bin_edges=edges, n_samples=5,
                                pixel_columns=columns, value_blocks=[values[:100], values[100:]])
    q = DECaPSQueryLite(cut)
    coords = _coords(2000, seed=6)
    rows_full = q._store.pixels.index.rows(coords.l.deg, coords.b.deg)
    present = rows_full >= 0
    assert present.any()
    mine = q.query(coords, mode="samples")
    ref = quiet(reference.query, coords, mode="samples")
    assert np.array_equal(mine[present], ref[present], equal_nan=True)
    assert np.all(np.isnan(mine[~present]))


# --------------------------------------------------------------------- bad files
def _copy(src, dst):
    dst.write_bytes(src.read_bytes())
    return dst


def test_corrupt_records_raise_map_file_error_naming_the_file(release, tmp_path):
    bad = _copy(release["compact"], tmp_path / "bad.h5")
    with h5py.File(bad) as f:
        start = f["records"].id.get_offset()
        size = f["records"].size
    raw = bytearray(bad.read_bytes())
    raw[start:start + size] = b"\x00" * size  # all zero bits: no valid code
    bad.write_bytes(bytes(raw))
    q = DECaPSQueryLite(bad)
    with pytest.raises(MapFileError, match="bad.h5 is corrupt"):
        q.query(_coords(200, seed=1), mode="samples")
    with pytest.raises(MapFileError, match="bad.h5 is corrupt"):
        DECaPSQuery(bad, progress=False)


def test_inconsistent_offsets_dtype_and_unfinished_files_are_refused(release, tmp_path):
    off = _copy(release["compact"], tmp_path / "offsets.h5")
    with h5py.File(off, "r+") as f:
        f["record_offsets"][-1] = f["records"].size + 10
    with pytest.raises(MapFileError, match="offsets.h5.*record_offsets run from 0"):
        DECaPSQueryLite(off)
    unfinished = _copy(release["compact"], tmp_path / "unfinished.h5")
    with h5py.File(unfinished, "r+") as f:
        del f.attrs["complete"]
    with pytest.raises(MapFileError, match="unfinished.h5 is an unfinished compact file"):
        DECaPSQuery(unfinished, progress=False)
    codec = _copy(release["compact"], tmp_path / "codec.h5")
    with h5py.File(codec, "r+") as f:
        f.attrs["codec"] = "something-else"
    with pytest.raises(MapFileError, match="codec.h5.*codec 'something-else'"):
        DECaPSQueryLite(codec)
    for version in (1, 2):  # 1: samples one after another; 2: Exp-Golomb codes
        older = _copy(release["compact"], tmp_path / f"older{version}.h5")
        with h5py.File(older, "r+") as f:
            f.attrs["layout_version"] = version
        with pytest.raises(MapFileError, match=f"older{version}.h5 is a compact file of layout version "
                                               f"{version}.*reads version 3.*repack"):
            DECaPSQueryLite(older)
    tables = _copy(release["compact"], tmp_path / "tables.h5")
    with h5py.File(tables, "r+") as f:
        f["tuple_code_lengths"][0, :] = 1
    with pytest.raises(MapFileError, match="tables.h5.*tuple_code_lengths holds a table that is no prefix code"):
        DECaPSQueryLite(tables)
    no_tables = _copy(release["compact"], tmp_path / "no_tables.h5")
    with h5py.File(no_tables, "r+") as f:
        del f["value_code_lengths"]
    with pytest.raises(MapFileError, match="no_tables.h5.*no value_code_lengths"):
        DECaPSQuery(no_tables, progress=False)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(release["compact"].read_bytes()[:-3000])
    with pytest.raises(MapFileError, match="truncated"):
        DECaPSQueryLite(truncated)


@pytest.mark.parametrize("where", ["_encode_block", "pwrite_all"])  # encoding; copying into the file
def test_interrupted_compact_repack_leaves_no_file(release, tmp_path, monkeypatch, where):
    dst = tmp_path / "out.h5"

    def die(*args):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(compact, where, die)
    with pytest.raises(KeyboardInterrupt):
        repack(release["published"], dst, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_repack_layouts_and_bad_layout_name(release, tmp_path):
    with pytest.raises(ValueError, match="layout must be one of"):
        repack(release["published"], tmp_path / "x.h5", layout="zip")
    with pytest.raises(ValueError, match="already in the compact layout"):
        repack(release["compact"], tmp_path / "y.h5")
