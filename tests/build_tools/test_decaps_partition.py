"""Stage 1 at scale: star -> block assignment, per-shard partition, resume, input errors."""

from __future__ import annotations

import dataclasses
import os

import h5py
import healpy as hp
import numpy as np
import pytest

from dustmaps_ext_build.decaps import mock, partition, pipeline, pixelize, sampler
from dustmaps_ext_build.decaps.inputs import StarPosteriors
from dustmaps_ext_build.runner import block_path, load_blocks
from dustmaps_ext.healpix import lb_to_unit_vectors
from helpers.reference import assert_same_hdf5


# --------------------------------------------------------------------------- assignment
def _edge_and_corner_stars(nside_block: int, rng, n_blocks: int = 40):
    """Stars on block corners and edges (exactly, and nudged by ~1e-9 rad either way)."""
    blocks = rng.integers(0, 12 * nside_block ** 2, n_blocks)
    blocks = np.concatenate([blocks, [0, 12 * nside_block ** 2 - 1]])  # polar caps
    pts = hp.boundaries(nside_block, blocks, step=3, nest=True)  # corners and edge points
    base = hp.boundaries(1, np.arange(12), step=1, nest=True)  # where 3 or 4 base pixels meet
    vec = np.concatenate([np.moveaxis(pts, 1, 2).reshape(-1, 3),
                          np.moveaxis(base, 1, 2).reshape(-1, 3)])
    vec = np.concatenate([vec, vec + 1e-9 * rng.standard_normal(vec.shape)])
    vec /= np.linalg.norm(vec, axis=1)[:, None]
    l, b = hp.vec2ang(vec, lonlat=True)
    return l, b


