"""DECaPS layouts side by side on the realistic simulated release (issue 18, points 1, 2, 6).

Run from the repository root (CPU is shared: run it with ``nice``)::

    nice -n 10 /work/venv/bin/python benchmarks/bench_decaps_layouts.py [--pixels N] [--workdir DIR]

In one run it

1. builds (or reuses) a realistic simulated release of ``--pixels`` pixels (default 2,000,000)
   with :func:`dustmaps_ext_build.simulated_release.write_realistic_decaps`, in the published
   layout, and prints how it compresses: published and 16-pixel deflate-7 + shuffle copy as
   fractions of raw float16, against the release's 0.457 and 0.248;
2. times ``repack(layout='compact')``, ``repack(layout='pixel-major')``, writing the
   16-pixel copy and writing the compact file from the same source as that copy (the
   pixel-major file), and lists the four files' sizes;
3. times DECaPSQueryLite on the compact and the pixel-major file and h5py row reads of the
   16-pixel copy at 1, 10^4 and 10^6 coordinates (modes mean and samples; h5py only up to
   10^4), and DECaPSQuery's full load from the published, pixel-major and compact files
   plus its queries; all in this one process, best of a few repeats, files in the page
   cache;
4. checks that the compact answers equal the pixel-major ones, and writes the ratios
   against the targets of issue 18 to ``benchmarks/results/bench_decaps_layouts.md``;
5. breaks the compact records down: bits per value of the mean and of the samples (codes,
   low bits, tuple codes), slot headers, record padding and the infilled pixels' share
   (:func:`bit_budget`), and times decoding per record (the mean alone, whole records)
   and a whole-file decode on 1 and on 2 threads (:func:`decode_profile`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_decaps import H5Peer, machine_info, make_coordinates, write_16px_copy  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "bench_decaps_layouts.md"
SEED = 2025
RELEASE_FRACTIONS = {"published": 0.457, "16-pixel copy": 0.248}
REAL_RAW_GB = 74.0


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


_BUDGET_PARTS = ("slot headers", "mean: codes", "mean: low bits", "mean: raw", "samples: tuple codes",
                 "samples: pair codes", "samples: value codes", "samples: low bits", "samples: raw",
                 "mean section's length", "section padding")


def _budget_kernel():
    import numba

    from dustmaps_ext._core import profile_codec as pc

    @numba.njit(nogil=True)
    def budget(values, infilled, value_lengths, tuple_lengths, pair_lengths, out, out_infilled):
        n_slots, n_dist = values.shape[1], values.shape[2]
        scratch, entries = pc._scratch(n_slots, n_dist)
        for p in range(values.shape[0]):
            m, split = pc._pixel_symbols(values[p], pc.CENT_TABLE, pc.FLOAT_TABLE, value_lengths, scratch, entries)
            total = 0
            mean_bits = 0
            mean_values = 0
            pending_low = False  # the mean's last value code is followed by its low bits
            for j in range(m):
                kind, a, b = entries[j, 0], entries[j, 1], entries[j, 2]
                in_mean = j >= n_slots and (mean_values < n_dist or pending_low)
                if pending_low:
                    pending_low = False
                elif in_mean:
                    mean_values += 1
                    pending_low = kind == 0 and b >= 16
                if j < n_slots:
                    part, bits = 0, a
                elif kind == 1:
                    part, bits = 4, tuple_lengths[a, b]
                elif kind == 3:
                    part, bits = 5, pair_lengths[a, b]
                elif kind == 0:
                    part, bits = (1 if in_mean else 6), value_lengths[a, b]
                else:
                    part, bits = (2 if a < 16 else 3) if in_mean else (7 if a < 16 else 8), a
                out[part] += bits
                total += bits
                if j < split:
                    mean_bits += bits
            header = (8 if (mean_bits + 7) // 8 < 128 else 16) if n_slots > 1 else 0
            padding = -mean_bits % 8 + (-(total - mean_bits) % 8 if n_slots > 1 else 0)
            out[9] += header
            out[10] += padding
            if infilled[p]:
                out_infilled[0] += total + header + padding

    return budget


def bit_budget(path: Path, n_sample: int = 200_000) -> dict:
    """Where the bits of a compact file go, from ``n_sample`` pixels spread over it: bits per
    value of each part (the mean's values over n_pix * n_dist, the samples' over
    n_pix * n_samples * n_dist, headers and padding over all values), the infilled pixels'
    share of the bytes and the file's code tables' bits per value of what they code."""
    import h5py

    from dustmaps_ext._io.decaps_compact import read_codes

    codes = read_codes(path)
    with h5py.File(path) as f:
        n_pix = f["record_offsets"].shape[0] - 1
        n_slots = int(f.attrs["n_slots"])
        pick = np.unique(np.linspace(0, n_pix - 1, min(n_sample, n_pix)).astype(np.int64))
        infilled = f["pixel_info/infilled"][()][pick].astype(bool)
        records_bytes = f["records"].shape[0]
    from dustmaps_ext._io.decaps import inspect_decaps_file
    from dustmaps_ext._io.decaps_compact import CompactStore

    store = CompactStore(inspect_decaps_file(path))
    values = np.empty((pick.size, n_slots, store.info.n_dist), dtype=np.uint16)
    store.decode_into(pick, n_slots, values)
    out = np.zeros(len(_BUDGET_PARTS), dtype=np.int64)
    out_inf = np.zeros(1, dtype=np.int64)
    _budget_kernel()(values, infilled, codes.value_lengths, codes.tuple_lengths, codes.pair_lengths, out, out_inf)
    n_dist = values.shape[2]
    per = {"mean": pick.size * n_dist, "samples": pick.size * (n_slots - 1) * n_dist,
           "all": pick.size * n_slots * n_dist}
    rows = {}
    for k, name in enumerate(_BUDGET_PARTS):
        over = "mean" if name.startswith("mean") else "samples" if name.startswith("samples") else "all"
        rows[name] = (out[k] / max(per[over], 1), over, out[k] / out.sum())
    return {"rows": rows, "bits_per_value": out.sum() / per["all"], "infilled_pixels": infilled.mean(),
            "infilled_share": out_inf[0] / out.sum(), "sampled": pick.size, "records_bytes": records_bytes,
            "n_pix": n_pix}


def decode_profile(path: Path, n_rows: int = 200_000) -> dict:
    """Decoding times of a compact file: ns per record for the mean alone and for whole
    records (``n_rows`` random records, one thread), and a decode of all records in blocks
    on one thread and on the package's threads."""
    from dustmaps_ext._core.threads import max_threads, run_tasks
    from dustmaps_ext._io.decaps import inspect_decaps_file
    from dustmaps_ext._io.decaps_compact import CompactStore

    info = inspect_decaps_file(path)
    store = CompactStore(info)
    n_slots = 1 + info.n_samples
    rows = np.random.default_rng(1).integers(0, info.n_pix, min(n_rows, info.n_pix))
    out = np.empty((rows.size, n_slots, info.n_dist), dtype=np.uint16)
    res = {}
    for label, n_read in (("mean alone", 1), ("whole record", n_slots)):
        store.decode_into(rows[:10], n_read, out[:10])
        res[label] = _best(lambda r=n_read: store.decode_into(rows, r, out), 3) / rows.size * 1e9
    block = 65536
    full = np.empty((min(info.n_pix, 8 * block), n_slots, info.n_dist), dtype=np.uint16)
    blocks = [(a, min(a + block, full.shape[0])) for a in range(0, full.shape[0], block)]

    def decode(b):
        store.decode_into(np.arange(*b), n_slots, full[b[0]:b[1]])

    for label, parallel in (("1 thread", False), (f"{max_threads()} threads", True)):
        res[label] = _best(lambda p=parallel: run_tasks(decode, blocks, parallel=p), 2) / full.shape[0] * 1e9
    return res


