"""One command line for ``dustmaps-ext``, ``build-decaps`` and ``build-parametric``.

Same option names and meanings, ``-v``/``-q`` anywhere, help on every option, ``--help``
without heavy imports, one-line errors naming flags, the build extra named when missing,
the dashboard on 127.0.0.1, Dask's INFO lines only at ``-vv``, ``TQDM_DISABLE`` honoured,
and the installed console scripts.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import dustmaps_ext
from dustmaps_ext import cli
from dustmaps_ext_build import cli as build_cli

PARSERS = {"dustmaps-ext": cli.build_parser, "build-decaps": build_cli.decaps_parser,
           "build-parametric": build_cli.parametric_parser,
           "build-decaps-convert": build_cli.convert_parser}
HEAVY = ("numpy", "scipy", "healpy", "numba", "dask", "distributed", "astropy", "h5py",
         "matplotlib", "dustmaps", "pandas", "pyarrow")
DEPRECATED_ALIASES = {"--n-workers", "--no-resume"}


def _walk(parser: argparse.ArgumentParser, words=()):
    """(sub-command words, parser) of a parser and of all its sub-commands."""
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, words + (name,))


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)


# ------------------------------------------------------------------------- option names

@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_option_and_subcommand_has_help(command):
    hidden = set()
    for words, parser in _walk(PARSERS[command]()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{command} {' '.join(words)} {choice.dest}: no help"
                continue
            if action.help == argparse.SUPPRESS:
                hidden.update(action.option_strings)
                continue
            assert action.help and action.help.strip(), (
                f"{command} {' '.join(words)} {action.option_strings or action.dest}: no help")
    # the only options without help are the older spellings of the builds
    assert hidden == {"dustmaps-ext": set(), "build-decaps-convert": set(),
                      "build-parametric": DEPRECATED_ALIASES,
                      "build-decaps": DEPRECATED_ALIASES | {"--nside-block"}}[command]


def test_builds_share_their_options_with_one_meaning():
    def options(parser):
        return {opt: (action.dest, type(action).__name__, action.help)
                for action in parser._actions for opt in action.option_strings}

    decaps, parametric = options(build_cli.decaps_parser()), options(build_cli.parametric_parser())
    shared = ["--work-dir", "--scheduler", "--workers", "--restart", "--overwrite",
              "--no-progress", "--dashboard-address", "-v", "--verbose", "-q", "--quiet",
              "--version", "--n-workers", "--no-resume"]
    for opt in shared:
        assert decaps[opt] == parametric[opt], opt
    # the HEALPix order of the blocks (the unit of work) has one spelling in both builds
    assert decaps["--block-nside"][1] == parametric["--block-nside"][1] == "_StoreAction"
    assert build_cli.decaps_parser().parse_args(["s", "o", "--nside-block", "64"]).nside_block == 64
    top = options(cli.build_parser())
    for opt in ("-v", "--verbose", "-q", "--quiet", "--version"):
        assert top[opt] == decaps[opt], opt
    fetch = dict(_walk(cli.build_parser()))[("fetch", "decaps")]
    assert options(fetch)["--no-progress"][2] and "--n-workers" not in top


@pytest.mark.parametrize("argv, level", [
    (["demo"], 0),
    (["-v", "demo"], 1),
    (["demo", "-v"], 1),
    (["-v", "fetch", "wang2025", "-v"], 2),
    (["fetch", "decaps", "-vv", "--yes"], 2),
    (["-q", "plot", "strip", "--distance", "1", "-o", "x.png"], -1),
    (["plot", "strip", "--distance", "1", "-o", "x.png", "-q", "-v"], 0),
])
def test_verbosity_before_or_after_the_subcommand(argv, level):
    assert cli.verbosity(cli.build_parser().parse_args(argv)) == level


@pytest.mark.parametrize("parser", [build_cli.decaps_parser, build_cli.parametric_parser])
def test_build_verbosity_anywhere(parser):
    args = parser().parse_args(["-v", "in.npz", "-v", "out.h5", "-v"])
    assert cli.verbosity(args) == 3


def test_logging_levels_and_dask_only_at_vv():
    saved = {n: logging.getLogger(n).level for n in ("", "distributed", "dask")}
    env = {name: os.environ.get(name) for name in ("DASK_LOGGING__DISTRIBUTED", "BOKEH_PY_LOG_LEVEL")}
    try:
        cli.configure_logging(0)
        assert logging.getLogger().level == logging.WARNING
        assert logging.getLogger("distributed").level == logging.WARNING
        cli.configure_logging(1)
        assert logging.getLogger().level == logging.INFO
        assert logging.getLogger("distributed").level == logging.WARNING
        cli.configure_logging(2)
        assert logging.getLogger("distributed").level == logging.DEBUG
        cli.configure_logging(-1)
        assert logging.getLogger().level == logging.ERROR
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ------------------------------------------------------------------ builds: what they run

def _record_parametric(monkeypatch):
    import dustmaps_ext_build.parametric.pipeline as pipeline
    from dustmaps_ext_build.runner import dashboard_address

    calls = []

    def fake_build(catalog, output, work, **kwargs):
        calls.append({"catalog": catalog, "output": output, "work": work,
                      "dashboard": dashboard_address(), **kwargs})
        return {"nside": np.array([64]), "fitted": np.array([True]), "sigma": np.array([0.1])}

    monkeypatch.setattr(pipeline, "build_parametric_map", fake_build)
    return calls


def test_parametric_options_reach_the_build(tmp_path, monkeypatch, capsys, caplog):
    calls = _record_parametric(monkeypatch)
    out = tmp_path / "map.fits"
    assert build_cli.build_parametric_main(["cat.parquet", str(out), "--workers", "3",
                                            "--restart", "--scheduler", "threads"]) == 0
    call = calls[-1]
    assert call["n_workers"] == 3 and call["resume"] is False and call["scheduler"] == "threads"
    assert call["work"] == tmp_path / "map.fits.work"
    assert call["dashboard"] == "127.0.0.1:0"
    assert f"wrote {out}" in capsys.readouterr().out
    # the old spellings still work, with a deprecation note on the log
    assert build_cli.build_parametric_main(["cat.parquet", str(out), "--n-workers", "2",
                                            "--no-resume", "--dashboard-address", "none"]) == 0
    call = calls[-1]
    assert call["n_workers"] == 2 and call["resume"] is False and call["dashboard"] is None
    assert "--n-workers is deprecated; use --workers" in caplog.text
    assert "--no-resume is deprecated; use --restart" in caplog.text
    assert build_cli.build_parametric_main(["cat.parquet", str(out),
                                            "--dashboard-address", "127.0.0.1:8790"]) == 0
    assert calls[-1]["dashboard"] == "127.0.0.1:8790" and calls[-1]["resume"] is True


def test_parametric_penalty_and_bound_reach_the_fit(tmp_path, monkeypatch):
    from dustmaps_ext_build.parametric.fit import FitConfig

    calls = _record_parametric(monkeypatch)
    out = str(tmp_path / "map.fits")
    assert build_cli.build_parametric_main(["cat.parquet", out]) == 0
    # lam 0.05, rho free of penalty up to 0.04 and soft up to 1 by default
    assert calls[-1]["config"].fit == FitConfig()
    assert build_cli.build_parametric_main(["cat.parquet", out, "--lam", "0.1",
                                            "--rho-max", "0.5"]) == 0
    fit = calls[-1]["config"].fit
    assert fit.lam == 0.1 and fit.rho_bounds == (0.0, 0.5) and fit.rho_soft_limit == 1.0
    # the paper's hard bound
    assert build_cli.build_parametric_main(["cat.parquet", out, "--rho-soft-limit", "none"]) == 0
    assert calls[-1]["config"].fit.rho_soft_limit is None
    assert build_cli.build_parametric_main(["cat.parquet", out, "--rho-soft-limit", "2"]) == 0
    assert calls[-1]["config"].fit.rho_soft_limit == 2.0
    with pytest.raises(SystemExit):
        build_cli.build_parametric_main(["cat.parquet", out, "--rho-soft-limit", "lots"])
    assert fit.gap_placement == FitConfig().gap_placement == "prior"
    assert build_cli.build_parametric_main(["cat.parquet", out, "--gap-placement",
                                            "minimax"]) == 0
    assert calls[-1]["config"].fit == FitConfig(gap_placement="minimax")
    assert FitConfig().distance_error_model is True
    assert build_cli.build_parametric_main(["cat.parquet", out,
                                            "--no-distance-error-model"]) == 0
    assert calls[-1]["config"].fit == FitConfig(distance_error_model=False)


@pytest.fixture(scope="module")
def star_file(tmp_path_factory):
    from dustmaps_ext_build.decaps import mock
    from dustmaps_ext_build.galaxy import default_galaxy

    stars, _ = mock.mock_catalogue(default_galaxy(), 20, np.random.default_rng(0),
                                   l_range_deg=(329.9, 330.1), b_range_deg=(-1.6, -1.4))
    return stars.save(tmp_path_factory.mktemp("stars") / "stars.npz")


def test_decaps_options_and_work_folder(tmp_path, monkeypatch, star_file, caplog):
    import dustmaps_ext_build.decaps.pipeline as pipeline

    calls = []

    def fake_build(shards, out, work, cfg, **kwargs):
        calls.append({"shards": shards, "work": work, "cfg": cfg, **kwargs})
        return {"n_pixels": 1, "n_converged": 1, "n_infilled": 0, "n_missing": 0,
                "n_no_reliable_range": 0, "smoothed": True, "unphysical_cut": False}

    monkeypatch.setattr(pipeline, "build_decaps", fake_build)
    out = tmp_path / "map.h5"
    assert build_cli.build_decaps_main([str(star_file), str(out), "--workers", "4",
                                        "--restart", "--nside", "1024"]) == 0
    call = calls[-1]
    assert call["work"] == tmp_path / "map.h5.work" and call["n_workers"] == 4
    assert call["resume"] is False and call["cfg"].nside == 1024
    # a work folder of the older name (OUTPUT-STEM_work) is reused, so an old run resumes
    (tmp_path / "map_work").mkdir()
    assert build_cli.build_decaps_main([str(star_file), str(out), "--no-resume"]) == 0
    assert calls[-1]["work"] == tmp_path / "map_work" and calls[-1]["resume"] is False
    assert "earlier version" in caplog.text
    # ... unless the new one exists
    (tmp_path / "map.h5.work").mkdir()
    assert build_cli.build_decaps_main([str(star_file), str(out)]) == 0
    assert calls[-1]["work"] == tmp_path / "map.h5.work" and calls[-1]["resume"] is True


# ------------------------------------------------------------------------------- errors

def test_runner_messages_name_flags_not_keywords(tmp_path, capsys):
    from helpers.blocks import squares_block

    from dustmaps_ext_build.runner import run_blocks

    out = tmp_path / "blocks"
    run_blocks([0, 1], functools.partial(squares_block, seed=1), out, scheduler="synchronous",
               progress=False)

    def other_job():
        run_blocks([0, 1], functools.partial(squares_block, seed=2), out,
                   scheduler="synchronous", progress=False)

    with pytest.raises(ValueError, match="resume=False"):  # the library names its keyword
        other_job()
    assert cli.run_command("build-parametric", other_job, flags=build_cli.BUILD_FLAGS) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("build-parametric: error: ")
    assert "--restart" in err and "resume=False" not in err
    # -vv keeps the traceback (the exception propagates)
    with pytest.raises(ValueError):
        cli.run_command("build-parametric", other_job, 2, flags=build_cli.BUILD_FLAGS)
    # a bug (not an input, file or network error) keeps its traceback at any verbosity
    with pytest.raises(ZeroDivisionError):
        cli.run_command("build-parametric", lambda: 1 // 0)


def test_flag_message():
    assert cli.flag_message("run with resume=False, or n_workers=2\nor not", build_cli.BUILD_FLAGS) \
        == "run with --restart, or --workers=2 or not"
    # only whole keywords are replaced
    assert cli.flag_message("my_n_workers and n_workers_x", build_cli.BUILD_FLAGS) \
        == "my_n_workers and n_workers_x"


@pytest.mark.parametrize("argv, expected", [
    (["dustmaps-ext", "plot", "wang2025", "--l", "1", "--b", "1", "--map", "{tmp}/none.h5"],
     "dustmaps-ext plot: error: "),
    (["dustmaps-ext", "plot", "strip", "--decaps", "{tmp}/bad.h5", "--distance", "2", "-o",
      "{tmp}/x.png"], "dustmaps-ext plot: error: "),
    (["build-decaps", "{tmp}/none.npz", "{tmp}/out.h5"],
     "build-decaps: error: star file not found"),
    (["build-decaps", "{tmp}/bad.h5", "{tmp}/out.h5"], "build-decaps: error: "),
    (["build-decaps", "{tmp}/bad.h5", "{tmp}/out.h5", "--workers", "0"],
     "build-decaps: error: --workers must be at least 1"),
    (["build-parametric", "{tmp}/none.parquet", "{tmp}/out.fits", "--column", "l"],
     "build-parametric: error: --column expects CANONICAL=NAME"),
    (["build-parametric", "{tmp}/none.parquet", "{tmp}/out.fits", "--scheduler", "synchronous"],
     "build-parametric: error: "),
])
def test_expected_errors_are_one_line(tmp_path, argv, expected):
    (tmp_path / "bad.h5").write_bytes(b"not an HDF5 file, nor a star archive")
    script = _installed_script(argv[0])
    proc = _run([script] + [a.format(tmp=tmp_path) for a in argv[1:]], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), proc.stderr
    assert "Traceback" not in proc.stderr and "=False" not in proc.stderr


# ------------------------------------------------------------------- heavy imports, help

_HELP_PROBE = textwrap.dedent("""
    import argparse, json, sys, time
    from dustmaps_ext.cli import build_parser, main
    from dustmaps_ext_build.cli import (build_decaps_convert_main, build_decaps_main,
                                        build_parametric_main, convert_parser,
                                        decaps_parser, parametric_parser)

    def walk(parser, words=()):
        yield words
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, words + (name,))

    heavy = set(sys.argv[1].split(","))
    report = []
    for name, entry, parser in [("dustmaps-ext", main, build_parser),
                                ("build-decaps", build_decaps_main, decaps_parser),
                                ("build-parametric", build_parametric_main, parametric_parser),
                                ("build-decaps-convert", build_decaps_convert_main,
                                 convert_parser)]:
        for words in walk(parser()):
            for flag in ("--help", "--version") if not words else ("--help",):
                start = time.perf_counter()
                try:
                    entry(list(words) + [flag])
                except SystemExit as exc:
                    code = exc.code
                report.append([name, list(words), flag, code, time.perf_counter() - start,
                               sorted({m.split(".")[0] for m in sys.modules} & heavy)])
    sys.stdout.flush()
    print("REPORT" + json.dumps(report), file=sys.stderr)
