"""Shared test fixtures and the set-up every test run needs.

The tests run against the *installed* package. ``python -m pytest`` puts the current
folder on ``sys.path``; from the repository root that would make ``import dustmaps_ext``
find the checkout instead of the install (the flat layout), so the repository root is taken
off ``sys.path`` here, before any test module imports the package. ``dustmaps_ext_build``
(the pipeline, the repository folder ``build_tools/``) exists only once installed, so a run
without an install stops at once with a message saying what to do.

Numba's caches go to a folder of the temporary directory (``$NUMBA_CACHE_DIR`` if set), never
next to the sources. Nothing here touches the network or the user's dustmaps configuration.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _numba_cache_outside_the_checkout() -> None:
    if not os.environ.get("NUMBA_CACHE_DIR"):
        uid = getattr(os, "getuid", lambda: 0)()
        os.environ["NUMBA_CACHE_DIR"] = os.path.join(tempfile.gettempdir(),
                                                     f"dustmaps_ext_numba_cache_{uid}")
    if "numba" in sys.modules:  # imported by a plugin before this file: read the variable again
        sys.modules["numba"].config.reload_config()


def _is_repo_root(entry: str) -> bool:
    try:
        return Path(entry or os.getcwd()).resolve() == REPO_ROOT
    except OSError:
        return False


def _test_the_install() -> None:
    sys.path[:] = [entry for entry in sys.path if not _is_repo_root(entry)]
    try:
        import dustmaps_ext  # noqa: F401
        import dustmaps_ext_build  # noqa: F401
    except ImportError as exc:
        raise pytest.UsageError(
            f"the tests run against the installed package ({exc}); install it first: "
            'python -m pip install ".[test]"') from None


_numba_cache_outside_the_checkout()
_test_the_install()


def pytest_report_header(config) -> list[str]:
    import dustmaps_ext
    import dustmaps_ext_build

    return [f"dustmaps_ext {dustmaps_ext.__version__} from {Path(dustmaps_ext.__file__).parent}",
            f"dustmaps_ext_build from {Path(dustmaps_ext_build.__file__).parent}",
            f"numba cache: {os.environ['NUMBA_CACHE_DIR']}"]


@pytest.fixture(autouse=True)
def _restore_environment():
    """Undo what a test (e.g. a command line's ``main``) sets in ``os.environ``."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def dustmaps_data_dir(tmp_path, monkeypatch):
    """Point dustmaps' data directory at a fresh temporary folder, without saving the config."""
    from dustmaps.config import config

    data_dir = tmp_path / "dustmaps_data"
    data_dir.mkdir()
    monkeypatch.setitem(config._options, "data_dir", str(data_dir))
    return data_dir
