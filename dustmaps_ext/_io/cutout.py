"""DECaPS region cutouts: the pixels of a few sky cones, read from the published file remotely.

A region is a cone ``(l, b, radius)`` in Galactic degrees. Its pixels are the HEALPix NESTED
pixels that touch the cone at the map's nside (healpy ``query_disc(..., inclusive=True)``).
:func:`fetch_cutout` reads only what those pixels need from the published file (Zucker et
al. 2025, Dataverse doi:10.7910/DVN/J9JCKO) through HTTP Range requests
(:class:`~dustmaps_ext._io.remote.RemoteFile`):

1. the HDF5 metadata, through a block cache saved beside the cutout
   (``<cutout>.remote-index.npz``), so that no metadata block is ever read twice;
2. the published pixels are sorted by ``healpix_index`` and stored in chunk rows of
   ``chunks[0]`` pixels: a binary search over the first pixel of each chunk row finds the
   rows that hold the region's pixels, and one read per row of the ``pixel_info`` datasets
   their positions and flags;
3. the raw bytes of every ``mean``/``samples`` chunk of those rows (their addresses from the
   HDF5 chunk index), with neighbouring chunks coalesced into few Range requests; the bytes
   are decoded by HDF5 itself (written into an in-memory HDF5 dataset with the published
   filters, ``write_direct_chunk``, and read back).

The pixels are written, with those of earlier regions, to a local file in this package's
query layout (:func:`write_query_file`), atomically; the cutout records its regions and its
source in attributes. The query classes open it like a full map; :class:`CutoutCoverage`
makes them refuse (or flag) coordinates inside the DECaPS footprint that no fetched region
covers, instead of answering NaN as if the map had no data there.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import healpy as hp
import numpy as np
import numpy.lib.recfunctions as rfn

from .._coords import galactic_arrays, restore_shape
from .._core.pixels import in_lon_lat_box, lb_to_nested
from .download import RetryPolicy, check_free_space, file_lock, format_bytes
from ..errors import MapFileError, OutsideFetchedRegionError
from .decaps import (
    B_RANGE_DEG,
    L_RANGE_DEG,
    PIXEL_DATASETS,
    PIXEL_DTYPES,
    inspect_open_file,
    inspect_decaps_file,
    load_in_memory,
)
from .decaps_compact import load_compact_in_memory, write_compact
from .remote import BlockCache, RangeReader, RemoteFile

__all__ = ["CUTOUT_ATTR", "CutoutCoverage", "OutsideFetchedRegionError", "Region",
           "cutout_regions", "decaps_cutout_path", "fetch_cutout", "index_path",
           "regions_argument", "in_decaps_footprint", "region_pixels",
           "write_query_file"]

logger = logging.getLogger(__name__)

#: Root attribute of a cutout file: JSON list of its regions ``[[l, b, radius], ...]`` (deg).
CUTOUT_ATTR = "cutout_regions"
#: Root attribute of a cutout file: JSON description of the published file it was read from.
SOURCE_ATTR = "cutout_source"
#: Neighbouring chunks closer than this many bytes are read in one request.
MERGE_GAP = 1 << 20
#: Largest single Range request (bytes) when coalescing chunks.
MAX_REQUEST_BYTES = 256 << 20



@dataclass(frozen=True)
class Region:
    """A sky cone in Galactic coordinates (degrees)."""

    l_deg: float
    b_deg: float
    radius_deg: float

    @classmethod
    def parse(cls, region) -> Region:
        """A Region from a Region or an ``(l, b, radius)`` triple, checked."""
        if isinstance(region, Region):
            return region
        try:
            l_deg, b_deg, radius = (float(v) for v in region)
        except (TypeError, ValueError):
            raise ValueError(f"a region is (l_deg, b_deg, radius_deg); got {region!r}") from None
        if not all(math.isfinite(v) for v in (l_deg, b_deg, radius)):
            raise ValueError(f"region values must be finite; got {region!r}")
        if not -90.0 <= b_deg <= 90.0:
            raise ValueError(f"region latitude must lie in [-90, 90] deg; got {b_deg}")
        if not 0.0 < radius <= 30.0:
            raise ValueError(f"region radius must lie in (0, 30] deg; got {radius}")
        return cls(l_deg % 360.0, b_deg, radius)

    def as_list(self) -> list[float]:
        return [self.l_deg, self.b_deg, self.radius_deg]

    def __str__(self) -> str:
        return f"(l={self.l_deg:g}, b={self.b_deg:g}, radius={self.radius_deg:g} deg)"


def region_pixels(nside: int, regions: Sequence) -> np.ndarray:
    """Sorted NESTED pixels at ``nside`` touching any of the regions (inclusive discs)."""
    parts = [np.empty(0, dtype=np.int64)]
    for region in regions:
        r = Region.parse(region)
        vec = hp.ang2vec(r.l_deg, r.b_deg, lonlat=True)
        parts.append(hp.query_disc(nside, vec, math.radians(r.radius_deg), inclusive=True,
                                   nest=True).astype(np.int64))
    return np.unique(np.concatenate(parts))


def in_decaps_footprint(l_deg, b_deg, margin_deg: float = 0.0) -> np.ndarray:
    """True inside the DECaPS footprint (:func:`dustmaps_ext._io.decaps.in_footprint`),
    widened by ``margin_deg`` on every side."""
    return in_lon_lat_box(l_deg, b_deg, (L_RANGE_DEG[0] - margin_deg, L_RANGE_DEG[1] + margin_deg),
                          (B_RANGE_DEG[0] - margin_deg, B_RANGE_DEG[1] + margin_deg))


def cutout_regions(f: h5py.File) -> list[Region] | None:
    """The regions of an open cutout file, or None if the file is not a cutout."""
    raw = f.attrs.get(CUTOUT_ATTR)
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode()
    return [Region.parse(r) for r in json.loads(raw)]


# --------------------------------------------------------------------------- coverage (queries)


class CutoutCoverage:
    """Which coordinates a cutout can answer, and what to do about the others.

    Parameters
    ----------
    regions : list of Region
        The cutout's regions.
    nside : int
        The map's nside.
    outside : {"raise", "nan"}
        For a coordinate inside the DECaPS footprint that no region covers: raise
        :class:`OutsideFetchedRegionError` naming the regions, or answer NaN (as the cutout
        has no pixel there) and add a ``fetched`` field (False) to the flags.
    """

    def __init__(self, regions: Sequence[Region], nside: int, outside: str = "raise") -> None:
        if outside not in ("raise", "nan"):
            raise ValueError(f"outside_regions must be 'raise' or 'nan'; got {outside!r}")
        self.regions = [Region.parse(r) for r in regions]
        self.nside = int(nside)
        self.outside = outside
        self._pixels = region_pixels(self.nside, self.regions)
        # a coordinate just outside the footprint may still fall in a pixel of the map
        self._margin = 2.0 * math.degrees(hp.nside2resol(self.nside))

    @classmethod
    def of_file(cls, path, nside: int, outside: str = "raise") -> CutoutCoverage | None:
        """The coverage of a cutout file, or None if the file is a full map."""
        with h5py.File(path, "r") as f:
            regions = cutout_regions(f)
        return None if regions is None else cls(regions, nside, outside)

    def fetched(self, l_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
        """True where a position's pixel belongs to a fetched region."""
        pix = lb_to_nested(self.nside, l_deg, b_deg)
        if self._pixels.size == 0:
            return np.zeros(pix.shape, dtype=bool)
        k = np.clip(np.searchsorted(self._pixels, pix), 0, self._pixels.size - 1)
        return self._pixels[k] == pix

    def describe(self) -> str:
        return ", ".join(str(r) for r in self.regions) or "none"

    def answer(self, answer: Callable, coords, mode, return_flags, pct, rng):
        """Check ``coords`` against the regions, then call ``answer(coords, mode, ...)``."""
        flat = galactic_arrays(coords)
        fetched = self.fetched(flat.l_deg, flat.b_deg)
        missing = ~fetched & in_decaps_footprint(flat.l_deg, flat.b_deg, self._margin)
        if self.outside == "raise" and np.any(missing):
            i = int(np.flatnonzero(missing)[0])
            raise OutsideFetchedRegionError(
                f"{int(missing.sum())} coordinate(s) lie in the DECaPS footprint but outside "
                f"every region of this cutout (the first: l={flat.l_deg[i]:.4f}, "
                f"b={flat.b_deg[i]:.4f} deg). Fetched regions: {self.describe()}. Fetch a "
                "region that covers them (dustmaps_ext.decaps.fetch(region=(l, b, radius))), "
                "or open the map with outside_regions='nan' to get NaN and a fetched=False flag")
        result = answer(coords, mode, return_flags, pct, rng)
        if not return_flags:
            return result
        values, flags = result
        flat_flags = np.atleast_1d(flags).reshape(-1)
        with_fetched = rfn.append_fields(flat_flags, "fetched", fetched, usemask=False)
        return values, restore_shape(with_fetched, flat)