""")


def test_help_and_version_import_nothing_heavy():
    """Every command and sub-command: ``--help`` exits 0 having imported no heavy module."""
    proc = _run([sys.executable, "-c", _HELP_PROBE, ",".join(HEAVY)])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stderr.rsplit("REPORT", 1)[1])
    commands = {(name, tuple(words)) for name, words, *_ in report}
    assert ("dustmaps-ext", ("fetch", "decaps")) in commands
    assert ("dustmaps-ext", ("plot", "topdown")) in commands
    assert len(commands) >= 12
    for name, words, flag, code, _seconds, heavy in report:
        assert code == 0, (name, words, flag)
        assert heavy == [], f"{name} {' '.join(words)} {flag} imported {heavy}"
    assert f"dustmaps-ext {dustmaps_ext.__version__}" in proc.stdout
    assert f"build-decaps {dustmaps_ext.__version__}" in proc.stdout
    assert f"build-parametric {dustmaps_ext.__version__}" in proc.stdout
    assert f"build-decaps-convert {dustmaps_ext.__version__}" in proc.stdout


# -------------------------------------------------------------------- the build extra

_WITHOUT_EXTRA = textwrap.dedent("""
    import sys
    sys.modules[sys.argv[1]] = None      # as if that module were not installed
    from dustmaps_ext_build.cli import build_decaps_main, build_parametric_main
    main = build_decaps_main if sys.argv[2] == "build-decaps" else build_parametric_main
    sys.exit(main(sys.argv[3:]))
