"""The compact DECaPS layout: lossless, a few times smaller than the release, random access.

A compact file is HDF5 (every dataset contiguous and unfiltered, so it can be memory-mapped)
with

* root attributes ``layout`` (= :data:`~dustmaps_ext._io.decaps.COMPACT_LAYOUT`),
  ``layout_version``, ``codec`` (= :data:`~dustmaps_ext._io.decaps.COMPACT_CODEC`),
  ``n_slots`` (1 + samples) and ``complete`` (written last);
* ``pixel_info``: the published attributes and per-pixel datasets (``healpix_index``
  uint64 sorted, ``DM_reliable_min``/``DM_reliable_max`` float32, ``converged``/``infilled``
  uint8) plus ``coarse_start`` (int64, see :class:`~dustmaps_ext._core.pixels.PixelIndex`).
  ``healpix_index`` lists the pixels present: a cutout is a compact file of some pixels;
* ``record_offsets`` int64 (n_pix + 1): pixel ``p``'s record is
  ``records[record_offsets[p]:record_offsets[p + 1]]``;
* ``records`` uint8: the records, coded as :mod:`dustmaps_ext._core.profile_codec`
  describes (mean first, then the samples; each a monotone profile coded exactly);
* ``value_code_lengths`` / ``tuple_code_lengths`` / ``pair_code_lengths`` uint8: the lengths of the prefix codes
  the records use, fitted to the map's first pixels when it was written.

The format is documented for other programs in ``docs/compact_layout.rst``; its facts
(names, version, datasets) and its check live with the other DECaPS layouts in
:mod:`dustmaps_ext._io.decaps`, which this module extends.

:func:`write_compact` writes one from blocks of values in pixel order (what
:func:`repack_compact` and a cutout writer call); :class:`CompactStore` answers queries by
decoding only the records asked for; :func:`load_compact_in_memory` decodes all of it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import h5py
import numpy as np

from .._core import profile_codec
from .._core.threads import run_tasks
from .._core.voxel import VoxelStore
from ..errors import MapFileError
from ..progress import tqdm
from .decaps import (
    COMPACT_CODE_DATASETS,
    COMPACT_CODEC,
    COMPACT_LAYOUT,
    COMPACT_VERSION,
    REPACK_LAYOUTS,
    DecapsFileInfo,
    default_repacked_path,
    create_contiguous,
    inspect_decaps_file,
    map_datasets,
    published_blocks,
    pwrite_all,
    read_pixel_arrays,
    repack_pixel_major,
    write_pixel_info,
)
from .download import file_lock
from .files import atomic_output, open_hdf5, release_pages
from .stores import InMemoryStore

__all__ = ["COMPACT_CHUNK_COORDS", "CompactStore", "load_compact_in_memory", "repack_compact", "write_compact", "repack"]

logger = logging.getLogger(__name__)

#: Coordinates a memory-mapped compact file answers per chunk: decoding has a fixed cost per
#: chunk, and a compact record (~220 bytes) maps few pages (see ``DECaPSQueryLite``).
COMPACT_CHUNK_COORDS = 4096

_ENCODE_PIXELS = 8192  # pixels encoded per task
_FIT_PIXELS = 65536  # pixels (spread over the first block) the prefix codes are fitted to
_DECODE_PIXELS = 65536  # pixels decoded per task when loading a whole file
_COPY_BYTES = 64 << 20
_ALL_DISTANCES = np.empty(0, dtype=np.int64)


# --------------------------------------------------------------------------- reading
def _raise_decode_error(path: Path, code: int) -> None:
    what = profile_codec.DECODE_ERRORS.get(code, "undecodable record")
    raise MapFileError(f"{path} is corrupt: {what} (compact layout); download or repack it again")


class CompactStore(VoxelStore):
    """A compact file, memory-mapped; a query decodes only the records of its pixels, and
    of those only the slots it reads and, with distances, the distances it interpolates.

    Parameters
    ----------
    info : DecapsFileInfo
        A compact file (see :func:`~dustmaps_ext._io.decaps.inspect_decaps_file`).
    mean_only : bool
        Answer the mean only.
    chunk_coords : int
        Coordinates answered between two releases of the mapped pages.
    """

    decodes_prefix = True
    #: decoding costs more than reading: queries this large already run on the package's threads
    parallel_min_coords = 8192

    def __init__(self, info: DecapsFileInfo, *, mean_only: bool = False,
                 chunk_coords: int = COMPACT_CHUNK_COORDS) -> None:
        if info.layout != "compact":
            raise ValueError("CompactStore needs a compact file; call repack() first")
        self.info = info
        self.chunk_coords = int(chunk_coords)
        self.n_samples = 0 if mean_only else info.n_samples
        self._mmap, views, self.pixels = map_datasets(info, ["records", "record_offsets"])
        self._records = views["records"]
        self._offsets = views["record_offsets"]
        self._n_slots = 1 + info.n_samples
        self.codes = read_codes(info.path)

    def decode_into(self, rows: np.ndarray, n_read: int, out: np.ndarray,
                    upto: np.ndarray | None = None) -> None:
        """Decode the first ``n_read`` slots of pixels ``rows`` into ``out`` (uint16,
        (len(rows), >= n_read, n_dist)): all distances, or the first ``upto[j]`` of row ``j``.

        Raises
        ------
        MapFileError
            If a record is corrupt.
        """
        prefix = _ALL_DISTANCES if upto is None else np.ascontiguousarray(upto, dtype=np.int64)
        done = profile_codec.decode_rows(self._records, self._offsets, rows, self._n_slots, n_read,
                                         prefix, self.info.n_dist, profile_codec.CENT_TABLE,
                                         profile_codec.FLOAT_TABLE, self.codes.value_lookup,
                                         self.codes.tuple_lookup, self.codes.pair_lookup, out)
        if done < 0:
            _raise_decode_error(self.info.path, done)

    def data_for(self, rows: np.ndarray, want_samples: bool, upto: np.ndarray | None = None):
        """See :meth:`~dustmaps_ext._core.voxel.VoxelStore.data_for`; with ``upto`` (one per
        row) only each row's first ``upto`` distances are decoded (the rest of the block is
        undefined)."""
        inside = rows >= 0
        n_read = 1 + self.n_samples if want_samples else 1
        local = np.full(rows.shape, -1, dtype=np.int64)
        in_rows = rows[inside]
        if upto is None:
            uniq, inverse = np.unique(in_rows, return_inverse=True)
            wanted = None
        else:  # per distinct row, the longest prefix its coordinates need
            order = np.argsort(in_rows, kind="stable")
            sorted_rows = in_rows[order]
            first = np.ones(sorted_rows.size, dtype=bool)
            first[1:] = sorted_rows[1:] != sorted_rows[:-1]
            starts = np.flatnonzero(first)
            uniq = sorted_rows[starts]
            inverse = np.empty(in_rows.size, dtype=np.int64)
            inverse[order] = np.cumsum(first) - 1
            wanted = np.maximum.reduceat(np.asarray(upto)[inside][order], starts) if starts.size else starts
        block = np.empty((uniq.size, n_read, self.info.n_dist), dtype=np.uint16)
        local[inside] = inverse
        if uniq.size:
            self.decode_into(uniq, n_read, block, wanted)
        return block, local

    def release(self) -> None:
        """Drop the mapped pages from this process's resident set (they stay in the page cache)."""
        release_pages(self._mmap)


