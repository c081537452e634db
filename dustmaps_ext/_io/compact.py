"""The compact DECaPS layout: lossless, a few times smaller than the release, random access.

A compact file is HDF5 (every dataset contiguous and unfiltered, so it can be memory-mapped)
with

* root attributes ``layout`` (= :data:`COMPACT_LAYOUT`), ``layout_version``, ``codec``
  (= :data:`CODEC`), ``n_slots`` (1 + samples) and ``complete`` (written last);
* ``pixel_info``: the published attributes and per-pixel datasets (``healpix_index``
  uint64 sorted, ``DM_reliable_min``/``DM_reliable_max`` float32, ``converged``/``infilled``
  uint8) plus ``coarse_start`` (int64, see :class:`~dustmaps_ext._core.pixels.PixelIndex`).
  ``healpix_index`` lists the pixels present: a cutout is a compact file of some pixels;
* ``record_offsets`` int64 (n_pix + 1): pixel ``p``'s record is
  ``records[record_offsets[p]:record_offsets[p + 1]]``;
* ``records`` uint8: the records, coded as :mod:`dustmaps_ext._core.profile_codec`
  describes (mean first, then the samples; each a monotone profile coded exactly).

The format is documented for other programs in ``docs/compact_layout.rst``.

:func:`write_compact` writes one from blocks of values in pixel order (what
:func:`repack_compact` and a cutout writer call); :class:`CompactStore` answers queries by
decoding only the records asked for; :func:`load_compact_in_memory` decodes all of it.
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from .._core import profile_codec
from .._core.pixels import PixelIndex
from .layouts import (
    _PIXEL_DATASETS,
    _PIXEL_DTYPES,
    DecapsFileInfo,
    InMemoryStore,
    MapFileError,
    PixelArrays,
    _check_contiguous_extent,
    _open_h5,
    _published_block_rows,
    _pwrite_all,
    inspect_decaps_file,
)

__all__ = [
    "CODEC",
    "COMPACT_LAYOUT",
    "CompactStore",
    "check_compact",
    "load_compact_in_memory",
    "repack_compact",
    "write_compact",
]

logger = logging.getLogger(__name__)

COMPACT_LAYOUT = "dustmaps_ext/decaps-compact"
COMPACT_VERSION = 1
CODEC = "monotone-exp-golomb-1"
_ENCODE_PIXELS = 8192  # pixels encoded per task
_COPY_BYTES = 64 << 20


# --------------------------------------------------------------------------- validation
def check_compact(path: Path, f: h5py.File, n_pix: int, n_dist: int, problems: list) -> int:
    """Check the compact-layout parts of an open file; return its number of samples.

    Appends what is wrong to ``problems``; raises :class:`MapFileError` for an unfinished file.
    """
    if f.attrs.get("layout_version", -1) != COMPACT_VERSION:
        problems.append(f"layout_version {f.attrs.get('layout_version')} (expected {COMPACT_VERSION})")
    codec = f.attrs.get("codec", "")
    codec = codec.decode() if isinstance(codec, bytes) else codec
    if codec != CODEC:
        problems.append(f"codec {codec!r} (expected {CODEC!r})")
    if not f.attrs.get("complete", False):
        raise MapFileError(f"{path} is an unfinished compact file (it lacks the 'complete' mark); "
                           "run dustmaps_ext.decaps.repack() again to write it")
    n_slots = int(f.attrs.get("n_slots", 0))
    if n_slots < 1:
        problems.append(f"n_slots {n_slots} (expected >= 1)")
    offsets, records = f["record_offsets"], f["records"]
    if offsets.dtype != np.int64 or offsets.shape != (n_pix + 1,):
        problems.append(f"record_offsets is {offsets.dtype} {offsets.shape}, expected int64 ({n_pix + 1},)")
    if records.dtype != np.uint8 or records.ndim != 1:
        problems.append(f"records is {records.dtype} {records.shape}, expected 1D uint8")
    for name in _PIXEL_DATASETS:
        want = np.dtype(_PIXEL_DTYPES[name])
        if f["pixel_info"][name].dtype != want:
            problems.append(f"pixel_info/{name} is {f['pixel_info'][name].dtype}, expected {want}")
    cs = f["pixel_info"].get("coarse_start")
    if not isinstance(cs, h5py.Dataset) or "coarse_nside" not in cs.attrs:
        problems.append("dataset pixel_info/coarse_start with attribute coarse_nside")
    if problems:
        return max(0, n_slots - 1)
    _check_contiguous_extent(path, f, ["records", "record_offsets", "pixel_info/coarse_start"]
                             + [f"pixel_info/{n}" for n in _PIXEL_DATASETS])
    ends = offsets[[0, n_pix]] if n_pix else offsets[[0]]
    if int(ends[0]) != 0 or int(ends[-1]) != records.shape[0]:
        problems.append(f"record_offsets run from {int(ends[0])} to {int(ends[-1])}, expected 0 to "
                        f"{records.shape[0]} (the size of records)")
    bounds = int(n_pix) * profile_codec.max_record_bytes(n_slots, n_dist)
    if records.shape[0] > bounds:
        problems.append(f"records holds {records.shape[0]} bytes, more than {bounds} possible")
    return n_slots - 1


# --------------------------------------------------------------------------- reading
def _views(path: Path, names) -> tuple[mmap.mmap, dict]:
    """Memory-map ``path`` and return views of the contiguous datasets ``names``."""
    with h5py.File(path, "r") as f:
        where = {name: (f[name].id.get_offset(), f[name].dtype, f[name].shape) for name in names}
    with open(path, "rb") as fh:  # the mapping outlives the file object
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    views = {}
    for name, (offset, dtype, shape) in where.items():
        count = int(np.prod(shape))
        views[name] = (np.frombuffer(mapped, dtype=dtype, count=count, offset=offset).reshape(shape)
                       if count else np.empty(shape, dtype))
    return mapped, views


def _raise_decode_error(path: Path, code: int) -> None:
    what = {-1: "a record runs past its end", -2: "a record holds an invalid code",
            -3: "a decoded value is out of range", -4: "a record has an unknown mode"}
    raise MapFileError(f"{path} is corrupt: {what.get(code, 'undecodable record')} "
                       f"(compact layout); download or repack it again")


class CompactStore:
    """A compact file, memory-mapped; a query decodes only the records of its pixels.

    Parameters
    ----------
    info : DecapsFileInfo
        A compact file (see :func:`~dustmaps_ext._io.layouts.inspect_decaps_file`).
    mean_only : bool
        Answer the mean only.
    chunk_coords : int
        Coordinates answered between two releases of the mapped pages.
    """

    def __init__(self, info: DecapsFileInfo, *, mean_only: bool = False, chunk_coords: int = 4096) -> None:
        if info.layout != "compact":
            raise ValueError("CompactStore needs a compact file; call repack() first")
        self.info = info
        self.chunk_coords = int(chunk_coords)
        self.n_samples = 0 if mean_only else info.n_samples
        names = ["records", "record_offsets", "pixel_info/coarse_start"] + [
            f"pixel_info/{n}" for n in _PIXEL_DATASETS]
        with h5py.File(info.path, "r") as f:
            coarse_nside = int(f["pixel_info/coarse_start"].attrs["coarse_nside"])
        self._mmap, views = _views(info.path, names)
        self._records = views["records"]
        self._offsets = views["record_offsets"]
        index = PixelIndex(views["pixel_info/healpix_index"], info.nside,
                           coarse_start=np.array(views["pixel_info/coarse_start"]),
                           coarse_nside=coarse_nside)
        self.pixels = PixelArrays(index, views["pixel_info/DM_reliable_min"],
                                  views["pixel_info/DM_reliable_max"],
                                  views["pixel_info/converged"], views["pixel_info/infilled"])

    def data_for(self, rows: np.ndarray, want_samples: bool):
        inside = rows >= 0
        uniq, inverse = np.unique(rows[inside], return_inverse=True)
        n_read = 1 + self.n_samples if want_samples else 1
        block = np.empty((uniq.size, 1 + self.n_samples, self.info.n_dist), dtype=np.uint16)
        local = np.full(rows.shape, -1, dtype=np.int64)
        local[inside] = inverse
        if uniq.size:
            done = profile_codec.decode_rows(self._records, self._offsets, uniq, n_read,
                                             self.info.n_dist, profile_codec.CENT_TABLE,
                                             profile_codec.FLOAT_TABLE, block)
            if done < 0:
                _raise_decode_error(self.info.path, done)
        return block, local

    def release(self) -> None:
        """Drop the mapped pages from this process's resident set (they stay in the page cache)."""
        if hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED)


