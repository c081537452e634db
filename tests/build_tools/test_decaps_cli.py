"""Tests of the build-decaps command line."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from dustmaps_ext_build.decaps import cli, mock
from helpers.reference import assert_same_hdf5


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
    pytest.importorskip("dustmaps_ext_build.runner")  # the Dask runner lands at merge time
    from dustmaps_ext_build.galaxy import default_galaxy

    stars, _ = mock.mock_catalogue(default_galaxy(), 150, np.random.default_rng(0),
                                   l_range_deg=(329.9, 330.1), b_range_deg=(-1.6, -1.4))
    path = stars.save(tmp_path / "stars.npz")
    out = tmp_path / "map.h5"
    argv = [str(path), str(out), "--nside", "1024", "--nside-block", "256", "--rounds", "20",
            "--sweeps", "2", "--l-range", "329.95", "330.05", "--b-range", "-1.55", "-1.45",
            "--scheduler", "synchronous", "--no-progress"]
    assert cli.build_decaps_main(argv) == 0
    printed = capsys.readouterr().out
    with h5py.File(out, "r") as f:
        info = f["pixel_info"]
        n, conv, inf = (info["healpix_index"].size, int(info["converged"][()].sum()),
                        int(info["infilled"][()].sum()))
        n_stars = info["n_stars"][()]
    assert n > 0 and n_stars.max() >= 5
    assert f"wrote {out}: {n} pixels, {conv} converged, {inf} infilled" in printed
    # a second run refuses to overwrite the map; a bad tile size is refused before any work
    assert cli.build_decaps_main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert cli.build_decaps_main([argv[0], str(tmp_path / "other.h5"), "--tile-size", "-3"]) == 2
    assert "--tile-size" in capsys.readouterr().err


def test_several_shards_or_a_folder_give_the_single_file_map(tmp_path, capsys):
    from dustmaps_ext_build.galaxy import default_galaxy

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

    for name in ("files", "folder"):
        assert_same_hdf5(tmp_path / f"{name}.h5", tmp_path / "one.h5")
    with h5py.File(tmp_path / "one.h5", "r") as f:
        assert f["pixel_info/healpix_index"].size > 0
