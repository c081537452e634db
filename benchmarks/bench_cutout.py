"""Benchmark of DECaPS region cutouts over HTTP Range requests (issue 18, point 6).

Run from the repository root::

    /work/venv/bin/python benchmarks/bench_cutout.py [--pixels N] [--latency S] [--quick] [--workdir DIR]

What it does
------------
1. Builds (or reuses) a simulated DECaPS map of at least 2 million pixels at nside 2048 in
   the published layout (:func:`dustmaps_ext_build.writers.decaps.create_decaps_release`:
   float16, one (sample, distance) pair per chunk, deflate + shuffle), with chunk rows
   scaled to the map's nside so that one row covers the sky area of the release's 200,842
   pixels at nside 8192 (about 10 deg^2): 200,842 / 16 = 12,553 pixels at nside 2048. The
   values are the simulated galaxy's (:mod:`dustmaps_ext_build.simulated_decaps`): posterior
   samples of each nside-512 pixel, given to its 16 children with a per-child scale (a
   positive factor per profile, so every profile stays cumulative), which keeps the build
   to minutes on two cores.
2. Serves the file from a fake server on 127.0.0.1 (``tests/helpers/range_server.py``) that waits
   ``--latency`` seconds (20 ms by default) before every answer and counts requests and
   bytes.
3. For cones of radius 0.25, 1 and 3 deg around one position inside the map, fetches a
   cutout with :func:`dustmaps_ext._io.cutout.fetch_cutout`:

   * ``cold``: a new cutout, nothing cached (the HDF5 superblock, object headers, the
     B-tree nodes of the chunk index and the row starts are read too);
   * ``warm``: the cone added to a cutout that already holds another region 5 deg away
     (the metadata cached by that first fetch is not read again): "after the first";
   * ``no coalescing``: warm, but one request per chunk (the baseline coalescing beats).

   Reported: HTTP requests, bytes received and their fraction of the file, wall time
   (with the latency), and a check that the cutout's values equal the published file's
   (h5py reads of the same pixels).
4. Writes a Markdown report to stdout and ``benchmarks/results/bench_cutout.md``.
"""

from __future__ import annotations

import argparse
import json
import mmap
import platform
import shutil
import sys
import time
from pathlib import Path

import h5py
import healpy as hp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # helpers.range_server

RESULTS = REPO / "benchmarks" / "results" / "bench_cutout.md"
NSIDE = 2048
RELEASE_NSIDE, RELEASE_CHUNK = 8192, 200_842
CHUNK_PIXELS = RELEASE_CHUNK * NSIDE ** 2 // RELEASE_NSIDE ** 2  # the same sky area per row
RADII = (0.25, 1.0, 3.0)
TARGET_FRACTION, TARGET_REQUESTS = 0.05, 50