def read_codes(path) -> profile_codec.PrefixCodes:
    """The prefix codes of a compact file (checked when the file was inspected)."""
    with open_hdf5(path, "DECaPS map") as f:
        return profile_codec.PrefixCodes(*(f[name][()] for name in COMPACT_CODE_DATASETS))


def load_compact_in_memory(info: DecapsFileInfo, *, n_samples: int, progress: bool = True) -> InMemoryStore:
    """Decode a compact file whole into RAM with ``n_samples`` sample slots.

    Records are decoded in blocks on the package's threads
    (:func:`~dustmaps_ext._core.threads.run_tasks`) straight into the final array; the
    mapped pages are released after each block.
    """
    store = CompactStore(info, chunk_coords=1)
    n_read = 1 + n_samples
    data = np.empty((info.n_pix, n_read, info.n_dist), dtype=np.uint16)
    blocks = [(a, min(a + _DECODE_PIXELS, info.n_pix)) for a in range(0, info.n_pix, _DECODE_PIXELS)]
    offsets = store._offsets

    with tqdm(total=info.n_pix, desc="Loading DECaPS map", unit="pix", unit_scale=True,
              disable=not progress) as bar:
        def decode(block):
            a, b = block
            store.decode_into(np.arange(a, b), n_read, data[a:b])
            if b > a:
                release_pages(store._mmap, int(offsets[a]), int(offsets[b]))
            bar.update(b - a)

        run_tasks(decode, blocks)
    store.release()
    with open_hdf5(info.path, "DECaPS map") as f:
        pixels = read_pixel_arrays(f, info)
    return InMemoryStore(info, data, pixels)


