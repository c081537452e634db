"""Regenerate the demo map shipped with dustmaps_ext (``decaps_demo.h5``).

The demo map is a DECaPS-format file (published layout, float16, real chunking) of the
simulated galaxy of ``build_tools.galaxy.default_galaxy()`` over the whole DECaPS footprint at
HEALPix nside 64 (2,986 pixels x 5 samples x 120 distances, about 3 MB). Run from the
repository root::

    python dustmaps_ext/data/demo/make_demo_map.py

The output is deterministic (fixed seed).
"""

from pathlib import Path

from build_tools.simulated_decaps import write_simulated_decaps

DEMO_NSIDE = 64
DEMO_SEED = 2025

if __name__ == "__main__":
    out = Path(__file__).with_name("decaps_demo.h5")
    write_simulated_decaps(out, nside=DEMO_NSIDE, seed=DEMO_SEED, overwrite=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
