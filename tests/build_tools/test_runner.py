"""The shared Dask block runner: resume after a kill, byte-identical outputs, fingerprints."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from dustmaps_ext_build.runner import (block_file_problem, block_path, block_seed, job_fingerprint,
                                       load_blocks, run_blocks)

BLOCKS = [3, 0, 7, 5, 1]


def random_block(block_id: int, seed: int, log_dir: str | None = None,
                 fail_on: int | None = None) -> dict:
    """A block job with per-block random numbers; logs each call; fails once on ``fail_on``."""
    if log_dir is not None:
        log = Path(log_dir)
        calls = sorted(log.glob(f"call_{block_id}_*"))
        (log / f"call_{block_id}_{len(calls)}").touch()
        if block_id == fail_on and not calls:
            raise RuntimeError(f"simulated crash in block {block_id}")
    rng = np.random.default_rng(block_seed(seed, block_id))
    n = 3 + block_id
    return {"block": np.full(n, block_id), "value": rng.normal(size=n),
            "matrix": rng.random((n, 2)).astype(np.float32)}


def _expected(block_id, seed):
    return random_block(block_id, seed)


def _bytes(paths):
    return [Path(p).read_bytes() for p in paths]


def test_synchronous_run_and_load(tmp_path):
    job = functools.partial(random_block, seed=42)
    paths = run_blocks(BLOCKS, job, tmp_path / "out", scheduler="synchronous", progress=False)
    assert paths == [block_path(tmp_path / "out", b) for b in sorted(BLOCKS)]
    merged = load_blocks(paths)
    for key in ("block", "value", "matrix"):
        ref = np.concatenate([_expected(b, 42)[key] for b in sorted(BLOCKS)])
        np.testing.assert_array_equal(merged[key], ref)
        assert merged[key].dtype == ref.dtype
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["fingerprint"] == job_fingerprint(job)
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_killed_run_resumes_to_identical_files(tmp_path):
    # the logging arguments do not change the numbers: one fingerprint for both jobs
    full = run_blocks(BLOCKS, functools.partial(random_block, seed=1), tmp_path / "full",
                      scheduler="synchronous", progress=False, fingerprint="seed-1")
    logs = tmp_path / "logs"
    logs.mkdir()
    job = functools.partial(random_block, seed=1, log_dir=str(logs), fail_on=5)
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_blocks(BLOCKS, job, out, scheduler="synchronous", progress=False, fingerprint="seed-1")
    done_before = {p.name for p in out.glob("block_*.npz")}
    assert block_path(out, 5).name not in done_before
    paths = run_blocks(BLOCKS, job, out, scheduler="synchronous", progress=False,
                       fingerprint="seed-1")
    assert _bytes(paths) == _bytes(full)
    # blocks finished before the crash were not recomputed
    for name in done_before:
        bid = int(name[6:12])
        assert len(list(logs.glob(f"call_{bid}_*"))) == 1
    assert len(list(logs.glob("call_5_*"))) == 2


def test_running_a_subset_first_gives_the_same_files(tmp_path):
    job = functools.partial(random_block, seed=9)
    full = run_blocks(BLOCKS, job, tmp_path / "a", scheduler="synchronous", progress=False)
    run_blocks(BLOCKS[:2], job, tmp_path / "b", scheduler="synchronous", progress=False)
    rest = run_blocks(BLOCKS, job, tmp_path / "b", scheduler="threads", n_workers=2,
                      progress=False)
    assert _bytes(rest) == _bytes(full)


def test_mismatched_fingerprint_is_refused(tmp_path):
    out = tmp_path / "out"
    run_blocks(BLOCKS[:2], functools.partial(random_block, seed=1), out,
               scheduler="synchronous", progress=False)
    with pytest.raises(ValueError, match="different job"):
        run_blocks(BLOCKS, functools.partial(random_block, seed=2), out,
                   scheduler="synchronous", progress=False)
    with pytest.raises(ValueError, match="different job"):
        run_blocks(BLOCKS, functools.partial(random_block, seed=1), out,
                   scheduler="synchronous", progress=False, fingerprint="explicit-v2")
    # starting over is allowed, and removes the old job's blocks
    paths = run_blocks(BLOCKS[:1], functools.partial(random_block, seed=2), out,
                       scheduler="synchronous", progress=False, resume=False)
    assert sorted(out.glob("block_*.npz")) == paths
    np.testing.assert_array_equal(load_blocks(paths)["value"], _expected(BLOCKS[0], 2)["value"])


def test_local_cluster_matches_synchronous(tmp_path):
    pytest.importorskip("distributed")
    job = functools.partial(random_block, seed=3)
    sync = run_blocks(BLOCKS, job, tmp_path / "sync", scheduler="synchronous", progress=False)
    dist = run_blocks(BLOCKS, job, tmp_path / "dist", scheduler=None, n_workers=2,
                      progress=False)
    assert _bytes(dist) == _bytes(sync)


def test_bad_inputs(tmp_path):
    job = functools.partial(random_block, seed=3)
    with pytest.raises(ValueError, match="distinct"):
        run_blocks([1, 1], job, tmp_path / "x", scheduler="synchronous", progress=False)
    with pytest.raises(ValueError, match="distinct"):
        run_blocks([-1], job, tmp_path / "x", scheduler="synchronous", progress=False)
    with pytest.raises(TypeError, match="dict of arrays"):
        run_blocks([0], functools.partial(np.arange), tmp_path / "y",
                   scheduler="synchronous", progress=False)
    with pytest.raises(ValueError, match="no block files"):
        load_blocks([])
    a = tmp_path / "a"
    run_blocks([0], job, a, scheduler="synchronous", progress=False)
    b = tmp_path / "b"
    run_blocks([0], functools.partial(_other_keys), b, scheduler="synchronous", progress=False)
    with pytest.raises(ValueError, match="keys"):
        load_blocks([block_path(a, 0), block_path(b, 0)])


def _other_keys(block_id):
    return {"other": np.arange(3)}


def test_block_seed_depends_on_seed_and_block_only():
    a = np.random.default_rng(block_seed(5, 10)).random(4)
    assert np.array_equal(a, np.random.default_rng(block_seed(5, 10)).random(4))
    assert not np.array_equal(a, np.random.default_rng(block_seed(5, 11)).random(4))
    assert not np.array_equal(a, np.random.default_rng(block_seed(6, 10)).random(4))
    with pytest.raises(ValueError):
        block_seed(-1, 0)


def test_progress_bar_names_the_tasks(tmp_path, capsys):
    job = functools.partial(random_block, seed=2)
    run_blocks([0, 1], job, tmp_path / "a", scheduler="synchronous", task_name="tile")
    err = capsys.readouterr().err
    assert "tiles" in err and "2/2" in err
    run_blocks([0, 1], job, tmp_path / "b", scheduler="synchronous", progress=False)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- damaged intermediates
def _flip_a_value_byte(path: Path, block_id: int, seed: int) -> None:
    """Change one byte inside the stored ``value`` array (the zip structure stays intact)."""
    data = bytearray(path.read_bytes())
    at = bytes(data).find(_expected(block_id, seed)["value"].tobytes())
    assert at > 0
    data[at + 3] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "one byte of an array",
                                    "another block's file", "another job's file"])
def test_damaged_block_file_is_named_and_only_it_is_redone(tmp_path, damage):
    logs = tmp_path / "logs"
    logs.mkdir()
    job = functools.partial(random_block, seed=4, log_dir=str(logs))
    out = tmp_path / "out"
    paths = run_blocks(BLOCKS, job, out, scheduler="synchronous", progress=False, fingerprint="j")
    clean = _bytes(paths)
    victim = block_path(out, 5)
    if damage == "truncated":
        victim.write_bytes(clean[sorted(BLOCKS).index(5)][:-100])
    elif damage == "garbage":
        victim.write_bytes(b"\x00garbage" * 50)
    elif damage == "empty":
        victim.write_bytes(b"")
    elif damage == "one byte of an array":
        _flip_a_value_byte(victim, 5, 4)
    elif damage == "another block's file":
        victim.write_bytes(block_path(out, 3).read_bytes())
    else:  # the same block computed by a job with another fingerprint
        other = run_blocks([5], functools.partial(random_block, seed=4), tmp_path / "other",
                           scheduler="synchronous", progress=False, fingerprint="k")
        victim.write_bytes(other[0].read_bytes())
    expected = {"truncated": "not a readable block file", "garbage": "not a readable block file",
                "empty": "not a readable block file", "one byte of an array": "CRC-32",
                "another block's file": "holds the result of block 3, not of block 5",
                "another job's file": "written by another job"}[damage]
    with pytest.raises(ValueError, match="Delete the file") as err:
        run_blocks(BLOCKS, job, out, scheduler="synchronous", progress=False, fingerprint="j")
    message = str(err.value)
    assert f"{victim}: " in message and expected in message
    assert message.count(".npz") == 1  # only the damaged file is named
    victim.unlink()
    paths = run_blocks(BLOCKS, job, out, scheduler="synchronous", progress=False, fingerprint="j")
    assert _bytes(paths) == clean
    calls = {b: len(list(logs.glob(f"call_{b}_*"))) for b in BLOCKS}
    assert calls == {b: 2 if b == 5 else 1 for b in BLOCKS}


def test_sound_files_pass_the_check_and_resume_computes_nothing(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    job = functools.partial(random_block, seed=4, log_dir=str(logs))
    paths = run_blocks(BLOCKS, job, tmp_path / "out", scheduler="synchronous", progress=False)
    assert all(block_file_problem(p, int(p.name[6:12]), job_fingerprint(job)) is None for p in paths)
    assert run_blocks(BLOCKS, job, tmp_path / "out", scheduler="synchronous", progress=False) == paths
    assert len(list(logs.iterdir())) == len(BLOCKS)


def test_load_blocks_names_a_damaged_file(tmp_path):
    paths = run_blocks(BLOCKS, functools.partial(random_block, seed=2), tmp_path / "out",
                       scheduler="synchronous", progress=False)
    _flip_a_value_byte(paths[1], sorted(BLOCKS)[1], 2)
    with pytest.raises(ValueError, match=f"block file {paths[1]} cannot be read"):
        load_blocks(paths)
