"""Cost of the checks that run when a map is opened or a build resumes, against the work they guard.

1. Opening a DECaPS file: the pixel-table check (:func:`dustmaps_ext._io.decaps.checked_pixel_index`:
   every pixel in range, strictly increasing, the stored coarse index equal to the one the
   pixels give) against building the lookup index without it, and against what opening the
   map with ``DECaPSQuery`` costs anyway (reading the per-pixel table from disk is not
   counted: the table here is in RAM), on a table of the release's size (51,415,400 sorted
   pixels at nside 8192, coarse nside 256).
2. Resuming a build: :func:`dustmaps_ext_build.runner.check_block_files` (stamp, array sizes,
   CRC-32 of every finished block file) against :func:`~dustmaps_ext_build.runner.load_blocks`
   of the same files, which every build does once at its end anyway.

Writes ``benchmarks/results/bench_file_checks.md`` (``--quick``: smaller sizes, report printed only).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dustmaps_ext._core.pixels import PixelIndex
from dustmaps_ext._io.decaps import checked_pixel_index
from dustmaps_ext_build.runner import check_block_files, load_blocks, run_blocks

RESULT = Path(__file__).parent / "results" / "bench_file_checks.md"


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_pixel_table(n_pix: int, repeat: int) -> list[str]:
    nside, coarse = 8192, 256
    rng = np.random.default_rng(1)
    # sorted distinct pixels of one stretch of the sphere, as in the release
    table = np.unique(rng.integers(0, 12 * nside ** 2 // 4, size=int(n_pix * 1.2)))[:n_pix]
    table = table.astype(np.uint64)
    coarse_start = PixelIndex.coarse_index(table.view(np.int64), nside, coarse)
    checked_pixel_index("bench", table[:1000], nside)  # numba: load the cached kernel
    plain = _best(lambda: PixelIndex(table, nside, coarse_start=coarse_start,
                                     coarse_nside=coarse), repeat)
    checked = _best(lambda: checked_pixel_index("bench", table, nside, coarse_start, coarse),
                    repeat)
    copy = _best(lambda: np.array(table), repeat)  # one pass over the table in memory
    return [
        f"Table: {table.size:,} sorted pixels (uint64, {table.nbytes / 1e6:.0f} MB), nside "
        f"{nside}, coarse nside {coarse}; best of {repeat}.",
        "",
        "| step | time | ratio to one copy of the table |",
        "|---|---|---|",
        f"| `PixelIndex` with the stored coarse index (no check) | {plain * 1e3:.2f} ms | "
        f"{plain / copy:.3f} |",
        f"| `checked_pixel_index` (check + index) | {checked * 1e3:.1f} ms | {checked / copy:.2f} |",
        f"| `np.array(table)` (one memory pass, the baseline) | {copy * 1e3:.1f} ms | 1 |",
    ]


def _block(block_id: int, rows: int) -> dict:
    rng = np.random.default_rng(block_id)
    return {"values": rng.random((rows, 6, 120), dtype=np.float32),
            "healpix_index": np.arange(rows, dtype=np.int64) + block_id * rows}


def bench_resume(n_blocks: int, rows: int, repeat: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "blocks"
        job = functools.partial(_block, rows=rows)
        paths = run_blocks(range(n_blocks), job, out, scheduler="synchronous", progress=False,
                           fingerprint="bench")
        size = sum(p.stat().st_size for p in paths)
        check = _best(lambda: check_block_files(out, range(n_blocks), "bench"), repeat)
        load = _best(lambda: load_blocks(paths), repeat)
    return [
        f"Blocks: {n_blocks} files of {rows:,} pixels x 6 x 120 float32, {size / 1e6:.0f} MB in "
        f"all (in the page cache); best of {repeat}.",
        "",
        "| step | time | MB/s | ratio to load_blocks |",
        "|---|---|---|---|",
        f"| `check_block_files` (stamp, sizes, CRC-32) | {check:.3f} s | {size / 1e6 / check:,.0f} | "
        f"{check / load:.2f} |",
        f"| `load_blocks` (the read every build does) | {load:.3f} s | {size / 1e6 / load:,.0f} | 1 |",
    ]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes; print the report only")
    args = p.parse_args(argv)
    n_pix = 2_000_000 if args.quick else 51_415_400
    n_blocks, rows = (8, 2_000) if args.quick else (40, 20_000)
    repeat = 2 if args.quick else 5
    start = time.time()
    load = os.getloadavg()
    lines = ["# Checks on open and on resume", "",
             f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with "
             f"`benchmarks/bench_file_checks.py{' --quick' if args.quick else ''}`.", "",
             f"- Machine: {os.cpu_count()} cores, Python {platform.python_version()}, numpy "
             f"{np.__version__}; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at "
             "the start (the CPU is shared with other work).", "",
             "## Opening a DECaPS file: the pixel-table check", ""]
    lines += bench_pixel_table(n_pix, repeat)
    lines += ["", "## Resuming a build: the block-file check", ""]
    lines += bench_resume(n_blocks, rows, repeat)
    load = os.getloadavg()
    lines += ["", f"Took {time.time() - start:.0f} s; load average {load[0]:.2f} / {load[1]:.2f} / "
              f"{load[2]:.2f} at the end."]
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    if not args.quick:
        RESULT.write_text(report)


if __name__ == "__main__":
    main()
