"""Benchmark of catalogue queries (issue 17, point 6): parquet in, parquet out, side by side.

Run from the repository root::

    /work/venv/bin/python benchmarks/bench_catalog.py [--sizes 1e6 1e7] [--workdir DIR]

What it does
------------
1. Builds (or reuses) a simulated DECaPS map of the whole footprint at nside 1024
   (published layout, 5 samples) with
   :func:`dustmaps_ext_build.simulated_decaps.write_simulated_decaps`, and repacks it.
2. For each size N, writes N simulated stars (``source_id``, ``ra``, ``dec``,
   ``parallax``; 70% inside the DECaPS footprint, 3% with parallax <= 0) to one parquet
   file in row groups of 10^6 rows.
3. Runs each case in a fresh process, so that its peak RSS (VmHWM) is its own:

   * ``in-process``: :class:`dustmaps_ext.decaps.DECaPSQueryLite` on the arrays already in
     memory (read before the clock starts): SkyCoord, query, ``ebv`` and two bands, by
     blocks of 10^6 stars -- the target to compare with;
   * ``CLI``: ``dustmaps-ext query IN OUT --map decaps --bands decam_g decam_r``, file in,
     file out;
   * ``Dask``: :func:`dustmaps_ext.catalog.add_extinction` on ``dask.dataframe.read_parquet``
     (one partition per row group) computed by a ``LocalCluster`` of 2 worker processes
     (1 thread each) and written with ``to_parquet``; cluster start-up reported apart;
   * ``dustmaps loop``: the loop a user writes today with ``dustmaps.decaps.DECaPSQueryLite``
     1.0.14 on the published file (pandas chunks, SkyCoord, query, columns, parquet),
     timed on a subset and extrapolated linearly (said so in the table).

   Throughput is stars per second of wall time and stars per CPU-second (user + system
   time of every process of the case: "per core").
4. Writes a Markdown report to stdout and ``benchmarks/results/bench_catalog.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "bench_catalog.md"
ROW_GROUP = 1_000_000
SEED = 17
BANDS = ("decam_g", "decam_r")
CASES = ("in-process", "CLI", "Dask", "dustmaps loop")


def _vmhwm() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ============================================================================ inputs
def build_maps(workdir: Path, nside: int, log) -> tuple[Path, Path]:
    from dustmaps_ext_build.simulated_decaps import write_simulated_decaps

    from dustmaps_ext.decaps import repack

    published = workdir / f"decaps_nside{nside}.h5"
    repacked = workdir / f"decaps_nside{nside}_repacked.h5"
    if not published.exists():
        log(f"building the simulated DECaPS map (nside {nside}, whole footprint) ...")
        partial = published.with_name(published.name + ".partial")
        write_simulated_decaps(partial, nside=nside, overwrite=True, progress=False)
        os.replace(partial, published)
    if not repacked.exists():
        log("repacking ...")
        repack(published, repacked, progress=False)
    return published, repacked


def write_stars(path: Path, n: int, log) -> Path:
    """N stars in row groups of 10^6, streamed (memory bounded by one row group)."""
    import astropy.units as u
    import pyarrow as pa
    import pyarrow.parquet as pq
    from astropy.coordinates import SkyCoord

    if path.exists() and pq.ParquetFile(path).metadata.num_rows == n:
        return path
    log(f"writing {n:,} stars to {path.name} ...")
    rng = np.random.default_rng(SEED)
    partial = path.with_name(path.name + ".partial")
    writer = None
    for start in range(0, n, ROW_GROUP):
        m = min(ROW_GROUP, n - start)
        inside = rng.random(m) < 0.7
        l_deg = np.where(inside, rng.uniform(-121, 6, m) % 360, rng.uniform(0, 360, m))
        b_deg = np.where(inside, rng.uniform(-10, 10, m), np.degrees(np.arcsin(rng.uniform(-1, 1, m))))
        icrs = SkyCoord(l_deg * u.deg, b_deg * u.deg, frame="galactic").icrs
        plx = 1.0 / (10 ** rng.uniform(-1.3, 1.2, m))
        plx[rng.random(m) < 0.03] = -rng.uniform(0, 0.5)
        table = pa.table({"source_id": np.arange(start, start + m, dtype=np.int64),
                          "ra": icrs.ra.deg, "dec": icrs.dec.deg, "parallax": plx})
        if writer is None:
            writer = pq.ParquetWriter(partial, table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP)
    writer.close()
    os.replace(partial, path)
    return path


# ============================================================================ cases
def case_in_process(stars: Path, repacked: Path, out: Path) -> dict:
    import astropy.units as u
    import pyarrow.parquet as pq
    from astropy.coordinates import SkyCoord

    from dustmaps_ext.decaps import DECaPSQueryLite
    from dustmaps_ext.extinction import extinction_coefficient

    table = pq.read_table(stars, columns=["ra", "dec", "parallax"])
    ra, dec, plx = (table.column(c).to_numpy() for c in ("ra", "dec", "parallax"))
    del table
    query = DECaPSQueryLite(repacked)
    query(SkyCoord(ra[:10] * u.deg, dec[:10] * u.deg, distance=1 * u.kpc))  # compile/warm
    coefs = [extinction_coefficient(b) for b in BANDS]
    cpu0, t0 = _cpu_self(), time.perf_counter()
    ebv = np.empty(ra.size, np.float32)
    bands = [np.empty(ra.size, np.float32) for _ in BANDS]
    for s in range(0, ra.size, ROW_GROUP):
        e = min(s + ROW_GROUP, ra.size)
        p = plx[s:e]
        good = p > 0
        d = np.where(good, 1.0 / np.where(good, p, 1.0), 1.0)
        vals = query(SkyCoord(ra[s:e] * u.deg, dec[s:e] * u.deg, distance=d * u.kpc)).astype(np.float64)
        vals[~good] = np.nan
        ebv[s:e] = vals
        for arr, c in zip(bands, coefs):
            arr[s:e] = c * vals
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "cpu_s": _cpu_self() - cpu0, "rss": [_vmhwm()]}


def case_cli(stars: Path, repacked: Path, out: Path) -> dict:
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "dustmaps_ext", "query", str(stars), str(out), "--map", "decaps",
           "--map-file", str(repacked), "--bands", *BANDS, "--no-progress", "--chunk-rows",
           str(ROW_GROUP)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": wall, "cpu_s": r.ru_utime + r.ru_stime, "rss": [r.ru_maxrss * 1024]}


def _worker_stats():
    with open("/proc/self/status") as fh:
        rss = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
    r = resource.getrusage(resource.RUSAGE_SELF)
    return rss, r.ru_utime + r.ru_stime


def case_dask(stars: Path, repacked: Path, out: Path) -> dict:
    import shutil

    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from dustmaps_ext.catalog import add_extinction
    from dustmaps_ext.decaps import DECaPSQueryLite

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        startup = time.perf_counter() - t0
        cpu_before = sum(c for _, c in client.run(_worker_stats).values())
        cpu0, t1 = _cpu_self(), time.perf_counter()
        ddf = dd.read_parquet(stars, split_row_groups=True)
        lazy = add_extinction(ddf, DECaPSQueryLite(repacked), bands=list(BANDS),
                              chunk_rows=ROW_GROUP)
        lazy.to_parquet(out, write_index=False)
        wall = time.perf_counter() - t1
        stats = client.run(_worker_stats)
        n_parts = ddf.npartitions
    cpu = _cpu_self() - cpu0 + sum(c for _, c in stats.values()) - cpu_before
    return {"wall_s": wall, "cpu_s": cpu, "startup_s": startup, "partitions": n_parts,
            "rss": [_vmhwm()] + [r for r, _ in stats.values()]}


def case_dustmaps_loop(stars: Path, published: Path, out: Path, subset: int) -> dict:
    import astropy.units as u
    import pandas as pd
    import pyarrow.parquet as pq
    from astropy.coordinates import SkyCoord
    from dustmaps.decaps import DECaPSQueryLite as DustmapsLite

    from dustmaps_ext.extinction import extinction_coefficient

    first = next(pq.ParquetFile(stars).iter_batches(batch_size=subset)).to_pandas()
    query = DustmapsLite(map_fname=str(published))
    cpu0, t0 = _cpu_self(), time.perf_counter()
    # what a user writes: chunks of a data frame, a SkyCoord each, the columns, the file
    parts = []
    for s in range(0, len(first), 1000):
        chunk = first.iloc[s:s + 1000].copy()
        dist = (1.0 / chunk["parallax"].where(chunk["parallax"] > 0)).to_numpy()
        coords = SkyCoord(chunk["ra"].to_numpy() * u.deg, chunk["dec"].to_numpy() * u.deg,
                          distance=np.nan_to_num(dist, nan=1.0) * u.kpc)
        ebv = query(coords, mode="mean").astype(np.float32)
        ebv[np.isnan(dist)] = np.nan
        chunk["ebv"] = ebv
        for band in BANDS:
            chunk[f"A_{band}"] = (extinction_coefficient(band) * ebv).astype(np.float32)
        parts.append(chunk)
    pd.concat(parts).to_parquet(out)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "cpu_s": _cpu_self() - cpu0, "rss": [_vmhwm()], "subset": len(first)}


def run_case(name: str, n: int, paths: dict, subset: int) -> dict:
    """Run one case in a fresh process; returns its measurements."""
    cmd = [sys.executable, __file__, "--case", name, "--n", str(n), "--subset", str(subset),
           "--json", json.dumps({k: str(v) for k, v in paths.items()})]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker_main(args) -> None:
    paths = {k: Path(v) for k, v in json.loads(args.json).items()}
    stars, out = paths["stars"], paths["out"]
    if args.case == "in-process":
        res = case_in_process(stars, paths["repacked"], out)
    elif args.case == "CLI":
        res = case_cli(stars, paths["repacked"], out)
    elif args.case == "Dask":
        res = case_dask(stars, paths["repacked"], out)
    else:
        res = case_dustmaps_loop(stars, paths["published"], out, args.subset)
    print(json.dumps(res))


# ============================================================================ report
def _mb(b: float) -> str:
    return f"{b / 1e9:.2f} GB" if b >= 1e9 else f"{b / 1e6:.0f} MB"


def driver(args) -> None:
    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    published, repacked = build_maps(workdir, args.nside, log)
    load0 = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    for n in [int(float(s)) for s in args.sizes]:
        stars = write_stars(workdir / f"stars_{n}.parquet", n, log)
        common = {"stars": stars, "repacked": repacked, "published": published}
        results = {}
        for name in args.cases:
            out = workdir / (f"out_{name.replace(' ', '_')}_{n}" + ("" if name == "Dask" else ".parquet"))
            log(f"n = {n:,}: {name} ...")
            results[name] = run_case(name, n, dict(common, out=out), args.subset)
        rows.append((n, results))
    load1 = os.getloadavg()
    title = "## Additional run" if args.append else "# Catalogue query benchmark (parquet in, parquet out)"
    lines = [title, "",
             (f"Run {started} with `benchmarks/bench_catalog.py --sizes {' '.join(args.sizes)} "
              f"--cases {' '.join(repr(c) if ' ' in c else c for c in args.cases)}`."), "",
             (f"- Machine: {os.cpu_count()} cores, Python {platform.python_version()}; load average "
              f"{load0[0]:.2f} at the start, {load1[0]:.2f} at the end (the 2 cores are shared "
              "with other work, so wall times are noisy; CPU-seconds less so)."),
             (f"- Map: simulated DECaPS map, whole footprint at nside {args.nside}, 5 samples; the "
              "repacked file for ours, the published one for dustmaps' DECaPSQueryLite."),
             ("- Stars: ra, dec, parallax; 70% inside the footprint, 3% with parallax <= 0 "
              "(NaN answers). Output: `ebv` and `A_decam_g`, `A_decam_r` (float32), mode mean."),
             "- Per core = stars per CPU-second (user + system of every process of the case).",
             "- Peak RSS = VmHWM of each process (Dask: driver, then the 2 workers).", ""]
    lines += [("| N | case | wall | stars/s | stars/s per core | peak RSS per process | "
               "throughput / in-process |"), "|---|---|---|---|---|---|---|"]
    for n, results in rows:
        base = n / results["in-process"]["wall_s"] if "in-process" in results else None
        for name, r in results.items():
            note = ""
            wall = r["wall_s"]
            cpu = r["cpu_s"]
            if name == "dustmaps loop":
                scale = n / r["subset"]
                wall, cpu = wall * scale, cpu * scale
                note = f" (timed on {r['subset']:,} stars, extrapolated linearly)"
            if name == "Dask":
                note = f" (+{r['startup_s']:.1f} s cluster start; {r['partitions']} partitions)"
            rate = n / wall
            lines.append(f"| {n:,} | {name} | {wall:.1f} s{note} | {rate:,.0f} | {n / cpu:,.0f} | "
                         f"{', '.join(_mb(x) for x in r['rss'])} | "
                         f"{'not run' if base is None else f'{rate / base:.2f}'} |")
    lines += ["", ("Targets (issue 17): end to end at least 0.5 x the in-process throughput; peak "
                   "RSS per process under 1.5 GB; 10^8 stars in under 10 minutes on 2 cores.")]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with open(RESULTS, "a") as fh:
            fh.write("\n" + text)
    elif not args.no_write:
        RESULTS.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["1e6", "1e7"])
    p.add_argument("--workdir", default="/tmp/dustmaps_ext_bench_catalog")
    p.add_argument("--nside", type=int, default=1024, help="nside of the simulated map")
    p.add_argument("--subset", type=int, default=3000, help="stars timed for the dustmaps loop")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--no-write", action="store_true", help="do not write the results file")
    p.add_argument("--append", action="store_true", help="append to the results file")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        worker_main(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