# --------------------------------------------------------------------------- remote reading


def _row_starts(hp_dset, rows: np.ndarray, chunk_rows: int, memo: dict) -> np.ndarray:
    """First pixel of each chunk row in ``rows`` (read remotely once, then from ``memo``)."""
    need = [int(r) for r in np.unique(rows) if int(r) not in memo]
    for r in need:
        memo[r] = int(hp_dset[r * chunk_rows])
    return np.array([memo[int(r)] for r in rows], dtype=np.int64)


def _chunk_rows_of(hp_dset, pixels: np.ndarray, chunk_rows: int, n_rows: int) -> np.ndarray:
    """Chunk row that would hold each pixel (binary search over the rows' first pixels)."""
    memo: dict[int, int] = {}
    lo = np.zeros(pixels.size, dtype=np.int64)  # invariant: first(lo) <= p, or lo == 0
    hi = np.full(pixels.size, n_rows, dtype=np.int64)  # first(hi) > p (hi == n_rows: end)
    while np.any(hi - lo > 1):
        active = hi - lo > 1
        mid = (lo + hi) // 2
        first = _row_starts(hp_dset, mid[active], chunk_rows, memo)
        go_up = np.zeros(pixels.size, dtype=bool)
        go_up[active] = first <= pixels[active]
        lo = np.where(active & go_up, mid, lo)
        hi = np.where(active & ~go_up, mid, hi)
    return lo