def load_compact_in_memory(info: DecapsFileInfo, *, n_samples: int, progress: bool = True,
                           threads: int | None = None) -> InMemoryStore:
    """Decode a compact file whole into RAM with ``n_samples`` sample slots.

    Records are decoded in blocks on up to ``threads`` threads straight into the final
    array; the mapped pages are released after each block.
    """
    store = CompactStore(info, chunk_coords=1)
    n_read = 1 + n_samples
    data = np.empty((info.n_pix, n_read, info.n_dist), dtype=np.uint16)
    step = 65536
    blocks = [(a, min(a + step, info.n_pix)) for a in range(0, info.n_pix, step)]

    def decode(block):
        a, b = block
        return profile_codec.decode_rows(store._records, store._offsets, np.arange(a, b), n_read,
                                         info.n_dist, profile_codec.CENT_TABLE,
                                         profile_codec.FLOAT_TABLE, data[a:b])

    workers = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=info.n_pix, desc="Loading DECaPS map", unit="pix", unit_scale=True,
                 disable=not progress) as bar:
        for (a, b), done in zip(blocks, pool.map(decode, blocks)):
            if done < 0:
                _raise_decode_error(info.path, done)
            bar.update(b - a)
    store.release()
    with _open_h5(info.path) as f:
        grp = f["pixel_info"]
        pix = {name: grp[name][()] for name in _PIXEL_DATASETS}
        index = PixelIndex(pix["healpix_index"], info.nside, coarse_start=grp["coarse_start"][()],
                           coarse_nside=int(grp["coarse_start"].attrs["coarse_nside"]))
    pixels = PixelArrays(index, pix["DM_reliable_min"], pix["DM_reliable_max"],
                         pix["converged"], pix["infilled"])
    return InMemoryStore(info, data, pixels)


