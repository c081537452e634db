"""The shape of the house: import graph, layers, public interfaces, facts written once.

The import graph is read from the sources of the installed packages (``dustmaps_ext`` and
``dustmaps_ext_build``) with :mod:`ast`, so imports inside functions and under
``TYPE_CHECKING`` count too: a lazy import that closes a circle is still a circle.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
from pathlib import Path

import numpy as np
import pytest

import dustmaps_ext
import dustmaps_ext_build

PACKAGES = {"dustmaps_ext": Path(dustmaps_ext.__file__).parent,
            "dustmaps_ext_build": Path(dustmaps_ext_build.__file__).parent}

#: Modules a user works with; the layers below must not reach up into them.
USER_FACING = {"dustmaps_ext", "dustmaps_ext.decaps", "dustmaps_ext.wang2025",
               "dustmaps_ext.combined", "dustmaps_ext.bayestar", "dustmaps_ext.plot",
               "dustmaps_ext.plot_disk", "dustmaps_ext.cli", "dustmaps_ext.__main__",
               "dustmaps_ext._demo"}
LOWER_LAYERS = ("dustmaps_ext._core", "dustmaps_ext._io")


def _modules() -> dict[str, Path]:
    mods = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = (package,) + path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names imported from it) of every import statement, resolved."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            out.append((module, [alias.name for alias in node.names]))
    return out


def _edges() -> dict[str, set[str]]:
    """Module -> the package modules it imports (a name imported from a package that is
    itself a module counts as an import of that module)."""
    edges = {m: set() for m in MODULES}
    for m, path in MODULES.items():
        for module, names in _imports(m, path):
            for target in [module] + [f"{module}.{n}" for n in names]:
                while target and target not in MODULES:
                    target = target.rpartition(".")[0]
                if target and target != m and not m.startswith(target + "."):
                    edges[m].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    state, stack, found = {}, [], []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def test_the_graph_sees_lazy_imports_and_finds_circles(tmp_path):
    # the checker itself: imports inside functions and TYPE_CHECKING blocks are read,
    # relative imports are resolved, and a circle is found
    src = tmp_path / "mod.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .config import C\n"
                   "def f():\n    from ..runner import run\n    import dustmaps_ext._io.files\n")
    assert _imports("pkg.sub.mod", src)[1:] == [("pkg.sub.config", ["C"]), ("pkg.runner", ["run"]),
                                                ("dustmaps_ext._io.files", [])]
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert _cycles(_edges()) == []


def test_core_and_io_never_import_user_facing_modules():
    edges = _edges()
    bad = {m: sorted(edges[m] & USER_FACING) for m in edges
           if m.startswith(LOWER_LAYERS) and edges[m] & USER_FACING}
    assert bad == {}


def test_core_and_io_never_import_the_package_face():
    bad = {}
    for m, path in MODULES.items():
        if m.startswith(LOWER_LAYERS):
            for module, names in _imports(m, path):
                if module == "dustmaps_ext" and (not names or any(
                        f"dustmaps_ext.{n}" not in MODULES for n in names)):
                    bad.setdefault(m, []).extend(names or ["dustmaps_ext"])
    assert bad == {}


def test_core_does_not_import_io():
    edges = _edges()
    bad = {m: sorted(t for t in edges[m] if t.startswith("dustmaps_ext._io"))
           for m in edges if m.startswith("dustmaps_ext._core")}
    assert {m: t for m, t in bad.items() if t} == {}


def test_the_package_never_imports_the_pipeline():
    edges = _edges()
    assert {m: sorted(t for t in ts if t.startswith("dustmaps_ext_build"))
            for m, ts in edges.items()
            if m.startswith("dustmaps_ext.") and any(t.startswith("dustmaps_ext_build") for t in ts)} == {}


def _private(module: str, names: list[str]) -> list[str]:
    parts = module.split(".")
    out = [module] if parts[0] == "dustmaps_ext" and any(p.startswith("_") for p in parts[1:]) else []
    return out + [f"{module}.{n}" for n in names if n.startswith("_")]


def test_the_pipeline_imports_only_public_names_of_the_package():
    bad = {}
    for m, path in MODULES.items():
        if not m.startswith("dustmaps_ext_build"):
            continue
        for module, names in _imports(m, path):
            if module.split(".")[0] == "dustmaps_ext":
                found = _private(module, names)
                if found:
                    bad.setdefault(m, []).extend(found)
    assert bad == {}


def test_private_name_check_catches_both_kinds():
    assert _private("dustmaps_ext._core.parametric", ["TABLE_COLUMNS"]) == ["dustmaps_ext._core.parametric"]
    assert _private("dustmaps_ext.parametric_model", ["_x", "y"]) == ["dustmaps_ext.parametric_model._x"]
    assert _private("dustmaps_ext.healpix", ["check_nside"]) == []


# --------------------------------------------------------------------------- errors


def test_every_exception_and_warning_lives_in_errors():
    from dustmaps_ext import errors

    defined = {}
    for m, path in MODULES.items():
        if not m.startswith("dustmaps_ext.") or m == "dustmaps_ext.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {ast.unparse(b) for b in node.bases}
                if any(b.endswith(("Error", "Exception", "Warning")) for b in bases):
                    defined.setdefault(m, []).append(node.name)
    assert defined == {}
    for name in errors.__all__:
        obj = getattr(errors, name)
        assert issubclass(obj, (Exception, Warning)) and obj.__module__ == "dustmaps_ext.errors"


@pytest.mark.parametrize("where, names", [
    ("dustmaps_ext.decaps", ["MapFileError", "LayoutPerformanceWarning"]),
    ("dustmaps_ext.bayestar", ["MapFileError"]),
    ("dustmaps_ext._io.download", ["DownloadError", "ChecksumError", "DownloadLockedError",
                                   "InsufficientSpaceError"]),
    ("dustmaps_ext._io.dataverse", ["DataverseError"]),
    ("dustmaps_ext._io.fetchers", ["FetchConsentError", "InvalidDownloadError"]),
    ("dustmaps_ext._io.layouts", ["MapFileError"]),
])
def test_old_error_locations_still_work(where, names):
    from dustmaps_ext import errors

    module = importlib.import_module(where)
    for name in names:
        assert getattr(module, name) is getattr(errors, name)


def test_error_hierarchy():
    from dustmaps.dustexceptions import Error

    from dustmaps_ext import errors

    assert issubclass(errors.MapFileError, Error)
    for name in ("ChecksumError", "DownloadLockedError", "InsufficientSpaceError",
                 "DataverseError", "InvalidDownloadError"):
        assert issubclass(getattr(errors, name), errors.DownloadError)
    assert issubclass(errors.DownloadError, OSError)
    assert issubclass(errors.LayoutPerformanceWarning, UserWarning)


# --------------------------------------------------------------------------- interfaces


def test_every_store_declares_the_voxel_store_interface():
    from dustmaps_ext._core.voxel import VoxelStore
    from dustmaps_ext._io import bayestar19, decaps

    stores = [decaps.InMemoryStore, decaps.MappedStore, decaps.PublishedRowStore,
              bayestar19.Bayestar19Store]
    for store in stores:
        assert VoxelStore in store.__mro__, store  # declared explicitly, not only by shape
        for member in ("data_for", "release"):  # implemented, not the protocol's stub
            assert getattr(store, member) is not getattr(VoxelStore, member), (store, member)
    assert bayestar19.Bayestar19Store.slot0 == "best"
    assert decaps.InMemoryStore.slot0 == "mean"
    assert np.dtype(bayestar19.Bayestar19Store.value_dtype) == np.float32


def test_the_voxel_core_reads_stores_without_getattr_defaults():
    from dustmaps_ext._core import voxel

    assert "getattr(" not in inspect.getsource(voxel)


def test_the_version_has_one_source():
    from dustmaps_ext._version import __version__

    assert dustmaps_ext.__version__ == __version__
    setup_cfg = PACKAGES["dustmaps_ext"].parent / "setup.cfg"
    if setup_cfg.exists():  # a source checkout
        assert "version = attr: dustmaps_ext._version.__version__" in setup_cfg.read_text()


# --------------------------------------------------------------------------- facts once


def test_decaps_facts_are_the_ones_the_writers_and_the_build_use():
    from dustmaps_ext.formats import decaps as fmt
    from dustmaps_ext_build.decaps import config, inputs
    from dustmaps_ext_build.writers import decaps as writer

    assert writer.DM_BIN_EDGES is fmt.DM_BIN_EDGES and config.DM_EDGES is fmt.DM_BIN_EDGES
    assert writer.PUBLISHED_CHUNK_PIXELS == fmt.PUBLISHED_CHUNK_PIXELS == 200_842
    # the release's edges (Zucker et al. 2025): 120 bins from 4 to 18.875 mag
    assert fmt.DM_BIN_EDGES.size == 120 == inputs.N_DM
    assert fmt.DM_BIN_EDGES[0] == 4.0 == inputs.DM_MIN and fmt.DM_BIN_EDGES[-1] == 18.875
    assert np.all(np.diff(fmt.DM_BIN_EDGES) == 0.125)
    assert config.DecapsBuildConfig().l_range_deg == fmt.L_RANGE_DEG


def test_wang2025_facts_are_the_ones_the_writer_uses():
    from dustmaps_ext._core.parametric import TABLE_COLUMNS
    from dustmaps_ext.formats import wang2025 as fmt
    from dustmaps_ext_build.writers import parametric as writer

    assert writer.PARAMETRIC_COLUMNS is fmt.COLUMNS is TABLE_COLUMNS
    assert writer.RELEASE_NROWS == fmt.NROWS == 12 * 1024 ** 2 and writer.RELEASE_NSIDE == fmt.NSIDE


def test_bayestar_record_type_is_shared():
    from dustmaps_ext.formats import bayestar19 as fmt
    from dustmaps_ext_build.writers import bayestar as writer

    assert writer.PIXEL_INFO_DTYPE is fmt.PIXEL_INFO_DTYPE


def test_pipeline_config_keeps_its_old_import_location():
    from dustmaps_ext_build.decaps import config, pipeline

    assert pipeline.DecapsBuildConfig is config.DecapsBuildConfig
    assert pipeline.DM_EDGES is config.DM_EDGES


# --------------------------------------------------------------------------- footprint


def test_one_footprint_rule_everywhere():
    """The paper's footprint, 239 < l < 6 deg and |b| < 10 deg, with open boundaries, is the
    one rule of the format, the build's default box and the simulated maps."""
    from dustmaps_ext.formats import decaps as fmt
    from dustmaps_ext_build.decaps.config import DecapsBuildConfig
    from dustmaps_ext_build.simulated_decaps import in_decaps_footprint

    eps = 1e-9
    l_deg = np.array([239.0, 239.0 + eps, 300.0, 359.9, 0.0, 5.9, 6.0 - eps, 6.0, 6.0 + eps,
                      100.0, 300.0, 300.0, 300.0, 300.0, np.nan, 300.0, -60.0, 366.0 - eps])
    b_deg = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                      0.0, 10.0, 10.0 - eps, -10.0, -10.0 + eps, 0.0, np.nan, 0.0, 0.0])
    expected = np.array([False, True, True, True, True, True, True, False, False,
                         False, False, True, False, True, False, False, True, True])
    assert np.array_equal(fmt.in_footprint(l_deg, b_deg), expected)
    assert np.array_equal(DecapsBuildConfig().in_footprint(l_deg, b_deg), expected)
    assert np.array_equal(in_decaps_footprint(l_deg, b_deg), expected)
    # an independent reference on random directions: the paper's inequalities
    rng = np.random.default_rng(3)
    l_r, b_r = rng.uniform(-720, 720, 100_000), rng.uniform(-90, 90, 100_000)
    lm = np.mod(l_r, 360.0)
    paper = ((lm > 239.0) | (lm < 6.0)) & (np.abs(b_r) < 10.0)
    assert np.array_equal(fmt.in_footprint(l_r, b_r), paper)