def _exact_blocks(l, b, nside: int, nside_block: int, radius: float):
    """Brute force: blocks of the map pixels whose centres lie within the radius."""
    f = (nside // nside_block) ** 2
    vec = lb_to_unit_vectors(l, b)
    return [set((hp.query_disc(nside, v, radius, nest=True) // f).tolist()) for v in vec]


@pytest.mark.parametrize("nside, nside_block, max_extra", [
    (8192, 256, 1.15),   # the real map: the neighbour shortcut
    (1024, 64, 1.15),    # radius 5/16 of a block: still the shortcut
    (2048, 512, 1.5),    # radius larger than a block: healpy's inclusive query_disc
])
def test_assignment_never_misses_a_block(nside, nside_block, max_extra):
    rng = np.random.default_rng(nside + nside_block)
    radius = 2.0 * 2.5 * pixelize.pixel_size_rad(nside)
    n_rand = 1500
    z, phi = rng.uniform(-1, 1, n_rand), rng.uniform(0, 2 * np.pi, n_rand)
    l_rand, b_rand = np.degrees(phi), np.degrees(np.arcsin(z))
    l_edge, b_edge = _edge_and_corner_stars(nside_block, rng)
    l = np.concatenate([l_rand, l_edge, [10.0, 200.0]])
    b = np.concatenate([b_rand, b_edge, [90.0, -90.0]])  # and the poles
    star, block = partition.assign_blocks(l, b, nside_block, radius)
    assert np.all(np.diff(star) >= 0)
    got = [set() for _ in range(l.size)]
    for s, blk in zip(star.tolist(), block.tolist()):
        got[s].add(blk)
    assert sum(len(g) for g in got) == star.size  # distinct pairs
    exact = _exact_blocks(l, b, nside, nside_block, radius)
    missing = [i for i in range(l.size) if not exact[i] <= got[i]]
    assert not missing, (missing[:5], [exact[i] - got[i] for i in missing[:5]])
    n_exact = np.array([len(e) for e in exact[:n_rand]])
    n_got = np.array([len(g) for g in got[:n_rand]])
    assert n_got.mean() <= max_extra * n_exact.mean(), (n_got.mean(), n_exact.mean())


def test_assignment_matches_the_pixel_weights():
    """Second reference: the pixels that pixelize.assign_stars_to_pixels weights."""
    rng = np.random.default_rng(3)
    nside, nside_block = 1024, 64
    f = (nside // nside_block) ** 2
    l, b = rng.uniform(299.0, 301.5, 3000), rng.uniform(-1.2, 1.2, 3000)
    radius = 2.0 * 2.5 * pixelize.pixel_size_rad(nside)
    star, block = partition.assign_blocks(l, b, nside_block, radius)
    blocks = np.unique(block)
    pix = (blocks[:, None] * f + np.arange(f)[None, :]).ravel()
    asg = pixelize.assign_stars_to_pixels(l, b, pix, nside)
    need = np.unique(asg.star * (12 * nside_block ** 2)
                     + np.repeat(pix, asg.n_stars()) // f)
    have = star * (12 * nside_block ** 2) + block
    assert np.isin(need, have).all()
    # the blocks around the candidates hold no weighted pixel either
    ring = np.setdiff1d(hp.get_all_neighbours(nside_block, blocks, nest=True).ravel(), blocks)
    ring = ring[ring >= 0]
    pix2 = (ring[:, None] * f + np.arange(f)[None, :]).ravel()
    assert pixelize.assign_stars_to_pixels(l, b, pix2, nside).n_stars().sum() == 0
    assert have.size <= 1.2 * need.size


def test_assignment_arguments():
    s, b = partition.assign_blocks([], [], 64, 1e-3)
    assert s.size == 0 and b.size == 0
    with pytest.raises(ValueError, match="same shape"):
        partition.assign_blocks([1.0, 2.0], [0.0], 64, 1e-3)
    with pytest.raises(ValueError, match="power of two"):
        partition.assign_blocks([1.0], [0.0], 48, 1e-3)
    with pytest.raises(ValueError, match="radius_rad"):
        partition.assign_blocks([1.0], [0.0], 64, -1.0)


# --------------------------------------------------------------------------- partition
CFG = pipeline.DecapsBuildConfig(
    nside=1024, nside_block=256, retry=False, seed=3, min_stars=5,
    sampler=sampler.SamplerSettings(n_rounds=20, sweeps_per_round=2, n_samples=10),
    l_range_deg=(329.7, 330.3), b_range_deg=(-1.8, -1.2))


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    from dustmaps_ext_build.galaxy import default_galaxy

    tmp = tmp_path_factory.mktemp("shards")
    stars, _ = mock.mock_catalogue(default_galaxy(), 300, np.random.default_rng(5),
                                   l_range_deg=(329.7, 330.3), b_range_deg=(-1.8, -1.2))
    d = np.linspace(0.0, 1.5, 151)
    from dustmaps_ext_build.decaps import filters

    max_ebv = filters.max_reddening_curve(d, np.full(d.size, 10.0))
    cuts = [0, 90, 200, 300]  # uneven contiguous shards: their concatenation is the input
    paths = [stars.subset(np.arange(a, e)).save(tmp / f"shard_{i}.npz")
             for i, (a, e) in enumerate(zip(cuts[:-1], cuts[1:]))]
    return stars, paths, max_ebv


def _read_dir(star_dir):
    out = {}
    for p in sorted(star_dir.glob("stars_*.npz")):
        with np.load(p) as f:
            out[p.name] = {k: f[k] for k in f.files}
    return out


def test_shards_give_the_in_memory_blocks(catalogue, tmp_path):
    stars, paths, max_ebv = catalogue
    prep = pipeline.prepare_inputs(stars, tmp_path / "mem", CFG, max_ebv)
    res = partition.partition_shards(paths, tmp_path / "frag", CFG, max_ebv,
                                     out_dir=tmp_path / "part", scheduler="synchronous",
                                     progress=False)
    assert prep["blocks"].size >= 4
    np.testing.assert_array_equal(res["blocks"], prep["blocks"])
    assert res["n_in"] == prep["n_in"] == 300 and res["n_kept"] == prep["n_kept"]
    for name in ("chi2", "m_dwarf", "distance", "unphysical"):
        assert res[f"n_cut_{name}"] == np.count_nonzero(~prep["masks"][name]) > 0
    assert res["digest"] == partition.combine_digests(
        [partition.shard_digest(StarPosteriors.load(p)) for p in paths])
    assert res["digest"] != partition.combine_digests(prep["digest"])  # 3 shards, not 1
    frag = _read_dir(tmp_path / "frag")
    assert len({k.split("_")[2] for k in frag}) == 3  # fragments of every shard
    n_multi = 0
    for bid in prep["blocks"]:
        a = StarPosteriors.load(tmp_path / "mem" / f"stars_{int(bid):06d}.npz")
        files = partition.block_star_files(tmp_path / "frag", int(bid))
        n_multi += len(files) > 1
        b = partition.load_block_stars(tmp_path / "frag", int(bid))
        for f in ("l", "b", "x0", "nx", "y0", "ny", "offsets", "data", "chi2_best"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        ra = pipeline.process_block_file(int(bid), star_dir=str(tmp_path / "mem"), config=CFG)
        rb = pipeline.process_block_file(int(bid), star_dir=str(tmp_path / "frag"),
                                         config=CFG)
        assert ra.keys() == rb.keys()
        for k in ra:
            np.testing.assert_array_equal(ra[k], rb[k])
    assert n_multi >= 2  # blocks really were assembled from several shards


def test_a_killed_partition_resumes_to_the_same_fragments(catalogue, tmp_path):
    _, paths, max_ebv = catalogue
    kw = dict(out_dir=tmp_path / "part", scheduler="synchronous", progress=False)
    first = partition.partition_shards(paths, tmp_path / "frag", CFG, max_ebv, **kw)
    before = _read_dir(tmp_path / "frag")
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "frag").iterdir()}
    # a kill: shard 1 never finished, a fragment of shard 2 is lost, a temporary file left
    block_path(tmp_path / "part", 1).unlink()
    lost = sorted((tmp_path / "frag").glob("stars_*_000002.npz"))[0]
    lost.unlink()
    tmp = tmp_path / "frag" / ".stars_000000_000001.999.tmp.npz"
    tmp.write_bytes(b"truncated")
    again = partition.partition_shards(paths, tmp_path / "frag", CFG, max_ebv, **kw)
    assert not tmp.exists()
    after = _read_dir(tmp_path / "frag")
    assert after.keys() == before.keys()
    for name in before:
        for k in before[name]:
            np.testing.assert_array_equal(before[name][k], after[name][k])
    np.testing.assert_array_equal(first["blocks"], again["blocks"])
    assert first["digest"] == again["digest"]
    for p in (tmp_path / "frag").iterdir():  # shard 0 was not run again
        if p.name.endswith("_000000.npz"):
            assert p.stat().st_mtime_ns == mtimes[p.name]
    # another job in the same folders is refused rather than mixed
    other = pipeline.DecapsBuildConfig(**{**CFG.__dict__, "seed": 4})
    with pytest.raises(ValueError, match="different job"):
        partition.partition_shards(paths, tmp_path / "frag", other, max_ebv, **kw)
    assert _read_dir(tmp_path / "frag").keys() == before.keys()


# --------------------------------------------------------------------------- build_decaps
#: Few enough stars per pixel that a third of the pixels are infilled; small infill widths
#: (halo 10 cells) so that the 112-pixel map is cut into several tiles.
SPARSE = dataclasses.replace(CFG, min_stars=100, infill_window=3, infill_train=5,
                             infill_median=3)


def test_build_decaps_from_shards_equals_in_memory(catalogue, tmp_path):
    """Shards or a catalogue in memory, tiled stage 3 or not: the file of the in-memory stage 3."""
    stars, paths, max_ebv = catalogue
    kw = dict(max_ebv=max_ebv, scheduler="synchronous", progress=False)
    a = pipeline.build_decaps(stars, tmp_path / "a.h5", tmp_path / "wa", SPARSE, tile_size=None,
                              **kw)
    b = pipeline.build_decaps(paths, tmp_path / "b.h5", tmp_path / "wb", SPARSE, **kw)
    assert (tmp_path / "wb" / "partition" / "manifest.json").is_file()
    assert a["n_pixels"] == 112 and a["n_missing"] == a["n_infilled"] > 20
    # (a tile seam of b may cross the 10 x 11-cell map; each tile's halo covers all of it)
    assert {**a, "path": None, "n_tiles": None} == {**b, "path": None, "n_tiles": None}
    assert_same_hdf5(tmp_path / "a.h5", tmp_path / "b.h5")
    # the reference: every block's results in memory, infilled untiled, written at once
    blocks = load_blocks(sorted((tmp_path / "wb" / "blocks").glob("block_*.npz")))
    ref = pipeline.assemble_release(blocks, tmp_path / "ref.h5", SPARSE, progress=False)
    assert_same_hdf5(tmp_path / "a.h5", tmp_path / "ref.h5")
    with h5py.File(tmp_path / "b.h5", "r") as f:
        info = f["pixel_info"]
        np.testing.assert_array_equal(info["n_stars"][()], ref["n_stars"])
        assert info["n_stars"].dtype == np.uint32
        assert int(info["infilled"][()].sum()) == b["n_infilled"]
        assert int(info["converged"][()].sum()) == b["n_converged"]
        np.testing.assert_array_equal(info["infilled"][()].astype(bool),
                                      ref["n_stars"] < SPARSE.min_stars)


def _dies_after(n: int, fn):
    """``fn``, interrupted (as by Ctrl-C) on its call number ``n + 1``."""
    calls = []

    def wrapped(*args, **kwargs):
        if len(calls) == n:
            raise KeyboardInterrupt
        calls.append(args[0])
        return fn(*args, **kwargs)

    return wrapped


def test_a_killed_build_resumes_to_the_same_file(catalogue, tmp_path, monkeypatch):
    from dustmaps_ext_build.decaps import assemble

    _, paths, max_ebv = catalogue
    kw = dict(max_ebv=max_ebv, scheduler="synchronous", progress=False, tile_size=4)
    ref = pipeline.build_decaps(paths, tmp_path / "ref.h5", tmp_path / "wref", SPARSE, **kw)
    assert ref["n_tiles"] >= 4 and ref["n_blocks"] == 12
    out, work = tmp_path / "map.h5", tmp_path / "work"
    # killed in stage 2, after 5 of the 12 blocks
    monkeypatch.setattr(pipeline, "process_block_file",
                        _dies_after(5, pipeline.process_block_file))
    with pytest.raises(KeyboardInterrupt):
        pipeline.build_decaps(paths, out, work, SPARSE, **kw)
    monkeypatch.undo()
    blocks_done = {p: p.stat().st_mtime_ns for p in (work / "blocks").glob("block_*.npz")}
    assert len(blocks_done) == 5 and not out.exists()
    # killed again in stage 3, after 2 infill tiles
    monkeypatch.setattr(assemble, "infill_tile", _dies_after(2, assemble.infill_tile))
    with pytest.raises(KeyboardInterrupt):
        pipeline.build_decaps(paths, out, work, SPARSE, **kw)
    monkeypatch.undo()
    tiles_done = {p: p.stat().st_mtime_ns
                  for p in (work / "assemble" / "infill").glob("block_*.npz")}
    assert len(tiles_done) == 2 and not out.exists()
    assert not list(tmp_path.glob(".map.h5*"))  # nothing that looks like a map
    assert all(p.stat().st_mtime_ns == t for p, t in blocks_done.items())
    # resumed: the file of the uninterrupted build, without redoing finished work
    summary = pipeline.build_decaps(paths, out, work, SPARSE, **kw)
    assert summary == {**ref, "path": out}
    assert_same_hdf5(out, tmp_path / "ref.h5")
    done = {**blocks_done, **tiles_done}
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())
    # a finished map is not overwritten by mistake, and bad settings fail before any work
    with pytest.raises(FileExistsError, match="overwrite"):
        pipeline.build_decaps(paths, out, work, SPARSE, **kw)
    with pytest.raises(ValueError, match="tile_size"):
        pipeline.build_decaps(paths, tmp_path / "x.h5", tmp_path / "wx", SPARSE,
                              **{**kw, "tile_size": 0})
    assert not (tmp_path / "wx").exists()


def test_a_damaged_intermediate_is_named_and_only_it_is_redone(catalogue, tmp_path):
    """Shard results, blocks and infill tiles are checked when a build resumes."""
    _, paths, max_ebv = catalogue
    kw = dict(max_ebv=max_ebv, scheduler="synchronous", progress=False, tile_size=4)
    work = tmp_path / "work"
    pipeline.build_decaps(paths, tmp_path / "ref.h5", work, SPARSE, **kw)
    for k, (stage, damage) in enumerate([("partition", "truncated"), ("blocks", "truncated"),
                                         ("blocks", "another block's file"),
                                         ("assemble/infill", "truncated")]):
        done = {p: p.stat().st_mtime_ns for p in work.rglob("block_*.npz")}
        files = sorted((work / stage).glob("block_*.npz"))
        assert len(files) >= 2
        victim, other = files[1], files[0]
        if damage == "truncated":
            victim.write_bytes(victim.read_bytes()[:-50])
        else:
            victim.write_bytes(other.read_bytes())
        out = tmp_path / f"map{k}.h5"
        with pytest.raises(ValueError, match="Delete the file") as err:
            pipeline.build_decaps(paths, out, work, SPARSE, **kw)
        assert f"{victim}: " in str(err.value) and str(other) not in str(err.value)
        assert not out.exists()
        victim.unlink()
        pipeline.build_decaps(paths, out, work, SPARSE, **kw)
        assert_same_hdf5(out, tmp_path / "ref.h5")
        redone = {p for p, t in done.items() if p.stat().st_mtime_ns != t}
        assert redone == {victim}, (stage, damage)


# --------------------------------------------------------------------------- errors
def test_bad_inputs_are_reported_clearly(catalogue, tmp_path):
    _, paths, _ = catalogue
    with pytest.raises(FileNotFoundError, match="star file not found"):
        partition.resolve_shards([paths[0], tmp_path / "nope.npz"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .npz shard files"):
        partition.resolve_shards(tmp_path / "empty")
    np.savez(tmp_path / "wrong.npz", l=np.zeros(3), b=np.zeros(3))
    with pytest.raises(ValueError, match="missing fields x0, nx"):
        partition.resolve_shards([paths[0], tmp_path / "wrong.npz"])
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a .npz star shard"):
        partition.resolve_shards(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="more than once"):
        partition.resolve_shards([paths[0], paths[0]])
    with pytest.raises(ValueError, match="missing fields"):  # the worker checks too
        partition.partition_shard(0, shard_paths=[str(tmp_path / "wrong.npz")],
                                  star_dir=str(tmp_path / "s"), config=CFG)
    with pytest.raises(FileNotFoundError, match="no star file of block 7"):
        pipeline.process_block_file(7, star_dir=str(tmp_path), config=CFG)
    StarPosteriors.load(paths[0]).save(tmp_path / "stars_000007.npz")
    StarPosteriors.load(paths[0]).save(tmp_path / "stars_000007_000000.npz")
    with pytest.raises(ValueError, match="both"):
        partition.load_block_stars(tmp_path, 7)
    assert os.path.exists(tmp_path / "stars_000007.npz")
