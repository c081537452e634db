"""Wang et al. (2025) map: dustmaps_ext.wang2025 side by side with dustmaps3d 2.2.13.

Run from the repository root::

    /work/venv/bin/python benchmarks/bench_wang2025.py            # 1, 1e3, 1e6, 1e7 points
    /work/venv/bin/python benchmarks/bench_wang2025.py --quick    # 1, 1e3, 1e5 points

Both packages read the same generated, release-shaped table (12,582,912 float32 rows,
written once to ``bench_data/wang2025/`` by build_tools' writer and converted once by
``convert_table``). Each measurement runs in a fresh subprocess: "first call" is the first
query of that process (for us: opening the map + the query; for dustmaps3d: the call, which
reads the FITS table), imports excluded; "repeated" is the median of later calls; peak RSS
is the process's VmHWM. dustmaps3d is run for real on the file (its path patched, nothing
downloaded) and its results are compared with ours. Results go to
``benchmarks/results/bench_wang2025[_quick].md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench_data" / "wang2025"
RESULTS = ROOT / "benchmarks" / "results"


# ----------------------------------------------------------------------------- data

def make_table(folder: Path) -> tuple[Path, Path]:
    """Generate (once) a release-shaped table: 1,000,003 random sightlines repeated over the
    nside-1024 rows, with parameters in the ranges of the paper's Table 3."""
    sys.path.insert(0, str(ROOT))
    from dustmaps_ext_build.writers.parametric import RELEASE_NROWS, write_parametric_table
    from dustmaps_ext.wang2025 import convert_table

    folder.mkdir(parents=True, exist_ok=True)
    fits_path, h5_path = folder / "data_v3.fits", folder / "data_v3_columns.h5"
    if not fits_path.is_file():
        rng = np.random.default_rng(2025)
        n = 1_000_003
        c = {"b_lim": rng.uniform(-90, 90, n), "bubble": rng.uniform(0.05, 0.4, n),
             "diffuse_dust_rho": rng.uniform(0, 0.04, n), "h": rng.uniform(0.05, 0.5, n)}
        for k in range(1, 5):
            c[f"distance_{k}"] = rng.uniform(0, 5, n)
            c[f"span_{k}"] = rng.uniform(0.01, 1.5, n)
            c[f"Cum_EBV_{k}"] = np.where(rng.random(n) < 0.4, 0.0, rng.uniform(0, 1.5, n))
        for s in ("sigma", "sigma_0_2", "sigma_1_4", "sigma_2_max"):
            c[s] = np.where(rng.random(n) < 0.2, np.nan, rng.uniform(0.005, 0.1, n))
        c["max_distance"] = rng.uniform(1, 15, n)
        cols = {k: np.resize(v.astype(np.float32), RELEASE_NROWS) for k, v in c.items()}
        t0 = time.perf_counter()
        write_parametric_table(fits_path, cols, dtype=np.float32)
        print(f"wrote {fits_path} in {time.perf_counter() - t0:.1f} s", flush=True)
    if not h5_path.is_file():
        t0 = time.perf_counter()
        convert_table(fits_path, h5_path, progress=False)
        print(f"one-time conversion: {time.perf_counter() - t0:.1f} s", flush=True)
    return fits_path, h5_path


