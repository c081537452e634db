"""Tests of the build-decaps command line."""

from __future__ import annotations

import numpy as np
import pytest

from build_tools.decaps import cli, mock


def test_config_from_arguments():
    args = cli.make_parser().parse_args(["s.npz", "o.h5", "--nside", "1024", "--rounds", "50",
                                         "--l-range", "300", "301"])
    cfg = cli.config_from_args(args)
    assert cfg.nside == 1024 and cfg.sampler.n_rounds == 50 and not cfg.retry
    assert cfg.l_range_deg == (300.0, 301.0)
    default = cli.config_from_args(cli.make_parser().parse_args(["s.npz", "o.h5"]))
    assert default.retry and default.sampler.n_rounds == 2500 and default.nside == 8192


def test_errors_give_a_nonzero_status(tmp_path, capsys):
    assert cli.build_decaps_main([str(tmp_path / "none.npz"), str(tmp_path / "o.h5")]) == 2
    assert "star file not found" in capsys.readouterr().err
    bad = tmp_path / "dens.csv"
    bad.write_text("0,1,2\n1,2,3\n")
    stars = tmp_path / "s.npz"
    stars.write_bytes(b"")
    assert cli.build_decaps_main([str(stars), str(tmp_path / "o.h5"), "--max-density",
                                  str(bad)]) == 2
    assert "two columns" in capsys.readouterr().err


def test_end_to_end_with_the_runner(tmp_path, capsys):
    pytest.importorskip("build_tools.runner")  # the Dask runner lands at merge time
    from build_tools.galaxy import default_galaxy

    stars, _ = mock.mock_catalogue(default_galaxy(), 150, np.random.default_rng(0),
                                   l_range_deg=(329.9, 330.1), b_range_deg=(-1.6, -1.4))
    path = stars.save(tmp_path / "stars.npz")
    out = tmp_path / "map.h5"
    argv = [str(path), str(out), "--nside", "1024", "--nside-block", "256", "--rounds", "20",
            "--sweeps", "2", "--l-range", "329.95", "330.05", "--b-range", "-1.55", "-1.45",
            "--scheduler", "synchronous", "--no-progress"]
    assert cli.build_decaps_main(argv) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out


def test_several_shards_or_a_folder_give_the_single_file_map(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    from build_tools.galaxy import default_galaxy

    stars, _ = mock.mock_catalogue(default_galaxy(), 150, np.random.default_rng(0),
                                   l_range_deg=(329.9, 330.1), b_range_deg=(-1.6, -1.4))
    whole = stars.save(tmp_path / "stars.npz")
    (tmp_path / "shards").mkdir()
    shards = [stars.subset(np.arange(a, e)).save(tmp_path / "shards" / f"part_{i}.npz")
              for i, (a, e) in enumerate([(0, 40), (40, 100), (100, 150)])]
    opts = ["--nside", "1024", "--nside-block", "256", "--rounds", "20", "--sweeps", "2",
            "--l-range", "329.95", "330.05", "--b-range", "-1.55", "-1.45",
            "--scheduler", "synchronous", "--no-progress"]
    runs = {"one": [str(whole)], "files": [str(p) for p in shards],
            "folder": [str(tmp_path / "shards")]}
    for name, inputs in runs.items():
        assert cli.build_decaps_main(inputs + [str(tmp_path / f"{name}.h5")] + opts) == 0
    assert "wrote" in capsys.readouterr().out

    def read(path):
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda k, v: out.__setitem__(k, v[()])
                         if isinstance(v, h5py.Dataset) else None)
        return out

    ref = read(tmp_path / "one.h5")
    assert ref
    for name in ("files", "folder"):
        got = read(tmp_path / f"{name}.h5")
        assert got.keys() == ref.keys()
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k])
    assert len(list((tmp_path / "files_work" / "partition").glob("block_*.npz"))) == 3
    # a folder without shards, or a shard that is not one, fail cleanly
    (tmp_path / "none").mkdir()
    assert cli.build_decaps_main([str(tmp_path / "none"), str(tmp_path / "x.h5")]) == 2
    assert "no .npz shard files" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", l=np.zeros(2))
    assert cli.build_decaps_main([str(shards[0]), str(tmp_path / "bad.npz"),
                                  str(tmp_path / "x.h5")]) == 2
    assert "missing fields" in capsys.readouterr().err
