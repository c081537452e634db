"""Regenerate the demo map shipped with dustmaps_ext (``dustmaps_ext/data/demo/decaps_demo.h5``).

The demo map is a DECaPS-format file (published layout, float16, real chunking) of the
simulated galaxy of :func:`dustmaps_ext_build.galaxy.default_galaxy` over the whole DECaPS
footprint at HEALPix nside 64 (2,986 pixels x 5 samples x 120 distances, about 3 MB).
From the repository root::

    python -m dustmaps_ext_build.demo_map

The output is deterministic (fixed seed).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .simulated_decaps import write_simulated_decaps

__all__ = ["DEMO_NSIDE", "DEMO_SEED", "DEMO_MAP", "make_demo_map"]

DEMO_NSIDE = 64
DEMO_SEED = 2025
DEMO_MAP = Path(__file__).resolve().parent.parent / "dustmaps_ext" / "data" / "demo" / "decaps_demo.h5"


def make_demo_map(out=DEMO_MAP) -> Path:
    """Write the demo map to ``out`` (default: its place inside the dustmaps_ext sources)."""
    return write_simulated_decaps(out, nside=DEMO_NSIDE, seed=DEMO_SEED, overwrite=True)


if __name__ == "__main__":
    path = make_demo_map(Path(sys.argv[1]) if len(sys.argv) > 1 else DEMO_MAP)
    sys.stdout.write(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)\n")
