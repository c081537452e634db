"""Worked example: build a small DECaPS-format map from per-star posterior images.

A user's stars come as an HDF5 file with an ``(n, 120, 700)`` dataset of (distance modulus,
E(B-V)) posterior images -- cell (i, j) the point mu = 4 + 0.125 i, E = 0.01 j -- and the
stars' Galactic ``l`` and ``b``. Here that file is made from simulated stars first; with
real data, start at step 2.

Run: ``python docs/examples/build_decaps_from_images.py OUTDIR``
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from dustmaps_ext_build.decaps import mock
from dustmaps_ext_build.decaps.cli import build_decaps_main, convert_inputs_main
from dustmaps_ext_build.galaxy import default_galaxy

from dustmaps_ext.decaps import DECaPSQuery


def main(outdir) -> float:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)

    # 1. A file of posterior images (simulated stars towards a cloud at 1.6 kpc)
    stars, _ = mock.mock_catalogue(default_galaxy(), 150, np.random.default_rng(0),
                                   l_range_deg=(329.9, 330.1), b_range_deg=(-1.6, -1.4))
    images = np.stack([stars.image(k) for k in range(stars.n_star)])
    with h5py.File(outdir / "stars.h5", "w") as f:
        f.create_dataset("posterior", data=images, chunks=(1, 120, 700), compression="gzip")
        f["l"], f["b"] = stars.l, stars.b

    # 2. Convert it into the build's input (images read star chunk by star chunk)
    assert convert_inputs_main([str(outdir / "stars.h5"), str(outdir / "stars.npz"),
                                "--images", "posterior", "--grid", "points"]) == 0

    # 3. Build the map: nside 1024, a 0.1 x 0.1 deg footprint, short chains
    assert build_decaps_main([str(outdir / "stars.npz"), str(outdir / "map.h5"),
                              "--nside", "1024", "--nside-block", "256",
                              "--l-range", "329.95", "330.05", "--b-range", "-1.55", "-1.45",
                              "--rounds", "200", "--sweeps", "5",
                              "--scheduler", "synchronous", "--no-progress"]) == 0

    # 4. Query it like the released map
    query = DECaPSQuery(map_fname=outdir / "map.h5")
    coords = SkyCoord(l=330.0 * u.deg, b=-1.5 * u.deg, distance=2.5 * u.kpc, frame="galactic")
    ebv = float(np.asarray(query(coords, mode="mean")))
    print(f"E(B-V) at (330, -1.5) deg, 2.5 kpc: {ebv:.2f} mag")
    return ebv


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "decaps_example")
