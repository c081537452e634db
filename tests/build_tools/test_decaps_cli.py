"""Tests of the build-decaps command line."""

from __future__ import annotations

import dataclasses

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


def test_weighting_and_smoothing_options(tmp_path, monkeypatch, capsys):
    from dustmaps_ext_build.decaps import pipeline

    parse = cli.make_parser().parse_args
    assert cli.config_from_args(parse(["s.npz", "o.h5"])).weight_mode == "loglike"
    assert cli.config_from_args(parse(["s.npz", "o.h5", "--weighting", "image"])).weight_mode \
        == "image"
    assert cli.config_from_args(parse(["s.npz", "o.h5"])).prior_rounding == "floor"
    assert cli.config_from_args(parse(["s.npz", "o.h5", "--prior-rounding", "split"])
                                ).prior_rounding == "split"
    default_model = cli.config_from_args(parse(["s.npz", "o.h5"])).prior_model
    assert default_model.sigma_ln == 0.75  # bayestar's --sigma-log-Delta-EBV default
    wide = cli.config_from_args(parse(["s.npz", "o.h5", "--prior-sigma-ln", "1.5"]))
    assert wide.prior_model == dataclasses.replace(default_model, sigma_ln=1.5)
    assert wide.fingerprint() != cli.config_from_args(parse(["s.npz", "o.h5"])).fingerprint()
    with pytest.raises(ValueError, match="sigma_ln"):
        cli.config_from_args(parse(["s.npz", "o.h5", "--prior-sigma-ln", "0"]))
    with pytest.raises(SystemExit):  # the two smoothing flags exclude each other
        parse(["s.npz", "o.h5", "--no-smooth", "--already-smoothed"])
    seen = {}

    def fake_build(shards, out, work, cfg, **kw):
        seen.update(kw, cfg=cfg)
        return {"n_pixels": 1, "n_converged": 1, "n_infilled": 0, "n_missing": 0,
                "n_no_reliable_range": 0, "smoothed": kw["smooth"], "unphysical_cut": False}

    monkeypatch.setattr(pipeline, "build_decaps", fake_build)
    from dustmaps_ext_build.galaxy import default_galaxy

    stars, _ = mock.mock_catalogue(default_galaxy(), 20, np.random.default_rng(0),
                                   l_range_deg=(329.9, 330.1), b_range_deg=(-1.6, -1.4))
    path = stars.save(tmp_path / "s.npz")
    for flags, smooth in [([], True), (["--no-smooth"], False), (["--already-smoothed"], False)]:
        assert cli.build_decaps_main([str(path), str(tmp_path / "o.h5")] + flags) == 0
        assert seen["smooth"] is smooth
        out = capsys.readouterr().out
        assert ("posteriors smoothed" if smooth else "posteriors not smoothed") in out
        assert "unphysical-mode cut off (no --max-density curve given)" in out


def test_convert_command(tmp_path, capsys):
    rng = np.random.default_rng(4)
    mu = rng.normal(10.0, 0.3, (5, 400))
    ebv = rng.normal(0.8, 0.05, (5, 400))
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["mu"], f["ebv"] = mu, ebv
        f["l"], f["b"] = np.full(5, 300.0), np.zeros(5)
        f["parallax_mas"] = np.full(5, 1.0)
    out = tmp_path / "s.npz"
    assert cli.convert_inputs_main([str(tmp_path / "s.h5"), str(out), "--mu-samples", "mu",
                                    "--ebv-samples", "ebv"]) == 0
    from dustmaps_ext_build.decaps.inputs import StarPosteriors

    stars = StarPosteriors.load(out)
    assert stars.n_star == 5 and np.all(stars.parallax_mas == 1.0)
    grid = 4.0 + 0.125 * np.arange(120)
    m = (stars.image(0).sum(axis=1) * grid).sum()
    assert abs(m - mu[0].mean()) < 0.02
    assert cli.convert_inputs_main([str(tmp_path / "s.h5"), str(out), "--mu-samples",
                                    "mu"]) == 2
    assert "--ebv-samples" in capsys.readouterr().err
