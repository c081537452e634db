"""``dustmaps-ext query``: a catalogue file in, the same file with E(B-V) and extinctions out.

Two forms::

    dustmaps-ext query INPUT OUTPUT --map decaps [--bands decam_g decam_r] [...]
    dustmaps-ext query --map decaps --l 300 --b 1 --distance 2

The first reads FITS, CSV, ECSV or parquet (by extension) and writes OUTPUT in the format of
its own extension, atomically (a temporary file beside it, renamed when complete; never
over INPUT). Parquet to parquet is streamed in batches of rows, so memory stays bounded
whatever the file's size; the other formats are read as a whole (FITS memory-mapped) and
answered in chunks. The second form answers a few positions and prints a table.

This module registers the sub-command (:func:`add_query_parser`) and runs it
(:func:`run_query`); like the rest of the command line it may print.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["MAP_CHOICES", "add_query_parser", "open_query", "run_query"]

#: ``--map`` choices.
MAP_CHOICES = ("decaps", "decaps-full", "bayestar19", "combined", "wang2025")
_PARQUET = (".parquet", ".pq")
_FORMATS = {".fits": "fits", ".fit": "fits", ".fits.gz": "fits", ".csv": "ascii.csv",
            ".ecsv": "ascii.ecsv", ".parquet": "parquet", ".pq": "parquet"}


def _format_of(path: Path) -> str:
    name = path.name.lower()
    for ext in sorted(_FORMATS, key=len, reverse=True):
        if name.endswith(ext):
            return _FORMATS[ext]
    raise ValueError(f"{path}: unknown file type; use one of " + ", ".join(sorted(_FORMATS)))


def add_query_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``query`` on the ``dustmaps-ext`` sub-command parsers; returns its parser."""
    from .extinction import DECAPS_BANDS

    p = subparsers.add_parser(
        "query", help="add E(B-V) and band extinctions to a catalogue file, or answer a few positions",
        description="Add E(B-V) (column ebv) and extinctions (A_<band>) to a FITS, CSV, ECSV or "
                    "parquet catalogue, or print them for a few positions (--l/--b or "
                    "--ra/--dec with --distance or --parallax).")
    p.add_argument("input", nargs="?", help="catalogue to read (.fits, .csv, .ecsv, .parquet)")
    p.add_argument("output", nargs="?", help="file to write (its extension picks the format)")
    p.add_argument("--map", required=True, choices=MAP_CHOICES,
                   help="decaps: DECaPS memory-mapped (repacked file); decaps-full: DECaPS in RAM; "
                        "bayestar19; combined: DECaPS + Bayestar19; wang2025")
    p.add_argument("--map-file", default=None,
                   help="the map file (default: the one in dustmaps' data directory); for "
                        "--map combined, the DECaPS file")
    p.add_argument("--bayestar-file", default=None,
                   help="Bayestar19 file for --map combined (default: dustmaps' data directory)")
    p.add_argument("--bands", nargs="+", default=[], metavar="BAND",
                   help="add A_<band> columns: " + ", ".join(DECAPS_BANDS)
                        + " (bayestar19: ps1_g ... ps1_y, 2mass_j, 2mass_h, 2mass_ks)")
    p.add_argument("--r-v", default="3.32",
                   help="R_V of the band coefficients, or the name of a column (default: 3.32)")
    p.add_argument("--mode", default="mean",
                   choices=("mean", "median", "percentile", "random_sample",
                            "random_sample_per_pix", "best"),
                   help="query mode (default: mean)")
    p.add_argument("--pct", type=float, nargs="+", default=None,
                   help="percentile(s) for --mode percentile")
    p.add_argument("--flags", action="store_true", help="add the map's flags as ebv_<flag> columns")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "float16"),
                   help="type of the new columns (default: float32)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random modes")
    cols = p.add_argument_group("input columns")
    for name, default, what in (("ra", "ra", "right ascension, deg (ICRS)"),
                                ("dec", "dec", "declination, deg (ICRS)"),
                                ("l", "l", "Galactic longitude, deg"),
                                ("b", "b", "Galactic latitude, deg"),
                                ("distance", "distance", "distance, kpc"),
                                ("parallax", "parallax", "parallax, mas (1/parallax kpc; <= 0 or NaN gives NaN)")):
        cols.add_argument(f"--{name}-col", default=default, help=f"{what} (default: %(default)s)")
    out = p.add_argument_group("output")
    out.add_argument("--ebv-col", default="ebv", help="name of the E(B-V) column (default: ebv)")
    out.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    out.add_argument("--chunk-rows", type=int, default=None,
                     help="rows answered at once (default: dustmaps_ext.catalog.DEFAULT_CHUNK_ROWS)")
    out.add_argument("--no-progress", dest="progress", action="store_false",
                     help="no progress bar (TQDM_DISABLE=1 also turns it off)")
    one = p.add_argument_group("a few positions (instead of INPUT OUTPUT)")
    for name, what in (("l", "Galactic longitudes (deg)"), ("b", "Galactic latitudes (deg)"),
                       ("ra", "right ascensions (deg, ICRS)"), ("dec", "declinations (deg, ICRS)"),
                       ("distance", "distances (kpc)"), ("parallax", "parallaxes (mas)")):
        one.add_argument(f"--{name}", type=float, nargs="+", default=None, dest=f"at_{name}",
                         help=f"{what} of the positions to answer")
    return p


