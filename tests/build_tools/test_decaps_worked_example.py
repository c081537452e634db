"""The docs' worked example (posterior images in HDF5 -> converted input -> map) runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "build_decaps_from_images.py"


@pytest.mark.slow
def test_worked_example_builds_a_map_that_sees_the_cloud(tmp_path):
    from dustmaps_ext_build.galaxy import default_galaxy

    spec = importlib.util.spec_from_file_location("worked_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ebv = mod.main(tmp_path)
    truth = float(default_galaxy().cumulative_profile(np.array([330.0]), np.array([-1.5]),
                                                      np.array([2.5]))[0, 0])
    assert np.isfinite(ebv)
    assert abs(ebv - truth) < 0.35 * truth  # 150 stars, 200 rounds: a rough map