# --------------------------------------------------------------------------- writing
def _encode_block(values: np.ndarray, start_offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Records of a block of pixels (uint16 values) and their offsets (n + 1)."""
    n, n_slots, n_dist = values.shape
    out = np.empty(n * profile_codec.max_record_bytes(n_slots, n_dist), dtype=np.uint8)
    offsets = np.empty(n + 1, dtype=np.int64)
    used = profile_codec.encode_pixels(np.ascontiguousarray(values), profile_codec.CENT_TABLE,
                                       profile_codec.FLOAT_TABLE, out, offsets, start_offset)
    return out[:used], offsets


def write_compact(dst, *, nside: int, dm_bin_edges, n_samples: int,
                  pixel_columns: Mapping[str, object], value_blocks: Iterable[np.ndarray],
                  pixel_attrs: Mapping[str, object] | None = None, source: str = "",
                  coarse_nside: int = 256, progress: bool = False, threads: int | None = None) -> Path:
    """Write a compact DECaPS file from per-pixel columns and blocks of values.

    This is the one writer of the layout: :func:`repack_compact` feeds it a published
    file chunk row by chunk row; a cutout writer feeds it the pixels it has.

    Parameters
    ----------
    dst : str or Path
        Output; written as ``<dst>.partial`` (plus two side files) and renamed when complete,
        so ``dst`` never holds a partial file.
    nside : int
        HEALPix nside of the pixels.
    dm_bin_edges : array_like, shape (n_dist,)
        Distance-modulus edges.
    n_samples : int
        Samples per pixel (0 for a mean-only map).
    pixel_columns : mapping
        ``healpix_index`` (NESTED, strictly increasing: the pixels present),
        ``DM_reliable_min``, ``DM_reliable_max``, ``converged``, ``infilled``: arrays (or
        h5py datasets) of length n_pix, read in slices.
    value_blocks : iterable of numpy.ndarray
        Consecutive blocks, in the order of ``healpix_index``, of shape
        (m, 1 + n_samples, n_dist), float16 or their uint16 bit patterns (slot 0 the
        mean); together exactly n_pix pixels.
    pixel_attrs : mapping, optional
        Further ``pixel_info`` attributes to keep (the release's).
    source : str
        Recorded as the ``source`` attribute.
    coarse_nside : int
        nside of the coarse pixel index.
    progress : bool
        Show a progress bar.
    threads : int, optional
        Encoding threads (default: the CPUs, at most 8).

    Returns
    -------
    Path
        ``dst``.
    """
    dst = Path(dst)
    edges = np.asarray(dm_bin_edges, dtype=np.float32)
    n_dist, n_slots = edges.size, 1 + int(n_samples)
    hp_col = pixel_columns["healpix_index"]
    n_pix = int(np.shape(hp_col)[0])
    coarse_nside = min(int(coarse_nside), int(nside))
    partial = dst.with_name(dst.name + ".partial")
    side_records = dst.with_name(dst.name + ".partial.records")
    side_offsets = dst.with_name(dst.name + ".partial.offsets")
    workers = threads or min(8, os.cpu_count() or 1)
    written = 0
    pixels_done = 0
    try:
        with open(side_records, "wb") as rec, open(side_offsets, "wb") as off, \
                ThreadPoolExecutor(max_workers=workers) as pool, \
                tqdm(total=n_pix, desc="Writing compact DECaPS", unit="pix", unit_scale=True,
                     disable=not progress) as bar:
            for block in value_blocks:
                block = np.asarray(block)
                if block.ndim != 3 or block.shape[1:] != (n_slots, n_dist):
                    raise ValueError(f"value blocks must have shape (m, {n_slots}, {n_dist}); "
                                     f"got {block.shape}")
                if block.dtype not in (np.float16, np.uint16):
                    raise ValueError(f"value blocks must be float16 (or uint16 bit patterns); got {block.dtype}")
                bits = block.view(np.uint16)
                parts = [bits[a:a + _ENCODE_PIXELS] for a in range(0, bits.shape[0], _ENCODE_PIXELS)]
                for records, offsets in pool.map(lambda part: _encode_block(part, 0), parts):
                    off.write((offsets[:-1] + written).tobytes())
                    rec.write(records.tobytes())
                    written += records.size
                pixels_done += bits.shape[0]
                if pixels_done > n_pix:
                    raise ValueError(f"value blocks hold more than the {n_pix} pixels of healpix_index")
                bar.update(bits.shape[0])
            if pixels_done != n_pix:
                raise ValueError(f"value blocks hold {pixels_done} pixels; healpix_index has {n_pix}")
            off.write(np.int64(written).tobytes())
        _assemble(partial, side_records, side_offsets, nside=nside, edges=edges, n_samples=n_samples,
                  n_pix=n_pix, n_records=written, pixel_columns=pixel_columns,
                  pixel_attrs=pixel_attrs or {}, source=source, coarse_nside=coarse_nside)
        os.replace(partial, dst)
    finally:
        for path in (side_records, side_offsets, partial):
            path.unlink(missing_ok=True)
    return dst


def _assemble(partial: Path, side_records: Path, side_offsets: Path, *, nside, edges, n_samples,
              n_pix, n_records, pixel_columns, pixel_attrs, source, coarse_nside) -> None:
    """Write the HDF5 file: pixel information, then the side files into contiguous datasets."""
    shift = 2 * int(np.log2(nside // coarse_nside))
    counts = np.zeros(12 * coarse_nside ** 2, dtype=np.int64)
    step = 1 << 22
    with h5py.File(partial, "w") as out:
        out.attrs["layout"] = COMPACT_LAYOUT
        out.attrs["layout_version"] = COMPACT_VERSION
        out.attrs["codec"] = CODEC
        out.attrs["n_slots"] = np.int64(1 + n_samples)
        out.attrs["source"] = str(source)
        grp = out.create_group("pixel_info")
        for key, value in pixel_attrs.items():
            grp.attrs[key] = value
        grp.attrs["nside"] = np.int64(nside)
        grp.attrs["DM_bin_edges"] = edges
        grp.attrs["n_samples"] = np.int64(n_samples)
        last = -1
        for name in _PIXEL_DATASETS:
            dset = grp.create_dataset(name, shape=(n_pix,), dtype=_PIXEL_DTYPES[name])
            for a in range(0, n_pix, step):
                b = min(a + step, n_pix)
                block = np.asarray(pixel_columns[name][a:b])
                if block.shape != (b - a,):
                    raise ValueError(f"pixel column {name} must have length {n_pix}")
                dset[a:b] = block.astype(_PIXEL_DTYPES[name])
                if name == "healpix_index":
                    keys = block.astype(np.int64)
                    if (keys.size and int(keys[0]) <= last) or np.any(np.diff(keys) <= 0):
                        raise MapFileError(f"healpix_index of {source or partial} is not sorted")
                    if keys.size and (keys[0] < 0 or keys[-1] >= 12 * nside ** 2):
                        raise ValueError(f"healpix_index holds pixels beyond nside={nside}")
                    last = int(keys[-1]) if keys.size else last
                    counts += np.bincount(keys >> shift, minlength=counts.size)
        coarse = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        cs = grp.create_dataset("coarse_start", data=coarse)
        cs.attrs["coarse_nside"] = np.int64(coarse_nside)
        for name, dtype, count in (("record_offsets", h5py.h5t.STD_I64LE, n_pix + 1),
                                   ("records", h5py.h5t.STD_U8LE, n_records)):
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_layout(h5py.h5d.CONTIGUOUS)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
            h5py.h5d.create(out.id, name.encode(), dtype, h5py.h5s.create_simple((count,)), dcpl=dcpl)
        where = {name: out[name].id.get_offset() for name in ("records", "record_offsets")}
    fd = os.open(partial, os.O_WRONLY)
    try:
        for name, side in (("records", side_records), ("record_offsets", side_offsets)):
            with open(side, "rb") as fh:
                pos = where[name]
                while True:
                    chunk = fh.read(_COPY_BYTES)
                    if not chunk:
                        break
                    _pwrite_all(fd, memoryview(chunk), pos)
                    pos += len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    with h5py.File(partial, "r+") as out:
        out.attrs["complete"] = True


def repack_compact(src, dst, *, progress: bool = True, coarse_nside: int = 256,
                   threads: int | None = None) -> Path:
    """Convert a published-layout DECaPS file into the compact layout.

    Streams the source one published chunk row at a time (each chunk is decompressed
    once), encodes it on up to ``threads`` threads and writes ``dst`` atomically (see
    :func:`write_compact`). Memory: one chunk row of values (about 290 MB for the release)
    plus the encoded blocks in flight.
    """
    src, dst = Path(src), Path(dst)
    info = inspect_decaps_file(src)
    if info.layout != "published":
        raise ValueError(f"{src} is already in the {info.layout} layout")
    n_slots = 1 + info.n_samples
    with h5py.File(src, "r") as f:
        mean, samples = f["mean"], f.get("samples")
        step = _published_block_rows(mean, info.n_pix)

        def blocks():
            buf = np.empty((step, n_slots, info.n_dist), dtype=np.float16)
            for a in range(0, info.n_pix, step):
                b = min(a + step, info.n_pix)
                view = buf[:b - a]
                try:
                    mean.read_direct(view, np.s_[a:b, :, :], np.s_[:, 0:1, :])
                    if samples is not None:
                        samples.read_direct(view, np.s_[a:b, :, :], np.s_[:, 1:, :])
                except OSError as exc:
                    raise MapFileError(f"{src} could not be read completely (truncated or "
                                       f"corrupt): {exc}") from exc
                yield view

        grp = f["pixel_info"]
        attrs = {k: v for k, v in grp.attrs.items()}
        columns = {name: grp[name] for name in _PIXEL_DATASETS}
        result = write_compact(dst, nside=info.nside, dm_bin_edges=info.dm_bin_edges,
                               n_samples=info.n_samples, pixel_columns=columns, value_blocks=blocks(),
                               pixel_attrs=attrs, source=src.name, coarse_nside=coarse_nside,
                               progress=progress, threads=threads)
    logger.info("repacked %s -> %s (compact layout)", src, dst)
    return result