def test_lon_lat_box_rules():
    from dustmaps_ext.healpix import in_lon_lat_box

    l_deg = np.array([0.0, 10.0, 350.0, 180.0, np.inf])
    b_deg = np.zeros(5)
    assert in_lon_lat_box(l_deg, b_deg, (0.0, 360.0), (-1, 1)).tolist() == [True, True, True, True, False]
    assert in_lon_lat_box(l_deg, b_deg, (340.0, 370.0), (-1, 1)).tolist() == [True, False, True, False, False]
    assert in_lon_lat_box(l_deg, b_deg, (-20.0, 10.0), (-1, 1)).tolist() == [True, False, True, False, False]
    with pytest.raises(ValueError, match="l_lo < l_hi"):
        in_lon_lat_box(l_deg, b_deg, (10.0, 0.0), (-1, 1))


@pytest.mark.parametrize("bad", [0, -8, 3, 12, 2.5])
def test_one_nside_check(bad):
    from dustmaps_ext.healpix import check_nside
    from dustmaps_ext_build.decaps.config import DecapsBuildConfig
    from dustmaps_ext_build.parametric.pipeline import ParametricBuildConfig

    with pytest.raises(ValueError, match=f"nside_max must be a positive power of two; got {bad}"):
        check_nside(bad, "nside_max")
    with pytest.raises(ValueError, match="nside_block must be a positive power of two"):
        DecapsBuildConfig(nside=64, nside_block=bad)
    with pytest.raises(ValueError, match="block_nside must be a positive power of two"):
        ParametricBuildConfig(block_nside=bad)


