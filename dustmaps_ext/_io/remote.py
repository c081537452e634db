"""A remote file read through HTTP Range requests: verified, retried, bounded, cached.

:class:`RangeReader` fetches byte ranges of one URL with the download engine's retry policy
(:func:`.download._run_with_retries`): each answer must be ``206`` with a ``Content-Range``
that matches what was asked and the file's total size, and a body of exactly that length;
a connection dropped mid-range keeps the bytes received and asks for the rest; timeouts,
drops and 5xx answers are retried with backoff; the total bytes and requests are bounded
(:class:`TransferBudgetError` when a bound is reached), so a misbehaving server can never
make a cutout download more than it should.

:class:`RemoteFile` is a read-only, seekable file object over a :class:`RangeReader`, so that
``h5py.File(RemoteFile(...), "r")`` opens a remote HDF5 file. Small reads (HDF5 metadata:
superblock, object headers, B-tree nodes, single elements) go through a block cache
(:class:`BlockCache`) that can be saved next to a local product and loaded again, so that a
later session re-reads none of the metadata it has already seen; large reads (a slice of a
dataset) are fetched exactly and are not cached.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

from ..errors import TransferBudgetError
from .download import (
    DEFAULT_RETRY,
    DownloadError,
    RetryPolicy,
    _body_pieces,
    _check_status,
    _content_range,
    _Retryable,
    _run_with_retries,
    _session,
)

__all__ = ["BlockCache", "RangeReader", "RemoteFile", "TransferBudgetError", "TransferStats"]

logger = logging.getLogger(__name__)

#: Bytes per cached block of a :class:`RemoteFile` (HDF5 metadata pieces are 0.1-4 kB).
METADATA_BLOCK = 32 * 1024
#: Reads at least this long bypass the block cache (dataset slices, not metadata).
BULK_READ = 256 * 1024
# statuses that mean a redirected (signed, expiring) URL is no longer valid
_STALE_REDIRECT = frozenset({401, 403, 404, 410})


@dataclass
class TransferStats:
    """What a :class:`RangeReader` has done: HTTP requests sent and body bytes received."""

    requests: int = 0
    bytes: int = 0


class RangeReader:
    """Verified byte ranges of one URL.

    Parameters
    ----------
    url : str
        HTTP(S) URL of the file. Redirects are followed once and the final location is reused
        (the Dataverse access API redirects to an object store); when that location stops
        answering (an expired signed URL), ``url`` is asked again.
    size : int, optional
        The file's size in bytes, if published; otherwise it is learnt from the first answer.
        Every answer's ``Content-Range`` total must equal it.
    retry : RetryPolicy, optional
        Retry and timeout settings (default: the download engine's).
    session : requests.Session, optional
        Session to use (a new one by default; :meth:`close` closes only an own session).
    max_bytes, max_requests : int, optional
        Bounds on the body bytes received and the requests sent in total (None: unbounded);
        they may be changed between reads.
    """

    def __init__(self, url: str, *, size: int | None = None, retry: RetryPolicy | None = None,
                 session: requests.Session | None = None, max_bytes: int | None = None,
                 max_requests: int | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://; got {url!r}")
        self.url = url
        self._location = url
        self.size = None if size is None else int(size)
        self.retry = retry or DEFAULT_RETRY
        self._own_session = session is None
        self._session = _session(session)
        self.max_bytes = max_bytes
        self.max_requests = max_requests
        self.stats = TransferStats()

    def close(self) -> None:
        """Close the session if this reader created it."""
        if self._own_session:
            self._session.close()

    def __enter__(self) -> RangeReader:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def file_size(self) -> int:
        """The remote file's size (one small request if it is not known yet)."""
        if self.size is None:
            self.fetch(0, 1)
        return self.size

    def _charge(self, n_bytes: int) -> None:
        if self.max_requests is not None and self.stats.requests + 1 > self.max_requests:
            raise TransferBudgetError(
                f"reading {self.url} needs more than the {self.max_requests} HTTP requests "
                "allowed for this transfer; the server keeps failing or answering short")
        if self.max_bytes is not None and self.stats.bytes + n_bytes > self.max_bytes:
            raise TransferBudgetError(
                f"reading {self.url} needs more than the {self.max_bytes} bytes allowed for "
                "this transfer; the server keeps failing or answering short")

    def fetch(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of the file, verified; partial answers are resumed.

        Raises
        ------
        DownloadError
            A 4xx answer, a server that ignores ``Range``, an answer for other bytes or of
            another file size, or retries exhausted.
        TransferBudgetError
            The byte or request bound would be exceeded.
        """
        start, stop = int(start), int(stop)
        if start < 0 or stop <= start:
            raise ValueError(f"invalid byte range [{start}, {stop})")
        if self.size is not None and stop > self.size:
            raise ValueError(f"byte range [{start}, {stop}) lies beyond the end of the "
                             f"{self.size}-byte file {self.url}")
        out = bytearray()
        state = {"progressed": False}

        def attempt() -> None:
            state["progressed"] = False
            first = start + len(out)
            if first >= stop:
                return
            self._charge(stop - first)
            self.stats.requests += 1
            headers = {"Range": f"bytes={first}-{stop - 1}", "Accept-Encoding": "identity"}
            with self._session.get(self._location, headers=headers, stream=True,
                                   timeout=self.retry.timeout) as resp:
                if resp.status_code in _STALE_REDIRECT and self._location != self.url:
                    logger.info("%s answered HTTP %d; asking %s again", self._location,
                                resp.status_code, self.url)
                    self._location = self.url
                    raise _Retryable(f"redirected location answered HTTP {resp.status_code}")
                _check_status(resp, f"reading bytes {first}-{stop - 1} of {self.url}")
                if resp.status_code != 206:
                    raise DownloadError(
                        f"{self.url} answered HTTP {resp.status_code} to a Range request instead "
                        "of 206 Partial Content: the server does not serve byte ranges, so "
                        "region cutouts cannot be read from it (fetch the whole map instead)")
                self._check_range(resp, first, stop)
                self._location = resp.url or self._location
                for piece in _body_pieces(resp, 1 << 20):
                    if len(out) + len(piece) > stop - start:
                        raise DownloadError(f"{self.url} sent more bytes than the range "
                                            f"{first}-{stop - 1} it announced")
                    out.extend(piece)
                    self.stats.bytes += len(piece)
                    state["progressed"] = True
            if start + len(out) < stop:
                raise _Retryable(f"connection closed after {start + len(out) - first} of "
                                 f"{stop - first} bytes of a range")

        _run_with_retries(attempt, self.retry, f"reading bytes {start}-{stop - 1} of {self.url}",
                          made_progress=lambda: state["progressed"], url=self._location)
        return bytes(out)

    def _check_range(self, resp: requests.Response, first: int, stop: int) -> None:
        value = resp.headers.get("Content-Range", "")
        parsed = _content_range(resp)
        if parsed is None or parsed[0] is None:
            raise DownloadError(f"{self.url} answered a Range request without a usable "
                                f"Content-Range header ({value!r})")
        got_first, total = parsed[0], parsed[-1]
        try:
            got_last = int(value.split(" ", 1)[1].split("/", 1)[0].split("-", 1)[1])
        except (IndexError, ValueError):
            got_last = None
        if got_first != first or got_last != stop - 1:
            raise _Retryable(f"asked for bytes {first}-{stop - 1} and got Content-Range {value!r}")
        if total is not None:
            if self.size is None:
                self.size = int(total)
            elif total != self.size:
                raise DownloadError(f"{self.url} is {total} bytes long, not {self.size}: it is "
                                    "not the file expected (a new version of the release?)")
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) != stop - first:
            raise _Retryable(f"Content-Length {length} does not match the range "
                             f"{first}-{stop - 1}")


class BlockCache:
    """Fixed-size blocks of one remote file, kept in memory and optionally saved to disk.

    Parameters
    ----------
    identity : dict
        What identifies the remote file (size, checksum, ...): a saved cache is used only for
        a file of the same identity.
    block_size : int
        Bytes per block.
    """

    def __init__(self, identity: dict, block_size: int = METADATA_BLOCK) -> None:
        self.identity = dict(identity, block_size=int(block_size))
        self.block_size = int(block_size)
        self.blocks: dict[int, bytes] = {}

    @classmethod
    def load(cls, path: str | os.PathLike, identity: dict,
             block_size: int = METADATA_BLOCK) -> BlockCache:
        """The cache saved at ``path`` if it belongs to the same file, else an empty one."""
        cache = cls(identity, block_size)
        try:
            with np.load(path, allow_pickle=False) as saved:
                if json.loads(str(saved["identity"])) != cache.identity:
                    logger.info("%s belongs to another file; not using it", path)
                    return cache
                numbers, lengths, data = saved["numbers"], saved["lengths"], saved["data"]
        except (OSError, ValueError, KeyError):
            return cache
        ends = np.cumsum(lengths)
        for k, end, n in zip(numbers, ends, lengths):
            cache.blocks[int(k)] = data[end - n:end].tobytes()
        return cache

    def save(self, path: str | os.PathLike) -> None:
        """Write the cache to ``path`` atomically."""
        path = Path(path)
        numbers = np.array(sorted(self.blocks), dtype=np.int64)
        lengths = np.array([len(self.blocks[k]) for k in numbers], dtype=np.int64)
        data = np.frombuffer(b"".join(self.blocks[k] for k in numbers), dtype=np.uint8)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, identity=np.array(json.dumps(self.identity, sort_keys=True)),
                     numbers=numbers, lengths=lengths, data=data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


class RemoteFile(io.RawIOBase):
    """A read-only, seekable file object over HTTP Range requests (for ``h5py.File``).

    Parameters
    ----------
    reader : RangeReader
        Where the bytes come from.
    cache : BlockCache, optional
        Block cache of small reads (a new in-memory one by default).
    bulk_read : int
        Reads of at least this many bytes are fetched exactly, without the cache.
    """

    def __init__(self, reader: RangeReader, cache: BlockCache | None = None, *,
                 bulk_read: int = BULK_READ) -> None:
        super().__init__()
        self.reader = reader
        self.size = reader.file_size()
        self.cache = cache if cache is not None else BlockCache({"size": self.size})
        self.bulk_read = int(bulk_read)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        pos = base + int(offset)
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self.size - self._pos))
        if n == 0:
            return 0
        view[:n] = self.read_range(self._pos, self._pos + n)
        self._pos += n
        return n

    def read_range(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)``: small ranges through the block cache, large ones directly."""
        if stop - start >= self.bulk_read:
            return self.reader.fetch(start, stop)
        bs = self.cache.block_size
        first, last = start // bs, (stop - 1) // bs
        missing = [k for k in range(first, last + 1) if k not in self.cache.blocks]
        runs: list[list[int]] = []
        for k in missing:  # contiguous missing blocks: one request
            if runs and runs[-1][1] == k:
                runs[-1][1] = k + 1
            else:
                runs.append([k, k + 1])
        for a, b in runs:
            data = self.reader.fetch(a * bs, min(b * bs, self.size))
            for k in range(a, b):
                self.cache.blocks[k] = data[(k - a) * bs:(k - a + 1) * bs]
        joined = b"".join(self.cache.blocks[k] for k in range(first, last + 1))
        return joined[start - first * bs:stop - first * bs]