def build(workdir: Path, pixels: int, log) -> Path:
    from dustmaps_ext_build.simulated_release import write_realistic_decaps

    path = workdir / f"realistic_n{pixels}_seed{SEED}.h5"
    meta = path.with_name(path.name + ".json")
    if path.exists() and meta.exists() and json.loads(meta.read_text()).get("pixels") == pixels:
        log(f"reusing {path}")
        return path
    log(f"building the realistic simulated release ({pixels:,} pixels) ...")
    t0 = time.perf_counter()
    write_realistic_decaps(path, nside=2048, max_pixels=pixels, seed=SEED, overwrite=True)
    meta.write_text(json.dumps({"pixels": pixels, "build_s": time.perf_counter() - t0}))
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, default=2_000_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_decaps_layouts"))
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    load_start = os.getloadavg()

    import astropy.units as u
    import h5py
    from astropy.coordinates import SkyCoord

    from dustmaps_ext._core.threads import max_threads
    from dustmaps_ext._core.voxel import PARALLEL_MIN_COORDS
    from dustmaps_ext._io.decaps_compact import CompactStore
    from dustmaps_ext.decaps import DECaPSQuery, DECaPSQueryLite, repack

    published = build(args.workdir, args.pixels, log)
    with h5py.File(published) as f:
        n_pix, n_slots, n_dist = f["samples"].shape[0], 1 + f["samples"].shape[1], f["samples"].shape[2]
        stored = sum(f[k].id.get_storage_size() for k in ("mean", "samples"))
    raw_bytes = n_pix * n_slots * n_dist * 2

    times = {}
    paths = {}
    for layout in ("pixel-major", "compact"):
        dst = args.workdir / f"{published.stem}_{layout}.h5"
        dst.unlink(missing_ok=True)
        log(f"repack, layout {layout} ...")
        t0 = time.perf_counter()
        repack(published, dst, progress=False, layout=layout)
        times[f"repack {layout}"] = time.perf_counter() - t0
        paths[layout] = dst
    for stale in args.workdir.glob("*_16px.h5"):
        stale.unlink()
    copy16, copy16_s = write_16px_copy(published, paths["pixel-major"], args.workdir, log)
    times["16-pixel copy"] = copy16_s
    # the same copy written from the published file, as a user would (decompression included)
    copy16_pub, times["16-pixel copy from published"] = write_16px_copy(
        published, None, args.workdir, log, suffix="_16px_from_published")
    with h5py.File(copy16) as a, h5py.File(copy16_pub) as b:
        same_copy = all(np.array_equal(a[k][()], b[k][()]) for k in ("mean", "samples"))
    copy16_pub.unlink()
    # the same source for both: the compact file written from the pixel-major one (encoding
    # only), as the 16-pixel copy is; a repack from the published file also decompresses it
    log("compact from the pixel-major file ...")
    from dustmaps_ext._io.decaps_compact import write_compact

    with h5py.File(paths["pixel-major"]) as f:
        grp = f["pixel_info"]
        columns = {k: grp[k] for k in ("healpix_index", "DM_reliable_min", "DM_reliable_max",
                                       "converged", "infilled")}
        data = f["data"]
        step = 200_842
        dst = args.workdir / "compact_from_pixel_major.h5"
        t0 = time.perf_counter()
        write_compact(dst, nside=int(grp.attrs["nside"]), dm_bin_edges=grp.attrs["DM_bin_edges"],
                      n_samples=n_slots - 1, pixel_columns=columns,
                      value_blocks=(data[a:a + step] for a in range(0, n_pix, step)))
        times["compact from pixel-major"] = time.perf_counter() - t0
        dst.unlink()
    with h5py.File(copy16) as f:
        stored16 = sum(f[k].id.get_storage_size() for k in ("mean", "samples"))
    sizes = {"published": published.stat().st_size, "16-pixel copy": copy16.stat().st_size,
             "compact": paths["compact"].stat().st_size, "pixel-major": paths["pixel-major"].stat().st_size}
    fractions = {"published": stored / raw_bytes, "16-pixel copy": stored16 / raw_bytes}
    print(f"compression of the realistic map (fraction of raw float16): published "
          f"{fractions['published']:.3f} (release 0.457), 16-pixel copy {fractions['16-pixel copy']:.3f} "
          f"(release 0.248)", flush=True)

    coords_path = make_coordinates(published, args.workdir, 1_000_000)
    arr = np.load(coords_path)
    sky = {n: SkyCoord(arr[:n, 0] * u.deg, arr[:n, 1] * u.deg, distance=arr[:n, 2] * u.kpc,
                       frame="galactic") for n in (1, 10_000, 1_000_000)}
    q = {}
    peers = {"lite compact": DECaPSQueryLite(paths["compact"]),
             "lite pixel-major": DECaPSQueryLite(paths["pixel-major"]),
             "h5py 16-px": H5Peer(str(copy16))}
    for name, peer in peers.items():
        for mode in ("mean", "samples"):
            for n, coords in sky.items():
                if name == "h5py 16-px" and n > 10_000:
                    continue
                peer.query(sky[1], mode=mode)  # warm up
                log(f"{name} {mode} {n}")
                q[(name, mode, n)] = _best(lambda p=peer, c=coords, md=mode: p.query(c, mode=md),
                                           3 if n < 10 ** 6 else 1)
    load_queries = os.getloadavg()
    same = all(np.array_equal(peers["lite compact"].query(sky[10_000], mode=m),
                              peers["lite pixel-major"].query(sky[10_000], mode=m), equal_nan=True)
               for m in ("mean", "samples"))
    loads = {}
    for name in ("published", "pixel-major", "compact"):
        path = published if name == "published" else paths[name]
        log(f"full load {name}")
        t0 = time.perf_counter()
        full = DECaPSQuery(path, progress=False)
        loads[name] = time.perf_counter() - t0
        if name != "published":
            for mode in ("mean", "samples"):
                for n, coords in sky.items():
                    full.query(sky[1], mode=mode)
                    q[(f"full {name}", mode, n)] = _best(
                        lambda p=full, c=coords, md=mode: p.query(c, mode=md), 3 if n < 10 ** 6 else 1)
        del full

    log("bit budget and decode profile of the compact file")
    budget = bit_budget(paths["compact"])
    profile = decode_profile(paths["compact"])

    # ----------------------------------------------------------------- report
    lines = []
    w = lines.append
    m = machine_info()
    w("# DECaPS layouts: published, 16-pixel copy, compact, pixel-major")
    w("")
    w(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `benchmarks/bench_decaps_layouts.py` "
      f"({(time.perf_counter() - t_start) / 60:.1f} min in all).")
    w("")
    w(f"- Machine: {m.get('cores', os.cpu_count())} cores, Python {sys.version.split()[0]}; load average "
      f"{' / '.join(f'{x:.2f}' for x in load_start)} at the start and "
      f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} at the end (the CPU is shared with other work); "
      f"the package's threads: {max_threads()} (queries of at least "
      f"{CompactStore.parallel_min_coords:,} coordinates on a compact file, "
      f"{PARALLEL_MIN_COORDS:,} on the others, run on them).")
    w(f"- Load average sampled during the Lite queries: {' / '.join(f'{x:.2f}' for x in load_queries)}.")
    w(f"- Map: realistic simulated release (`write_realistic_decaps`), {n_pix:,} pixels at nside 2048, "
      f"{n_slots - 1} samples, {n_dist} distances; raw float16 {raw_bytes / 1e9:.2f} GB. Files in the page cache.")
    w("- Coordinates: those of `bench_decaps.py` (80% on map pixels, 20% around the footprint), first n.")
    w("")
    w("## Compression of the simulated release against the real one")
    w("")
    w("| file | fraction of raw float16 (this map) | the release |")
    w("|---|---|---|")
    for k, v in fractions.items():
        w(f"| {k} | {v:.3f} | {RELEASE_FRACTIONS[k]:.3f} |")
    w("")
    w("## Files and repack")
    w("")
    w("| file | size | fraction of raw | scaled to the release (74.0 GB raw) | written in |")
    w("|---|---|---|---|---|")
    written = {"published": None, "16-pixel copy": times["16-pixel copy"],
               "compact": times["repack compact"], "pixel-major": times["repack pixel-major"]}
    for k, v in sizes.items():
        t = written[k]
        w(f"| {k} | {v / 1e9:.3f} GB | {v / raw_bytes:.3f} | {v / raw_bytes * REAL_RAW_GB:.1f} GB (estimate) | "
          f"{'-' if t is None else f'{t:.1f} s'} |")
    w("")
    w(f"The 16-pixel copy is written from the pixel-major file (`write_16px_copy` of `bench_decaps.py`: "
      f"threads, gzip 7 + shuffle); the compact file written from the same file takes "
      f"{times['compact from pixel-major']:.1f} s. Both repacks read the published file, whose "
      f"decompression is most of their time. Written from the published file instead (as a user "
      f"would, decompression included), the 16-pixel copy takes "
      f"{times['16-pixel copy from published']:.1f} s (same contents: {same_copy}).")
    w("")
    w("## Query times (best of 3; 10^6 coordinates: 1 run)")
    w("")
    w("| peer | mode | 1 | 10^4 | 10^6 |")
    w("|---|---|---|---|---|")
    for name in ("lite compact", "lite pixel-major", "h5py 16-px", "full compact", "full pixel-major"):
        for mode in ("mean", "samples"):
            cells = [f"{q[(name, mode, n)] * 1e3:.2f} ms" if (name, mode, n) in q else "-"
                     for n in (1, 10_000, 1_000_000)]
            w(f"| {name} | {mode} | " + " | ".join(cells) + " |")
    w("")
    w("| full load (DECaPSQuery) from | seconds |")
    w("|---|---|")
    for k, v in loads.items():
        w(f"| {k} | {v:.2f} |")
    w("")
    w(f"Compact answers equal pixel-major answers at 10^4 coordinates (mean, samples): {same}.")
    w("")
    w("## Where the compact file's bits go")
    w("")
    w(f"From {budget['sampled']:,} records spread over the file (code lengths of the file's tables; "
      f"{budget['bits_per_value']:.3f} bits per value in all, i.e. {budget['bits_per_value'] / 16:.3f} of "
      f"raw float16). Infilled pixels: {budget['infilled_pixels']:.1%} of the pixels, "
      f"{budget['infilled_share']:.1%} of the bits.")
    w("")
    w("| part | bits per value | of the values of | share of the bits |")
    w("|---|---|---|---|")
    for name, (bpv, over, share) in budget["rows"].items():
        w(f"| {name} | {bpv:.3f} | {over} | {share:.1%} |")
    w("")
    w("Decoding (one thread, random records; ns per record): "
      + ", ".join(f"{k} {v:,.0f} ns" for k, v in profile.items() if "thread" not in k)
      + ". A decode of whole records in blocks of 65,536 (ns per record): "
      + ", ".join(f"{k} {v:,.0f} ns" for k, v in profile.items() if "thread" in k) + ".")
    w("")
    w("## Targets of issue 18, point 2")
    w("")
    w("| target | measured | met |")
    w("|---|---|---|")
    r = sizes["compact"] / sizes["16-pixel copy"]
    w(f"| compact <= 0.5 x 16-pixel copy | {r:.3f} x | {'yes' if r <= 0.5 else 'no'} |")
    for mode in ("mean", "samples"):
        r1 = q[("h5py 16-px", mode, 10_000)] / q[("lite compact", mode, 10_000)]
        r2 = q[("lite compact", mode, 10_000)] / q[("lite pixel-major", mode, 10_000)]
        w(f"| lite compact, 10^4, {mode}: >= 100x faster than h5py 16-px | {r1:.1f}x | {'yes' if r1 >= 100 else 'no'} |")
        w(f"| lite compact, 10^4, {mode}: <= 2x the pixel-major time | {r2:.2f}x | {'yes' if r2 <= 2 else 'no'} |")
    r = loads["published"] / loads["compact"]
    w(f"| full load from compact >= 3x faster than from published | {r:.1f}x | {'yes' if r >= 3 else 'no'} |")
    r = times["16-pixel copy from published"] / times["repack compact"]
    w(f"| repack (compact) >= 2x faster than writing the 16-pixel copy, both from the published "
      f"file | {r:.1f}x | {'yes' if r >= 2 else 'no'} |")
    r = times["16-pixel copy"] / times["compact from pixel-major"]
    w(f"| the same, both written from the pixel-major file | {r:.1f}x | {'yes' if r >= 2 else 'no'} |")
    r = times["16-pixel copy"] / times["repack compact"]
    w(f"| (mixed sources: compact from the published file, 16-pixel copy from the pixel-major file) "
      f"| {r:.1f}x | - |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