def _coalesce(spans: list[tuple[int, int]], gap: int, max_bytes: int) -> list[tuple[int, int]]:
    """Merge sorted (start, stop) byte spans closer than ``gap`` into requests of at most
    ``max_bytes`` (a single longer span stays whole)."""
    merged: list[list[int]] = []
    for start, stop in sorted(spans):
        if merged and start - merged[-1][1] <= gap and stop - merged[-1][0] <= max_bytes:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return [(a, b) for a, b in merged]


@dataclass
class _RowChunks:
    """The stored chunks of one chunk row of one dataset: coordinates, masks and bytes."""

    coords: list
    masks: list
    spans: list  # (byte offset, size) in the remote file; None where never written


def _chunks_of_row(dset: h5py.Dataset, row: int, chunk_rows: int) -> _RowChunks:
    _, n_slots, n_dist = dset.shape
    c_slots, c_dist = dset.chunks[1], dset.chunks[2]
    out = _RowChunks([], [], [])
    for s in range(0, n_slots, c_slots):
        for d in range(0, n_dist, c_dist):
            coord = (row * chunk_rows, s, d)
            info = dset.id.get_chunk_info_by_coord(coord)
            out.coords.append(coord)
            out.masks.append(info.filter_mask)
            out.spans.append(None if info.byte_offset is None else (info.byte_offset, info.size))
    return out


def _decode_row(dset: h5py.Dataset, chunks: _RowChunks, raw: dict, row: int,
                chunk_rows: int) -> np.ndarray:
    """Decode one chunk row with HDF5's own filters: raw chunks in, float16 values out."""
    n_pix = dset.shape[0]
    a, b = row * chunk_rows, min((row + 1) * chunk_rows, n_pix)
    dcpl = dset.id.get_create_plist()
    with h5py.File(io.BytesIO(), "w") as mem:
        space = h5py.h5s.create_simple(dset.shape)
        h5py.h5d.create(mem.id, b"v", dset.id.get_type(), space, dcpl=dcpl)
        target = mem["v"]
        for coord, mask, span in zip(chunks.coords, chunks.masks, chunks.spans):
            if span is not None:
                target.id.write_direct_chunk(coord, raw[span], filter_mask=mask)
        return target[a:b]


