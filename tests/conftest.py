"""Shared test fixtures. Nothing here touches the network or the user's dustmaps config."""

from __future__ import annotations

import pytest


@pytest.fixture
def dustmaps_data_dir(tmp_path, monkeypatch):
    """Point dustmaps' data directory at a fresh temporary folder, without saving the config."""
    from dustmaps.config import config

    data_dir = tmp_path / "dustmaps_data"
    data_dir.mkdir()
    monkeypatch.setitem(config._options, "data_dir", str(data_dir))
    return data_dir