""")


@pytest.mark.parametrize("module", ["dask", "threadpoolctl", "pyarrow", "distributed"])
@pytest.mark.parametrize("command", ["build-decaps", "build-parametric"])
def test_missing_build_extra_is_one_line(tmp_path, star_file, command, module):
    out = tmp_path / "out.h5"
    proc = _run([sys.executable, "-c", _WITHOUT_EXTRA, module, command, str(star_file),
                 str(out)])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"(missing: {module})" in lines[0]
    assert lines[0].endswith('pip install "dustmaps_ext[build]"')
    # --help and --version need nothing of the extra
    assert _run([sys.executable, "-c", _WITHOUT_EXTRA, module, command, "--help"]).returncode == 0


# --------------------------------------------------------------- dashboard and Dask logs

_LOCAL_CLUSTER_RUN = textwrap.dedent("""
    import functools, sys
    import distributed
    from dustmaps_ext.cli import configure_logging
    from dustmaps_ext_build.runner import load_blocks, run_blocks
    from helpers.blocks import squares_block

    links = []

    class RecordingCluster(distributed.LocalCluster):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            links.append(self.dashboard_link)

    distributed.LocalCluster = RecordingCluster

    if __name__ == "__main__":
        configure_logging(int(sys.argv[2]))
        paths = run_blocks([0, 1, 2], functools.partial(squares_block, seed=5), sys.argv[1],
                           scheduler=None, n_workers=1, progress=False)
        print(load_blocks(paths)["value"].tolist(), links)
