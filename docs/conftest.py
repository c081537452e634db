"""pytest configuration for the doctests of the documentation pages.

Run them with ``python -m pytest --doctest-glob='*.rst' docs``. Each page runs in its own
temporary working folder, so files its examples write never land in the checkout.
"""

import pytest


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