def points(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    l = rng.uniform(0, 360, n)
    b = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    d = rng.uniform(0, 10, n)
    return l, b, d


# ----------------------------------------------------------------------------- children

def _vm(field: str) -> float:
    """A /proc/self/status memory field in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> None:
    result = {"n": args.n}
    t0 = time.perf_counter()
    import warnings
    warnings.simplefilter("ignore")
    if args.child == "ours":
        sys.path.insert(0, str(ROOT))
        import astropy.units as u
        from astropy.coordinates import SkyCoord
        from dustmaps_ext.wang2025 import Wang2025Query
    else:
        import contextlib
        import io
        import dustmaps3d
        from dustmaps3d import core
        core.LOCAL_DATA_PATH = Path(args.fits)
    result["import_s"] = time.perf_counter() - t0
    l, b, d = points(args.n)
    if args.child == "ours":
        coords = SkyCoord(l=l * u.deg, b=b * u.deg, distance=d * u.kpc, frame="galactic")
    result["rss_before_mb"] = _vm("VmRSS")
    times = []
    for rep in range(args.repeats + 1):
        t0 = time.perf_counter()
        if args.child == "ours":
            if rep == 0:
                q = Wang2025Query(args.h5)
            out = q(coords) if args.api == "skycoord" else q.query_lbd(l, b, d)
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                out = np.asarray(dustmaps3d.dustmaps3d(l, b, d)[0], np.float64)
        times.append(time.perf_counter() - t0)
    result["first_s"] = times[0]
    result["repeat_s"] = float(np.median(times[1:])) if len(times) > 1 else None
    result["peak_rss_mb"] = _vm("VmHWM")
    if args.save:
        np.save(args.save, np.asarray(out, np.float64))
    print(json.dumps(result))


def run_child(kind: str, n: int, repeats: int, fits: Path, h5: Path, *, api="skycoord",
              save: Path | None = None, env=None) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--n", str(n), "--repeats", str(repeats),
           "--fits", str(fits), "--h5", str(h5), "--api", api]
    if save is not None:
        cmd += ["--save", str(save)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- parent

def fmt_s(t):
    if t is None:
        return "–"
    return f"{t * 1e3:.2f} ms" if t < 1 else f"{t:.2f} s"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1, 1e3 and 1e5 points only")
    p.add_argument("--child", choices=["ours", "dustmaps3d"], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    p.add_argument("--fits", help=argparse.SUPPRESS)
    p.add_argument("--h5", help=argparse.SUPPRESS)
    p.add_argument("--api", default="skycoord", help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0

    fits, h5 = make_table(DATA)
    sizes = [1, 1000, 100_000] if args.quick else [1, 1000, 1_000_000, 10_000_000]
    tmp = Path(tempfile.mkdtemp(prefix="bench_wang2025_"))
    lines = ["# Wang et al. (2025) map: dustmaps_ext vs dustmaps3d 2.2.13", "",
             f"Machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}. "
             "Table: generated, release-shaped (12,582,912 float32 rows); "
             "points: random all-sky directions, distances uniform in 0-10 kpc.", "",
             "Each cell is a fresh process; imports excluded. *First* = first query of the "
             "process (ours: opening the map + the query, SkyCoord input; dustmaps3d: the call, "
             "which reads the FITS table into pandas each time). *Repeated* = median of later "
             "calls. Peak RSS = VmHWM of the process (including the pages of the "
             "memory-mapped table that are resident).", "",
             "| points | ours first | ours repeated | ours plain arrays (repeated) | "
             "ours peak RSS | dustmaps3d first | dustmaps3d repeated | dustmaps3d peak RSS | "
             "speed-up repeated | speed-up first | max rel. diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        reps = 5 if n < 10_000_000 else 3
        ours = run_child("ours", n, reps, fits, h5, save=tmp / f"ours_{n}.npy")
        plain = run_child("ours", n, reps, fits, h5, api="plain")
        print("ours", ours, "plain", plain, flush=True)
        d3 = run_child("dustmaps3d", n, 1, fits, h5, save=tmp / f"d3_{n}.npy")
        a, r = np.load(tmp / f"ours_{n}.npy"), np.load(tmp / f"d3_{n}.npy")
        ok = np.isfinite(r)
        assert np.array_equal(ok, np.isfinite(a))
        diff = float(np.max(np.abs(a[ok] - r[ok]) / np.maximum(np.abs(r[ok]), 1e-9),
                            initial=0.0))
        diff_s = f"{diff:.1e}"
        print("dustmaps3d", d3, flush=True)
        mark = ""
        lines.append(
            f"| {n:,} | {fmt_s(ours['first_s'])} | {fmt_s(ours['repeat_s'])} | "
            f"{fmt_s(plain['repeat_s'])} | {ours['peak_rss_mb']:.0f} MB | "
            f"{fmt_s(d3['first_s'])}{mark} | {fmt_s(d3['repeat_s'])}{mark} | "
            f"{d3['peak_rss_mb']:.0f} MB{mark} | {d3['repeat_s'] / ours['repeat_s']:,.0f}x | "
            f"{d3['first_s'] / ours['first_s']:,.0f}x | {diff_s} |")
    load = os.getloadavg()
    lines += ["", f"Load average at the end of the run: {load[0]:.1f} (1 min), {load[2]:.1f} "
              f"(15 min) on {os.cpu_count()} cores: the machine was shared with other jobs, "
              "so absolute times are noisy; ratios are taken within the same run."]

    # numba: first compile (empty cache) vs cached start
    cache = Path(tempfile.mkdtemp(prefix="numba_cache_"))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    cold = run_child("ours", 1000, 1, fits, h5, env=env)
    warm = run_child("ours", 1000, 1, fits, h5, env=env)
    lines += ["", "## numba start-up (first query of 1,000 points in a fresh process)", "",
              f"- empty numba cache (compiles the kernels): {fmt_s(cold['first_s'])}",
              f"- cached kernels (every later process): {fmt_s(warm['first_s'])}",
              f"- imports (dustmaps_ext.wang2025, astropy): {fmt_s(warm['import_s'])}"]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("bench_wang2025_quick.md" if args.quick else "bench_wang2025.md")
    out.write_text(text)
    print(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