""")


@pytest.mark.slow
def test_local_cluster_dashboard_on_localhost_and_quiet_dask_logs(tmp_path):
    script = tmp_path / "run_cluster.py"
    script.write_text(_LOCAL_CLUSTER_RUN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).parent)] + [p for p in sys.path if p]))
    env.pop("DASK_LOGGING__DISTRIBUTED", None)
    env.pop("BOKEH_PY_LOG_LEVEL", None)
    quiet = _run([sys.executable, str(script), str(tmp_path / "q"), "0"], env=env, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    expected = [5 + b * b for b in (0, 1, 2) for _ in range(3)]
    assert str(expected) in quiet.stdout
    assert "http://127.0.0.1:" in quiet.stdout
    assert quiet.stderr == ""
    # at -vv Dask's own INFO lines are shown (so the quiet run above did silence them)
    loud = _run([sys.executable, str(script), str(tmp_path / "l"), "2"], env=env, cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert "INFO" in loud.stderr and "distributed" in loud.stderr


def test_dashboard_address_default_and_override():
    import dask

    from dustmaps_ext_build.runner import DASHBOARD_ADDRESS_KEY, dashboard_address

    assert dashboard_address() == "127.0.0.1:0"
    with dask.config.set({DASHBOARD_ADDRESS_KEY: None}):
        assert dashboard_address() is None


# ------------------------------------------------------------------------ progress bars

def test_tqdm_disable_silences_every_bar(monkeypatch, capsys, tmp_path):
    from dustmaps_ext._demo import demo_map_path
    from dustmaps_ext.decaps import DECaPSQuery, repack
    from dustmaps_ext.progress import tqdm

    def bars():
        DECaPSQuery(demo_map_path(), progress=True)
        for layout in ("pixel-major", "compact"):
            repack(demo_map_path(), tmp_path / f"r{len(list(tmp_path.iterdir()))}.h5", progress=True,
                   layout=layout)
        for _ in tqdm(range(3), disable=False):
            pass
        return capsys.readouterr().err

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    shown = bars()
    assert "Loading DECaPS map" in shown and "Repacking DECaPS" in shown and "3/3" in shown
    assert "Writing compact DECaPS" in shown
    monkeypatch.setenv("TQDM_DISABLE", "0")  # tqdm's "false" spellings keep the bars
    assert "Loading DECaPS map" in bars()
    for value in ("1", "true", "yes"):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert bars() == ""


# ------------------------------------------------------------ installed console scripts

def _installed_script(name: str) -> str:
    """The console script ``name`` of the installed package (next to this Python first)."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    assert found, f"{name} is not installed (pip install . puts it next to {sys.executable})"
    return found