# --------------------------------------------------------------------------- writing
def fit_codes(values: np.ndarray) -> profile_codec.PrefixCodes:
    """Prefix codes fitted to at most ``_FIT_PIXELS`` pixels spread over ``values``."""
    return profile_codec.PrefixCodes.fit(values[::max(1, -(-values.shape[0] // _FIT_PIXELS))])


def _encode_block(values: np.ndarray, codes: profile_codec.PrefixCodes) -> tuple[np.ndarray, np.ndarray]:
    """Records of a block of pixels (uint16 values) and their offsets (n + 1, from 0)."""
    n, n_slots, n_dist = values.shape
    out = np.empty(n * profile_codec.max_record_bytes(n_slots, n_dist), dtype=np.uint8)
    offsets = np.empty(n + 1, dtype=np.int64)
    used = profile_codec.encode_pixels(np.ascontiguousarray(values), profile_codec.CENT_TABLE,
                                       profile_codec.FLOAT_TABLE, codes.value_codes, codes.value_lengths,
                                       codes.tuple_codes, codes.tuple_lengths, codes.pair_codes, codes.pair_lengths,
                                       out, offsets, 0)
    if used < 0:
        raise ValueError(f"{n_dist} distances are too many for the compact layout")
    return out[:used], offsets


def write_compact(dst, *, nside: int, dm_bin_edges, n_samples: int,
                  pixel_columns: Mapping[str, object], value_blocks: Iterable[np.ndarray],
                  pixel_attrs: Mapping[str, object] | None = None, source: str = "",
                  coarse_nside: int = 256, progress: bool = False) -> Path:
    """Write a compact DECaPS file from per-pixel columns and blocks of values.

    This is the one writer of the layout: :func:`repack_compact` feeds it a published
    file chunk row by chunk row; a cutout writer feeds it the pixels it has.

    Parameters
    ----------
    dst : str or Path
        Output; written through a temporary file beside it (plus two side files) that
        replaces it only when complete (:func:`~dustmaps_ext._io.files.atomic_output`),
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
        h5py datasets) of length n_pix, read in slices; other columns of that length (e.g.
        a built map's ``n_stars``, ``no_reliable_range``) are copied as they are.
    value_blocks : iterable of numpy.ndarray
        Consecutive blocks, in the order of ``healpix_index``, of shape
        (m, 1 + n_samples, n_dist), float16 or their uint16 bit patterns (slot 0 the
        mean); together exactly n_pix pixels.
    pixel_attrs : mapping, optional
        Further ``pixel_info`` attributes to keep (the release's).
    source : str
        The file the values come from: named in error messages, its file name recorded as
        the ``source`` attribute.
    coarse_nside : int
        nside of the coarse pixel index.
    progress : bool
        Show a progress bar.

    Returns
    -------
    Path
        ``dst``.
    """
    dst = Path(dst)
    edges = np.asarray(dm_bin_edges, dtype=np.float32)
    n_dist, n_slots = edges.size, 1 + int(n_samples)
    n_pix = int(np.shape(pixel_columns["healpix_index"])[0])
    coarse_nside = min(int(coarse_nside), int(nside))
    with atomic_output(dst) as partial:
        side_records = partial.with_name(partial.name + ".records")
        side_offsets = partial.with_name(partial.name + ".offsets")
        try:
            n_records, codes = _write_records(side_records, side_offsets, value_blocks, n_pix=n_pix,
                                              n_slots=n_slots, n_dist=n_dist, progress=progress)
            with h5py.File(partial, "w") as out:
                out.attrs["layout"] = COMPACT_LAYOUT
                out.attrs["layout_version"] = COMPACT_VERSION
                out.attrs["codec"] = COMPACT_CODEC
                out.attrs["n_slots"] = np.int64(n_slots)
                out.attrs["source"] = Path(str(source)).name  # (messages name the whole path)
                attrs = {**(pixel_attrs or {}), "nside": np.int64(nside), "DM_bin_edges": edges,
                         "n_samples": np.int64(n_samples)}
                write_pixel_info(out, pixel_columns, nside=int(nside), n_pix=n_pix,
                                 coarse_nside=coarse_nside, attrs=attrs, source=str(source or dst))
                where = {name: create_contiguous(out, name, h5type, (count,)).id.get_offset()
                         for name, h5type, count in (("record_offsets", h5py.h5t.STD_I64LE, n_pix + 1),
                                                     ("records", h5py.h5t.STD_U8LE, n_records))}
                for name, lengths in zip(COMPACT_CODE_DATASETS,
                                         (codes.value_lengths, codes.tuple_lengths, codes.pair_lengths)):
                    out.create_dataset(name, data=lengths.astype(np.uint8))
            _copy_into(partial, {where["records"]: side_records, where["record_offsets"]: side_offsets})
            with h5py.File(partial, "r+") as out:
                out.attrs["complete"] = True
        finally:
            side_records.unlink(missing_ok=True)
            side_offsets.unlink(missing_ok=True)
    return dst


def _write_records(side_records: Path, side_offsets: Path, value_blocks, *, n_pix: int,
                   n_slots: int, n_dist: int, progress: bool) -> tuple[int, profile_codec.PrefixCodes]:
    """Encode the value blocks into two side files (records, offsets) with prefix codes
    fitted to the first block; return the bytes of records and the codes."""
    written = 0
    pixels_done = 0
    codes = None
    with open(side_records, "wb") as rec, open(side_offsets, "wb") as off, \
            tqdm(total=n_pix, desc="Writing compact DECaPS", unit="pix", unit_scale=True,
                 disable=not progress) as bar:
        for block in value_blocks:
            block = np.asarray(block)
            if block.ndim != 3 or block.shape[1:] != (n_slots, n_dist):
                raise ValueError(f"value blocks must have shape (m, {n_slots}, {n_dist}); "
                                 f"got {block.shape}")
            if block.dtype not in (np.float16, np.uint16):
                raise ValueError(f"value blocks must be float16 (or uint16 bit patterns); got {block.dtype}")
            pixels_done += block.shape[0]
            if pixels_done > n_pix:
                raise ValueError(f"value blocks hold more than the {n_pix} pixels of healpix_index")
            bits = block.view(np.uint16)
            if codes is None:
                codes = fit_codes(bits)
            parts = [bits[a:a + _ENCODE_PIXELS] for a in range(0, bits.shape[0], _ENCODE_PIXELS)]
            encoded = [None] * len(parts)

            def encode(k):
                encoded[k] = _encode_block(parts[k], codes)

            run_tasks(encode, range(len(parts)))
            for records, offsets in encoded:
                off.write((offsets[:-1] + written).tobytes())
                rec.write(records.tobytes())
                written += records.size
            bar.update(bits.shape[0])
        if pixels_done != n_pix:
            raise ValueError(f"value blocks hold {pixels_done} pixels; healpix_index has {n_pix}")
        off.write(np.int64(written).tobytes())
    if codes is None:  # no pixels
        codes = fit_codes(np.empty((0, n_slots, n_dist), dtype=np.uint16))
    return written, codes


def _copy_into(path: Path, sources: Mapping[int, Path]) -> None:
    """Copy each side file into ``path`` at its byte offset (the contiguous datasets)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for pos, side in sources.items():
            with open(side, "rb") as fh:
                while chunk := fh.read(_COPY_BYTES):
                    pwrite_all(fd, memoryview(chunk), pos)
                    pos += len(chunk)
    finally:
        os.close(fd)


def repack_compact(src, dst, *, progress: bool = True, coarse_nside: int = 256) -> Path:
    """Convert a published-layout DECaPS file into the compact layout.

    Streams the source one published chunk row at a time (each chunk is decompressed
    once), encodes it on the package's threads and writes ``dst`` atomically (see
    :func:`write_compact`). Memory: one chunk row of values (about 290 MB for the release)
    plus its encoded records.
    """
    src, dst = Path(src), Path(dst)
    info = inspect_decaps_file(src)
    if info.layout != "published":
        raise ValueError(f"{src} is already in the {info.layout} layout")
    with file_lock(dst, action="repacked"), h5py.File(src, "r") as f:
        grp = f["pixel_info"]
        result = write_compact(dst, nside=info.nside, dm_bin_edges=info.dm_bin_edges,
                               n_samples=info.n_samples,
                               pixel_columns=grp,
                               value_blocks=(view for _, _, view in published_blocks(f, info)),
                               pixel_attrs=dict(grp.attrs), source=str(src),
                               coarse_nside=coarse_nside, progress=progress)
    logger.info("repacked %s -> %s (compact layout)", src, dst)
    return result


def repack(src, dst=None, *, progress: bool = True, layout: str = "compact") -> Path:
    """Convert a published DECaPS file into a fast layout of the query classes.

    Streams the source with bounded memory (one published chunk row, ~290 MB) and shows a
    progress bar; ``dst`` appears only when complete.

    Parameters
    ----------
    src : str or Path
        Published-layout file.
    dst : str or Path, optional
        Output; default ``<src stem>_repacked.h5`` beside ``src``.
    progress : bool
        Show a tqdm progress bar.
    layout : {'compact', 'pixel-major'}
        ``'compact'`` (default): lossless, about 0.15 of the uncompressed values and
        smaller than the release (see :doc:`/compact_layout`); random queries decode only
        the pixels they touch (:func:`repack_compact`). ``'pixel-major'``: uncompressed
        float16, memory-mapped as is (74 GB for the release); resumes after an
        interruption (:func:`~dustmaps_ext._io.decaps.repack_pixel_major`).

    Returns
    -------
    Path
        The repacked file.
    """
    if layout not in REPACK_LAYOUTS:
        raise ValueError(f"layout must be one of {REPACK_LAYOUTS}; got {layout!r}")
    if layout == "pixel-major":
        return repack_pixel_major(src, dst, progress=progress)
    dst = Path(dst) if dst is not None else default_repacked_path(src)
    return repack_compact(src, dst, progress=progress)
