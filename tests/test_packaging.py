"""What ``pip install .`` installs: the package list of ``setup.cfg``, the installed top-level
names (``dustmaps_ext`` and ``dustmaps_ext_build``, never a generic ``build_tools``), the
shipped data (``py.typed``, the demo map), one version, console scripts that resolve."""

from __future__ import annotations

import configparser
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dustmaps_ext

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["dustmaps_ext", "build_tools", "setup.cfg", "pyproject.toml", "README.md", "LICENSE"]


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def _listed_packages(cfg) -> list[str]:
    return cfg["options"]["packages"].split()


def _package_dir(cfg) -> dict[str, str]:
    pairs = [line.split("=") for line in cfg["options"]["package_dir"].strip().splitlines()]
    return {name.strip(): folder.strip() for name, folder in pairs}


def _package_folders(cfg) -> dict[str, Path]:
    """Every folder of the package trees (modules or data), by its installed name."""
    roots = {"dustmaps_ext": "dustmaps_ext", **_package_dir(cfg)}
    found = {}
    for installed, folder in roots.items():
        root = REPO / folder
        for path in [root, *sorted(root.rglob("*"))]:
            rel = path.relative_to(root)
            if path.is_dir() and "__pycache__" not in rel.parts and any(
                    f.is_file() and "__pycache__" not in f.parts for f in path.rglob("*")):
                found[".".join((installed, *rel.parts))] = path
    return found


def test_every_package_folder_is_listed():
    cfg = _setup_cfg()
    listed = _listed_packages(cfg)
    folders = _package_folders(cfg)
    assert sorted(folders) == sorted(listed), (
        f"not in setup.cfg's packages: {sorted(set(folders) - set(listed))}; "
        f"listed without a folder: {sorted(set(listed) - set(folders))}")
    assert {name.split(".")[0] for name in listed} == {"dustmaps_ext", "dustmaps_ext_build"}
    assert _package_dir(cfg) == {"dustmaps_ext_build": "build_tools"}


def test_version_has_one_source():
    cfg = _setup_cfg()
    assert cfg["metadata"]["version"].strip() == "attr: dustmaps_ext._version.__version__"
    from dustmaps_ext._version import __version__

    assert dustmaps_ext.__version__ == __version__
    texts = [p.read_text() for p in (REPO / "dustmaps_ext").rglob("*.py")]
    assert sum(f'"{__version__}"' in t for t in texts) == 1  # written in _version.py only


def test_console_scripts_resolve():
    scripts = dict(line.split("=") for line in
                   _setup_cfg()["options.entry_points"]["console_scripts"].strip().splitlines())
    assert {k.strip() for k in scripts} == {"dustmaps-ext", "build-decaps", "build-parametric",
                                           "build-decaps-convert"}
    for target in scripts.values():
        module, func = target.strip().split(":")
        assert callable(getattr(importlib.import_module(module), func)), target


def test_what_setuptools_installs(tmp_path):
    """``build_py`` of a copy of the sources (what a wheel holds): two top-level packages."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns(
                "__pycache__", "*.nbi", "*.nbc", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path / "installed"
    proc = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
                           "build_py", "--build-lib", str(out)], cwd=src, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["dustmaps_ext", "dustmaps_ext_build"]
    assert (out / "dustmaps_ext" / "py.typed").is_file()
    assert (out / "dustmaps_ext" / "_version.py").is_file()
    assert list((out / "dustmaps_ext" / "data" / "demo").glob("*.h5"))
    assert (out / "dustmaps_ext_build" / "cli.py").is_file()
    assert (out / "dustmaps_ext_build" / "decaps" / "pipeline.py").is_file()
    # every source module of the repository is installed, under its installed name
    for installed, folder in _package_folders(_setup_cfg()).items():
        target = out.joinpath(*installed.split("."))
        for module in folder.glob("*.py"):
            assert (target / module.name).is_file(), f"{module} is not installed"


def test_the_tests_use_the_installed_package():
    """The repository root is not on ``sys.path``: the package comes from the install."""
    import dustmaps_ext_build  # exists only installed (the checkout's folder is build_tools/)

    assert not any(Path(p or ".").resolve() == REPO for p in sys.path)
    if Path(dustmaps_ext.__file__).parent == REPO / "dustmaps_ext":
        # the checkout's own file: only an editable install may map the name there, and it
        # maps the pipeline to its folder too
        assert Path(dustmaps_ext_build.__file__).parent == REPO / "build_tools"


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the git checkout")
def test_no_numba_cache_in_the_checkout():
    """The suite's numba caches go to NUMBA_CACHE_DIR (tests/conftest.py), not the sources."""
    import os

    cache = Path(os.environ["NUMBA_CACHE_DIR"]).resolve()
    assert REPO not in cache.parents and cache != REPO
    from dustmaps_ext._core import parametric  # noqa: F401  (compiles and caches kernels)

    assert not list(REPO.rglob("*.nbi")), "numba cache files in the checkout"