@pytest.mark.parametrize("name", ["dustmaps-ext", "build-decaps", "build-parametric"])
def test_installed_scripts_version_and_help(name):
    script = _installed_script(name)
    version = _run([script, "--version"])
    assert version.returncode == 0 and version.stdout.strip() == f"{name} {dustmaps_ext.__version__}"
    helped = _run([script, "--help"])
    assert helped.returncode == 0 and helped.stdout.startswith(f"usage: {name}")
    assert helped.stderr == ""


def test_installed_demo_runs_offline_into_a_folder(tmp_path):
    png = tmp_path / "demo.png"
    proc = _run([_installed_script("dustmaps-ext"), "demo", "--output", str(png)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "E(B-V)" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.png"]


def test_weighting_choices_are_the_pipelines_weight_modes():
    # the parser keeps its choices literal (no pipeline import at --help); they must stay the
    # modes the build accepts
    from dustmaps_ext_build.decaps.pixelize import WEIGHT_MODES

    action = next(a for a in build_cli.decaps_parser()._actions if a.dest == "weighting")
    assert tuple(action.choices) == WEIGHT_MODES


def test_gap_placement_choices_are_the_fits():
    # literal in the parser (no pipeline import at --help), the placements the fit accepts
    from dustmaps_ext_build.parametric.fit import GAP_PLACEMENTS

    action = next(a for a in build_cli.parametric_parser()._actions
                  if a.dest == "gap_placement")
    assert tuple(action.choices) == GAP_PLACEMENTS