def _plan_rows(f: h5py.File, pixels: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each chunk row holding some of ``pixels``: (positions in the row, those pixels)."""
    hp_dset = f["pixel_info/healpix_index"]
    n_pix = hp_dset.shape[0]
    chunk_rows = f["mean"].chunks[0]
    n_rows = -(-n_pix // chunk_rows)
    plan: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if n_pix == 0 or pixels.size == 0:
        return plan
    rows = _chunk_rows_of(hp_dset, pixels, chunk_rows, n_rows)
    for row in np.unique(rows):
        a, b = int(row) * chunk_rows, min((int(row) + 1) * chunk_rows, n_pix)
        wanted = pixels[rows == row]
        stored = hp_dset[a:b].astype(np.int64)
        k = np.clip(np.searchsorted(stored, wanted), 0, stored.size - 1)
        present = stored[k] == wanted
        if np.any(present):
            plan[int(row)] = (k[present], wanted[present])
    return plan


def _chunk_table(f: h5py.File, plan: dict, names: Sequence[str]) -> dict:
    """The stored chunks of every planned row and value dataset, from the chunk index."""
    chunk_rows = f["mean"].chunks[0]
    return {(row, name): _chunks_of_row(f[name], row, chunk_rows) for row in plan for name in names}


def _value_requests(chunks: _RowChunks, merge_gap: int) -> list[tuple[int, int]]:
    """The coalesced byte ranges that read the stored chunks of one row."""
    spans = [(o, o + n) for o, n in (s for s in chunks.spans if s is not None)]
    return _coalesce(spans, merge_gap, MAX_REQUEST_BYTES)


def _planned(table: dict, merge_gap: int) -> tuple[int, int]:
    """(compressed bytes, requests) of the value chunks in ``table``."""
    ranges = [r for chunks in table.values() for r in _value_requests(chunks, merge_gap)]
    return sum(b - a for a, b in ranges), len(ranges)


def _read_rows(f: h5py.File, remote: RemoteFile, plan: dict, table: dict, names: Sequence[str],
               *, merge_gap: int, progress: bool) -> dict:
    """Per-pixel arrays and values of the planned pixels, row by row (bounded memory)."""
    from ..progress import tqdm

    grp = f["pixel_info"]
    chunk_rows = f["mean"].chunks[0]
    parts: dict[str, list] = {n: [] for n in ("healpix_index", *PIXEL_DATASETS[1:], *names)}
    for row in tqdm(sorted(plan), desc="DECaPS cutout", unit="row", disable=not progress):
        positions, pixels = plan[row]
        a = row * chunk_rows
        lo, hi = int(positions.min()), int(positions.max()) + 1
        parts["healpix_index"].append(pixels)
        for name in PIXEL_DATASETS[1:]:
            parts[name].append(grp[name][a + lo:a + hi][positions - lo])
        for name in names:
            chunks = table[(row, name)]
            stored = [s for s in chunks.spans if s is not None]
            raw: dict = {}
            for start, stop in _value_requests(chunks, merge_gap):
                block = remote.reader.fetch(start, stop)
                for o, n in stored:
                    if start <= o and o + n <= stop:
                        raw[(o, n)] = block[o - start:o - start + n]
            values = _decode_row(f[name], chunks, raw, row, chunk_rows)
            parts[name].append(values[positions])
    return parts


# --------------------------------------------------------------------------- local file


#: nside of a cutout's coarse pixel index (small: a cutout holds few pixels).
CUTOUT_COARSE_NSIDE = 64


def write_query_file(dst: Path, pixel_attrs: dict, arrays: dict, root_attrs: dict) -> Path:
    """Write pixels and values to ``dst`` in the compact layout, atomically.

    ``arrays`` holds ``healpix_index`` (sorted), the per-pixel datasets and ``mean``
    (n, 1, n_dist) and optionally ``samples`` (n, n_samples, n_dist) float16, written by the
    layout's one writer (:func:`dustmaps_ext._io.decaps_compact.write_compact`);
    ``root_attrs`` (the regions and the source) are added before the finished file replaces
    ``dst``.
    """
    dst = Path(dst)
    converted = dst.with_name(dst.name + ".new.h5")
    values = np.asarray(arrays["mean"], dtype=np.float16)
    if "samples" in arrays:
        values = np.concatenate([values, np.asarray(arrays["samples"], dtype=np.float16)], axis=1)
    nside = int(pixel_attrs["nside"])
    try:
        write_compact(converted, nside=nside, dm_bin_edges=pixel_attrs["DM_bin_edges"],
                      n_samples=values.shape[1] - 1,
                      pixel_columns={name: arrays[name] for name in PIXEL_DATASETS},
                      value_blocks=[values], pixel_attrs=pixel_attrs, source=dst.name,
                      coarse_nside=min(CUTOUT_COARSE_NSIDE, nside))
        with h5py.File(converted, "r+") as f:
            for key, value in root_attrs.items():
                f.attrs[key] = value
        os.replace(converted, dst)
    finally:
        converted.unlink(missing_ok=True)
    return dst


def _read_existing(path: Path, names: Sequence[str]) -> tuple[dict, list, dict | None]:
    """(arrays, regions, source) of an existing cutout; empty for a missing file.

    The values are read with the package's loaders (the compact layout's, or
    :func:`.decaps.load_in_memory` for the other layouts).
    """
    if not path.exists():
        return {}, [], None
    with h5py.File(path, "r") as f:
        regions = cutout_regions(f)
        if regions is None:
            raise MapFileError(f"{path} exists and is not a DECaPS cutout; move it away")
        source = json.loads(f.attrs[SOURCE_ATTR])
        grp = f["pixel_info"]
        arrays = {name: grp[name][()] for name in PIXEL_DATASETS}
    info = inspect_decaps_file(path)
    n_samples = info.n_samples if "samples" in names else 0
    load = load_compact_in_memory if info.layout == "compact" else load_in_memory
    data = load(info, n_samples=n_samples, progress=False).data.view(np.float16)
    arrays["mean"] = data[:, :1, :]
    if "samples" in names:
        arrays["samples"] = data[:, 1:, :]
    return arrays, regions, source


def index_path(cutout: Path) -> Path:
    """The remote-metadata cache kept beside a cutout."""
    return cutout.with_name(cutout.name + ".remote-index.npz")


def fetch_cutout(url: str, dest, regions: Sequence, *, size: int | None = None,
                 checksum: str | None = None, filename: str | None = None,
                 retry: RetryPolicy | None = None, session=None, merge_gap: int = MERGE_GAP,
                 confirm: Callable[[int], None] | None = None, progress: bool = True,
                 stats: dict | None = None) -> Path:
    """Add the pixels of ``regions`` of the published file at ``url`` to the cutout ``dest``.

    Parameters
    ----------
    url : str
        The published DECaPS file (e.g. its Dataverse access URL); the server must answer
        Range requests.
    dest : path
        The local cutout (created, or extended with the new regions).
    regions : sequence of (l_deg, b_deg, radius_deg)
        Cones to add.
    size, checksum, filename : optional
        The published file's size, checksum and name: they identify the source; a cutout
        of another source is refused.
    retry : RetryPolicy, optional
        Retry settings (default: the download engine's).
    session : requests.Session, optional
        Session to use.
    merge_gap : int
        Chunks closer than this many bytes are read in one request.
    confirm : callable, optional
        Called with the number of value bytes to download before they are downloaded (it
        may raise to refuse).
    progress : bool
        Show a progress bar.
    stats : dict, optional
        Filled with ``requests``, ``bytes`` and ``file_size`` of this call.

    Returns
    -------
    Path
        ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    new_regions = [Region.parse(r) for r in regions]
    if not new_regions:
        raise ValueError("no region given")
    with file_lock(dest), RangeReader(url, size=size, retry=retry, session=session) as reader:
        try:
            return _fetch_locked(reader, dest, new_regions, size, checksum, filename,
                                 merge_gap, confirm, progress)
        finally:
            if stats is not None:
                stats.update(requests=reader.stats.requests, bytes=reader.stats.bytes,
                             file_size=reader.size)


def _fetch_locked(reader: RangeReader, dest: Path, new_regions: list, size, checksum, filename,
                  merge_gap, confirm, progress) -> Path:
    # bounds for the metadata phase: generous, but finite
    reader.max_requests, reader.max_bytes = 20_000, 1 << 30
    file_size = reader.file_size()
    identity = {"size": file_size, "checksum": checksum, "filename": filename}
    cache = BlockCache.load(index_path(dest), identity)
    remote = RemoteFile(reader, cache)
    try:
        with h5py.File(remote, "r") as f:
            info = inspect_open_file(Path(filename or reader.url), f)
            if info.layout != "published":
                raise MapFileError(f"{reader.url} is not in the published DECaPS layout")
            names = ["mean"] + (["samples"] if info.n_samples else [])
            existing, old_regions, source = _read_existing(dest, names)
            if source is not None and source != identity:
                raise MapFileError(
                    f"{dest} was cut from another file ({source}), not from {identity}: "
                    "delete it (or pass clobber=True) to start a new cutout")
            old_pixels = region_pixels(info.nside, old_regions)
            wanted = np.setdiff1d(region_pixels(info.nside, new_regions), old_pixels)
            plan = _plan_rows(f, wanted)
            table = _chunk_table(f, plan, names)
            value_bytes, value_requests = _planned(table, merge_gap)
            cache.save(index_path(dest))
            if confirm is not None:
                confirm(value_bytes)
            n_new = sum(p.size for _, p in plan.values())
            row_bytes = (1 + info.n_samples) * info.n_dist * 2 + 18
            check_free_space(dest.parent, 3 * (n_new + len(existing.get("mean", ()))) * row_bytes,
                             what=f"the cutout {dest.name}")
            # bounds for the values and flags: twice what they need, plus room for retries
            reader.max_bytes = reader.stats.bytes + 2 * value_bytes + (64 << 20)
            reader.max_requests = (reader.stats.requests + 2 * value_requests
                                   + 16 * len(plan) + 100)
            logger.info("fetching %d new pixels in %d chunk rows (%s of compressed values)",
                        n_new, len(plan), format_bytes(value_bytes))
            parts = _read_rows(f, remote, plan, table, names, merge_gap=merge_gap, progress=progress)
            pixel_attrs = dict(f["pixel_info"].attrs)
    finally:
        cache.save(index_path(dest))
    arrays = {}
    for name, chunks in parts.items():
        dtype = np.float16 if name in names else PIXEL_DTYPES[name]
        if chunks:
            new = np.concatenate(chunks).astype(dtype, copy=False)
        else:
            slots = 1 if name == "mean" else info.n_samples
            new = np.empty((0, slots, info.n_dist) if name in names else (0,), dtype=dtype)
        arrays[name] = np.concatenate([existing[name].astype(dtype, copy=False), new]) \
            if existing else new
    order = np.argsort(arrays["healpix_index"].astype(np.int64), kind="stable")
    arrays = {k: v[order] for k, v in arrays.items()}
    all_regions = old_regions + [r for r in new_regions if r not in old_regions]
    root_attrs = {CUTOUT_ATTR: json.dumps([r.as_list() for r in all_regions]),
                  SOURCE_ATTR: json.dumps(identity, sort_keys=True)}
    write_query_file(dest, pixel_attrs, arrays, root_attrs)
    logger.info("cutout %s holds %d pixels of %d region(s)", dest, arrays["healpix_index"].size,
                len(all_regions))
    return dest


# --------------------------------------------------------------------------- fetch(region=...)


def decaps_cutout_path(mean_only: bool = False) -> Path:
    """Where ``fetch(region=...)`` keeps the DECaPS cutout under the current data directory."""
    from .decaps import decaps_paths

    original, _ = decaps_paths(mean_only)
    return original.with_name(f"{original.stem}_cutout.h5")


def regions_argument(region) -> list[Region]:
    """One ``(l, b, radius)`` triple, or a sequence of them, as Regions."""
    items = list(region) if not isinstance(region, Region) else [region]
    if items and not isinstance(items[0], (Region, Sequence, np.ndarray)):
        items = [region]
    return [Region.parse(r) for r in items]