def test_nside_check_accepts_powers_of_two():
    from dustmaps_ext.healpix import check_nside

    assert [check_nside(n) for n in (1, 2, 64, np.int64(8192), 8192.0)] == [1, 2, 64, 8192, 8192]
    assert all(type(check_nside(n)) is int for n in (1, np.int64(4)))


# --------------------------------------------------------------------------- files


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    from dustmaps_ext.files import atomic_output, write_json_atomic

    dest = tmp_path / "x.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert dest.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
    with atomic_output(dest, suffix=".npz") as tmp:
        assert tmp.name.endswith(".npz") and tmp.parent == tmp_path
        np.savez(tmp, a=np.arange(3))
    assert np.load(dest)["a"].tolist() == [0, 1, 2]
    write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert (tmp_path / "r.json").read_text() == '{"a": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "x.bin"]


def test_one_threading_policy(monkeypatch):
    import numba

    from dustmaps_ext._core import threads

    assert threads.max_threads() == max(1, min(numba.config.NUMBA_NUM_THREADS, threads.MAX_THREADS_CAP))
    monkeypatch.setattr(threads, "MAX_THREADS", 3)
    seen = []
    threads.run_tasks(seen.append, range(10))
    assert sorted(seen) == list(range(10))
    with pytest.raises(ZeroDivisionError):
        threads.run_tasks(lambda t: 1 / t, [1, 0, 2])
    for module in ("voxel", "parametric"):  # neither keeps a pool of its own
        source = inspect.getsource(importlib.import_module(f"dustmaps_ext._core.{module}"))
        assert "ThreadPoolExecutor" not in source and "cpu_count" not in source


@pytest.mark.parametrize("module", ["dustmaps_ext.errors", "dustmaps_ext.healpix",
                                    "dustmaps_ext.formats", "dustmaps_ext._io.files"])
def test_module_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_former_fetcher_constants_read_the_format_homes():
    from dustmaps_ext._io import fetchers
    from dustmaps_ext.formats import bayestar19, decaps, wang2025

    assert fetchers.DECAPS_DOI == decaps.DOI == "10.7910/DVN/J9JCKO"
    assert fetchers.BAYESTAR2019_DOI == bayestar19.DOI == "10.7910/DVN/2EJ9TX"
    assert fetchers.WANG2025_COLUMNS is wang2025.COLUMNS and fetchers.WANG2025_NROWS == wang2025.NROWS
    with pytest.raises(AttributeError, match="no attribute 'NOPE'"):
        fetchers.NOPE  # noqa: B018