def open_query(map_name: str, map_file=None, *, bayestar_file=None, mode: str = "mean"):
    """The query object for ``--map`` (lazily imported, without progress bars)."""
    mean_only = mode == "mean"
    if map_name == "decaps":
        from .decaps import DECaPSQueryLite

        return DECaPSQueryLite(map_file, mean_only=mean_only)
    if map_name == "decaps-full":
        from .decaps import DECaPSQuery

        return DECaPSQuery(map_file, mean_only=mean_only, progress=False)
    if map_name == "bayestar19":
        from .bayestar import Bayestar19Query

        return Bayestar19Query(map_file, progress=False)
    if map_name == "combined":
        from .combined import BayestarDECaPSQuery

        return BayestarDECaPSQuery(map_file, bayestar_file, progress=False)
    if map_name == "wang2025":
        from .wang2025 import Wang2025Query

        return Wang2025Query(map_file)
    raise ValueError(f"--map must be one of {', '.join(MAP_CHOICES)}; got {map_name!r}")


def _options(args):
    from .catalog import CatalogOptions

    try:
        r_v = float(args.r_v)
    except ValueError:
        r_v = args.r_v  # a column name
    pct = None
    if args.pct is not None:
        pct = args.pct[0] if len(args.pct) == 1 else list(args.pct)
    return CatalogOptions(bands=tuple(args.bands), r_v=r_v, mode=args.mode, pct=pct,
                          flags=args.flags, dtype=args.dtype, ra_col=args.ra_col,
                          dec_col=args.dec_col, l_col=args.l_col, b_col=args.b_col,
                          distance_col=args.distance_col, parallax_col=args.parallax_col,
                          ebv_col=args.ebv_col, seed=args.seed,
                          **({} if args.chunk_rows is None else {"chunk_rows": args.chunk_rows}))


def run_query(args: argparse.Namespace) -> str:
    """Run ``dustmaps-ext query``; returns what the command prints (the table of a few
    positions, or the file written)."""
    positions = {k: getattr(args, f"at_{k}") for k in ("l", "b", "ra", "dec", "distance", "parallax")}
    one_off = any(v is not None for v in positions.values())
    if one_off and (args.input or args.output):
        raise ValueError("give either INPUT OUTPUT or positions (--l/--b or --ra/--dec), not both")
    if not one_off and not (args.input and args.output):
        raise ValueError("give INPUT and OUTPUT files, or positions (e.g. --l 300 --b 1 --distance 2)")
    opts = _options(args)
    if one_off:
        return _answer_positions(positions, args, opts)
    src, dst = Path(args.input), Path(args.output)
    if not src.is_file():
        raise FileNotFoundError(f"no input file {src}")
    if dst.resolve() == src.resolve():
        raise ValueError("OUTPUT must differ from INPUT (the input is never overwritten)")
    if dst.exists() and not args.overwrite:
        raise ValueError(f"{dst} exists; use --overwrite to replace it")
    fmt_in, fmt_out = _format_of(src), _format_of(dst)
    query = open_query(args.map, args.map_file, bayestar_file=args.bayestar_file, mode=args.mode)
    if opts.bands:
        from .catalog import _coefficients

        _coefficients(query, opts, 3.32)  # unknown bands fail before any reading
    from ._io.files import atomic_output

    with atomic_output(dst) as tmp:
        if fmt_in == "parquet" and fmt_out == "parquet":
            n = _stream_parquet(src, tmp, query, opts, args.progress)
        else:
            n = _whole_table(src, fmt_in, tmp, fmt_out, query, opts, args.progress)
    return f"wrote {dst} ({n} rows)"