def build_map(path: Path, n_pix: int, nside: int, chunk_pixels: int) -> Path:
    """The simulated published-layout map (reused when its parameters match)."""
    from dustmaps_ext_build.galaxy import default_galaxy
    from dustmaps_ext_build.simulated_decaps import (
        footprint_pixels,
        simulate_flags,
        simulate_values,
    )
    from dustmaps_ext_build.writers.decaps import create_decaps_release

    params = {"n_pix": n_pix, "nside": nside, "chunk_pixels": chunk_pixels, "version": 1}
    stamp = path.with_suffix(".json")
    if path.exists() and stamp.exists() and json.loads(stamp.read_text()) == params:
        return path
    galaxy = default_galaxy()
    pixels = footprint_pixels(nside, n_pix)
    rng = np.random.default_rng(18)
    flags = simulate_flags(pixels.size, rng)
    shift = 2 * 2  # nside 2048 -> 512: 16 children per parent
    parents, first_child = np.unique(pixels >> shift, return_inverse=True)
    t0 = time.perf_counter()
    with create_decaps_release(path, nside=nside, healpix_index=pixels, n_samples=5,
                               chunk_pixels=chunk_pixels, overwrite=True, **flags) as f:
        step = chunk_pixels * 8
        for a in range(0, pixels.size, step):
            b = min(a + step, pixels.size)
            par = np.unique(first_child[a:b])
            vals = simulate_values(galaxy, nside >> 2, parents[par], rng)
            where = np.searchsorted(par, first_child[a:b])
            scale = rng.lognormal(0.0, 0.05, (b - a, 5, 1))
            samples = (vals["samples"][where].astype(np.float32) * scale).astype(np.float16)
            f["samples"][a:b] = samples
            f["mean"][a:b] = samples.astype(np.float64).mean(axis=1, keepdims=True).astype(np.float16)
            print(f"  map: {b:,} / {pixels.size:,} pixels ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
    stamp.write_text(json.dumps(params))
    return path


def pick_centre(path: Path, radius: float) -> tuple[tuple, tuple]:
    """A position whose ``radius`` cone lies inside the map, and a 1 deg cone 5 deg away
    that does too."""
    from dustmaps_ext._io.cutout import region_pixels

    with h5py.File(path, "r") as f:
        pix = f["pixel_info/healpix_index"][()].astype(np.int64)

    def inside(cone) -> bool:
        return np.isin(region_pixels(NSIDE, [cone]), pix).mean() > 0.999

    for k in np.linspace(0.05, 0.95, 200):
        lon, lat = hp.pix2ang(NSIDE, int(pix[int(k * pix.size)]), nest=True, lonlat=True)
        lon, lat = float(np.round(lon, 2)), float(np.round(lat, 2))
        if not inside((lon, lat, radius)):
            continue
        for dl, db in ((0, 5), (0, -5), (5, 0), (-5, 0)):
            other = (round((lon + dl) % 360, 2), round(lat + db, 2), 1.0)
            if inside(other):
                return (lon, lat), other
    raise RuntimeError("no position of the map holds a full cone")


def check_values(cutout: Path, published: Path) -> bool:
    """The cutout's pixels hold exactly the published file's values and flags."""
    with h5py.File(cutout, "r") as c, h5py.File(published, "r") as p:
        got = c["pixel_info/healpix_index"][()].astype(np.int64)
        allpix = p["pixel_info/healpix_index"][()].astype(np.int64)
        rows = np.searchsorted(allpix, got)
        same = np.array_equal(allpix[rows], got)
        data = c["data"][()]
        same &= np.array_equal(data[:, :1].view(np.uint16), p["mean"][rows].view(np.uint16))
        same &= np.array_equal(data[:, 1:].view(np.uint16), p["samples"][rows].view(np.uint16))
        for name in ("DM_reliable_min", "DM_reliable_max", "converged", "infilled"):
            same &= np.array_equal(c["pixel_info"][name][()], p["pixel_info"][name][rows],
                                   equal_nan=name.startswith("DM"))
    return bool(same)


def run(args) -> str:
    from dustmaps_ext._io.cutout import fetch_cutout, index_path
    from dustmaps_ext._io.download import RetryPolicy
    from helpers.range_server import RangeServer

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    published = build_map(work / f"published_{args.pixels}.h5", args.pixels, NSIDE, CHUNK_PIXELS)
    size = published.stat().st_size
    with h5py.File(published, "r") as f:
        n_pix = f["pixel_info/healpix_index"].shape[0]
        n_chunks = sum(f[n].id.get_num_chunks() for n in ("mean", "samples"))
    (lon, lat), other = pick_centre(published, max(RADII))
    retry = RetryPolicy(max_retries=3, backoff_base=0.1)
    rows = []
    with open(published, "rb") as fh, RangeServer(lifetime_s=3600.0) as server:
        content = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        url = server.add_url("/decaps_mean_and_samples.h5", content)
        server.latency_s = args.latency

        def fetch(dest, region, **kw):
            stats: dict = {}
            t0 = time.perf_counter()
            fetch_cutout(url, dest, [region], size=size, retry=retry, progress=False,
                         stats=stats, **kw)
            stats["wall"] = time.perf_counter() - t0
            return stats

        for radius in RADII:
            region = (lon, lat, radius)
            for case in ("cold", "warm", "no coalescing"):
                folder = work / f"cut_{radius}_{case.replace(' ', '_')}"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                dest = folder / "cutout.h5"
                if case != "cold":
                    fetch(dest, other)
                    assert index_path(dest).exists()
                stats = fetch(dest, region, **({"merge_gap": -1} if case == "no coalescing" else {}))
                with h5py.File(dest, "r") as f:
                    n_cut = f["pixel_info/healpix_index"].shape[0]
                rows.append({"radius": radius, "case": case, **stats, "pixels": n_cut,
                             "equal": check_values(dest, published)})
                print(f"  {radius} deg {case}: {stats['requests']} requests, "
                      f"{stats['bytes'] / size:.4f} of the file, {stats['wall']:.1f} s",
                      file=sys.stderr)
                shutil.rmtree(folder, ignore_errors=True)
        content.close()
    return report(rows, args, size, n_pix, n_chunks, (lon, lat), other)


def report(rows, args, size, n_pix, n_chunks, centre, other) -> str:
    one_deg_warm = next(r for r in rows if r["radius"] == 1.0 and r["case"] == "warm")
    one_deg_cold = next(r for r in rows if r["radius"] == 1.0 and r["case"] == "cold")
    lines = [
        "# DECaPS region cutouts over HTTP Range requests",
        "",
        (f"Machine: {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version})."),
        f"Command: `python benchmarks/bench_cutout.py --pixels {args.pixels} --latency {args.latency}`",
        "",
        (f"Simulated published-layout map: {n_pix:,} pixels at nside {NSIDE}, chunk rows of "
        f"{CHUNK_PIXELS:,} pixels (the sky area of the release's {RELEASE_CHUNK:,} pixels at "
        f"nside {RELEASE_NSIDE}, about "
        f"{CHUNK_PIXELS * hp.nside2pixarea(NSIDE, degrees=True):.1f} deg^2), "
        f"{n_chunks:,} chunks, {size / 1e9:.3f} GB. Server latency {args.latency * 1e3:.0f} ms "
        "per request (each request waits for it; requests are sequential)."),
        (f"Cones centred on (l, b) = ({centre[0]}, {centre[1]}) deg; the warm cases first fetch "
        f"the cone {other} into the same cutout."),
        "",
        "| radius (deg) | case | requests | bytes | fraction of file | pixels in cutout | wall (s) | values equal |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['radius']} | {r['case']} | {r['requests']} | {r['bytes']:,} | "
                     f"{r['bytes'] / size:.4f} | {r['pixels']:,} | {r['wall']:.1f} | "
                     f"{'yes' if r['equal'] else 'NO'} |")
    lines += [
        "",
        ("Cases: *cold* = a new cutout, nothing cached (HDF5 metadata and chunk index read "
        "remotely); *warm* = the cone added to a cutout that already holds another region, "
        "whose cached metadata is not read again (\"after the first\"); *no coalescing* = "
        "warm, one request per chunk (the baseline)."),
        "",
        (f"Targets for a 1 deg cone: at most {TARGET_FRACTION:.0%} of the file's bytes and at "
        f"most {TARGET_REQUESTS} requests after the first. Measured: warm "
        f"{one_deg_warm['bytes'] / size:.2%} and {one_deg_warm['requests']} requests "
        f"({'met' if one_deg_warm['bytes'] / size <= TARGET_FRACTION and one_deg_warm['requests'] <= TARGET_REQUESTS else 'NOT met'}); "
        f"cold {one_deg_cold['bytes'] / size:.2%} and {one_deg_cold['requests']} requests."),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pixels", type=int, default=2_000_000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--quick", action="store_true", help="a 200,000-pixel map; report not written")
    parser.add_argument("--workdir", default=str(REPO / "bench_data" / "cutout"))
    args = parser.parse_args()
    if args.quick:
        args.pixels = 200_000
    text = run(args)
    print(text)
    if not args.quick:
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