def _bar(total: int, progress: bool, what: str):
    from tqdm.auto import tqdm

    # without an explicit ``disable``, tqdm reads TQDM_DISABLE (and other TQDM_* settings)
    off = {} if progress else {"disable": True}
    return tqdm(total=total, unit="row", unit_scale=True, desc=what, **off)


def _stream_parquet(src: Path, tmp: Path, query, opts, progress: bool) -> int:
    """Parquet to parquet, one batch of rows at a time (the input's columns kept as they are)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .catalog import _needed, extinction_columns

    # pre_buffer=False: with pre-buffering, pyarrow keeps every batch's read buffers until
    # the file is closed (measured: +28 MB per 10^6 rows, 3.5 GB peak for 10^8 rows)
    reader = pq.ParquetFile(src, pre_buffer=False)
    needed = _needed({name: None for name in reader.schema_arrow.names}, opts)
    writer = None
    n = 0
    with _bar(reader.metadata.num_rows, progress, "query") as bar:
        try:
            for batch in reader.iter_batches(batch_size=opts.chunk_rows):
                block = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in needed}
                new = extinction_columns(block, query, opts)
                table = pa.Table.from_batches([batch])
                for name, arr in new.items():
                    table = table.append_column(name, pa.array(arr))
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                n += batch.num_rows
                bar.update(batch.num_rows)
            if writer is None:  # an empty file: the schema with the new columns, no rows
                empty = reader.schema_arrow.empty_table()
                new = extinction_columns({name: empty.column(name).to_numpy() for name in needed},
                                         query, opts)
                for name, arr in new.items():
                    empty = empty.append_column(name, pa.array(arr))
                pq.write_table(empty, tmp)
        finally:
            if writer is not None:
                writer.close()
    return n


def _whole_table(src: Path, fmt_in: str, tmp: Path, fmt_out: str, query, opts, progress: bool) -> int:
    from astropy.table import Table

    from .catalog import _chunked_columns

    kwargs = {"memmap": True} if fmt_in == "fits" else {}
    table = Table.read(src, format=fmt_in, **kwargs)
    with _bar(len(table), progress, "query") as bar:
        new = _chunked_columns(table, len(table), query, opts, on_chunk=bar.update)
    out = table.copy(copy_data=False)
    for name, arr in new.items():
        out[name] = arr
    out.write(tmp, format=fmt_out)
    return len(out)


def _answer_positions(positions: dict, args, opts) -> str:
    """The one-off form: a printed table of the answers at a few positions."""
    import numpy as np
    from astropy.table import Table

    from .catalog import add_extinction

    given = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in positions.items() if v is not None}
    try:
        arrays = np.broadcast_arrays(*given.values())
    except ValueError as exc:
        raise ValueError("the positions must have matching lengths (or length 1)") from exc
    table = Table(dict(zip(given, arrays)))
    rename = {"ra": opts.ra_col, "dec": opts.dec_col, "l": opts.l_col, "b": opts.b_col,
              "distance": opts.distance_col, "parallax": opts.parallax_col}
    for old, new in rename.items():
        if old in table.colnames and new != old:
            table.rename_column(old, new)
    query = open_query(args.map, args.map_file, bayestar_file=args.bayestar_file, mode=args.mode)
    out = add_extinction(table, query, **{f: getattr(opts, f) for f in (
        "bands", "r_v", "mode", "pct", "flags", "dtype", "ra_col", "dec_col", "l_col", "b_col",
        "distance_col", "parallax_col", "ebv_col", "chunk_rows", "seed")})
    for name in out.colnames:
        if out[name].dtype.kind == "f":
            out[name].format = ".4f"
    return "\n".join(out.pformat(max_lines=-1, max_width=-1))
