"""The one download engine of dustmaps_ext: resumable, retrying, verified, locked.

:func:`download` fetches one URL into one file so that a user on a flaky connection can
trust the result:

* bytes go to ``<dest>.part``; ``dest`` appears (``os.replace``, atomic on one file system)
  only after the size, the checksum and an optional caller check have passed, so a file under
  its final name is always a complete, verified file;
* an existing ``.part`` is resumed with an HTTP ``Range`` request, and every byte received
  is kept: the body is read as the network delivers it (not in whole blocks), and what was
  received before a dropped connection, a stall or a Ctrl-C is flushed and fsynced to the
  ``.part`` so that the next attempt (or the next call) resumes from the last byte written;
* an answer that does not continue the ``.part`` (a server that ignores ``Range`` and
  answers 200, or a ``Content-Range`` that does not start where it was asked to) makes the
  download start over from byte 0, at most :data:`MAX_RESTARTS` times, and the bytes received
  over all attempts are bounded (:data:`TRANSFER_BUDGET` times the file's size), so a server
  that does not honour ``Range`` and keeps dropping the connection fails with a clear error
  instead of downloading the start of the file for ever;
* timeouts, dropped connections and 5xx / 408 / 429 answers are retried with exponential
  backoff (:class:`RetryPolicy`); the count of consecutive failures is bounded and is reset
  whenever an attempt took the ``.part`` past its longest size so far;
* a host that cannot be reached at all (its name does not resolve, the network is
  unreachable, the connection is refused) gets one quick retry and then a one-line
  :class:`DownloadError` naming the host ("no network?") instead of minutes of backoff;
* free disk space is checked before the transfer starts (:func:`check_free_space`);
* a lock file ``<dest>.lock`` (:func:`file_lock`) makes a second fetch of the same file fail
  at once with a clear error instead of writing into the same ``.part``;
* the body is hashed while it streams and written through a 4 MiB buffer, and a tqdm bar
  (bytes, rate, ETA on stderr) shows progress unless ``progress=False``.

Nothing here knows about Dataverse, DOIs or particular maps: see :mod:`.dataverse` and
:mod:`.fetchers`.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from ..errors import (  # noqa: F401 (re-exported)
    ChecksumError,
    DownloadError,
    DownloadLockedError,
    InsufficientSpaceError,
)

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_RETRY",
    "MAX_RESTARTS",
    "TRANSFER_BUDGET",
    "ChecksumError",
    "DownloadError",
    "DownloadLockedError",
    "InsufficientSpaceError",
    "RetryPolicy",
    "check_free_space",
    "download",
    "file_digest",
    "file_lock",
    "format_bytes",
    "get_json",
]

logger = logging.getLogger(__name__)

#: Bytes written to disk at a time (the size of the write buffer), and the most bytes asked
#: of the socket in one read.
BLOCK_SIZE = 4 * 2**20

#: Times one download may start over from byte 0 because the server's answer does not
#: continue the ``.part`` (``Range`` ignored, a wrong ``Content-Range``, 416).
MAX_RESTARTS = 3

#: The bytes received over all attempts of one download may reach this many times the
#: file's size (plus :data:`BLOCK_SIZE`); past that the download fails.
TRANSFER_BUDGET = 4

#: Extra free space demanded beyond the bytes a download needs (file-system slack).
SPACE_MARGIN = 16 * 2**20

#: HTTP statuses worth retrying besides 5xx.
_RETRY_STATUSES = frozenset({408, 429})

#: A lock file whose owner cannot be read is considered stale after this many seconds.
_UNREADABLE_LOCK_GRACE_S = 60.0

#: Longest wait before the one retry given to a host that could not be reached at all.
_UNREACHABLE_RETRY_S = 0.5

# errno values of a connection attempt that says the machine cannot reach the host at all
_UNREACHABLE_ERRNOS = {
    errno.ENETUNREACH: "the network is unreachable",
    errno.EHOSTUNREACH: "no route to the host",
    errno.ECONNREFUSED: "the connection was refused",
    errno.ENETDOWN: "the network is down",
}

_sleep = time.sleep  # indirection so tests can record the backoff delays


class _Retryable(Exception):
    """Internal: a transient failure that the retry loop may try again."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up.

    Parameters
    ----------
    max_retries : int
        Consecutive failed attempts (without any new byte received) allowed after the first
        one; the total is bounded by ``max_retries + 1`` attempts per stretch of no progress.
    backoff_base : float
        Delay in seconds before the first retry; it doubles on each consecutive failure.
    backoff_max : float
        Upper bound of a single delay, in seconds.
    timeout : float or (float, float)
        ``requests`` timeout: seconds to connect and seconds without a byte while reading.
    """

    max_retries: int = 8
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    timeout: float | tuple[float, float] = (30.0, 120.0)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0; got {self.max_retries}")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must be >= 0")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        return min(self.backoff_max, self.backoff_base * 2.0 ** (failures - 1))


#: The policy used when a caller passes none (tests replace it with a fast one).
DEFAULT_RETRY = RetryPolicy()


def format_bytes(n: float) -> str:
    """A byte count for people: ``format_bytes(33.8e9) == '33.8 GB'`` (powers of 1000)."""
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000.0 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- disk space


def check_free_space(directory: str | os.PathLike, needed: int, *, what: str) -> None:
    """Raise :class:`InsufficientSpaceError` unless ``directory`` has ``needed`` bytes free.

    Parameters
    ----------
    directory : path
        A directory on the target file system (it must exist).
    needed : int
        Bytes that will be written there.
    what : str
        What the space is for, used in the message.
    """
    needed = max(0, int(needed))
    free = shutil.disk_usage(directory).free
    if needed + SPACE_MARGIN > free:
        raise InsufficientSpaceError(
            f"not enough free disk space in {directory} for {what}: it needs "
            f"{format_bytes(needed)} and only {format_bytes(free)} is free. Free some space, or "
            "point dustmaps' data directory at a larger disk "
            "(dustmaps.config.config['data_dir'] = '/path/with/space')")


# --------------------------------------------------------------------------- lock


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_owner(lock: Path) -> tuple[int, str] | None:
    try:
        pid_text, host = lock.read_text().split()
        return int(pid_text), host
    except (OSError, ValueError):
        return None


def _lock_is_stale(lock: Path) -> bool:
    owner = _lock_owner(lock)
    if owner is None:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > _UNREADABLE_LOCK_GRACE_S
    pid, host = owner
    return host == socket.gethostname() and not _pid_alive(pid)


@contextmanager
def file_lock(target: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock file ``<target>.lock`` for the duration of a ``with`` block.

    The lock is created with ``O_CREAT | O_EXCL`` and holds ``"<pid> <hostname>"``. A lock
    left behind by a process that no longer runs on this host is removed and taken over.

    Raises
    ------
    DownloadLockedError
        If another live process (or this one, from another thread) holds the lock.
    """
    target = Path(target)
    lock = target.with_name(target.name + ".lock")
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if attempt == 0 and _lock_is_stale(lock):
                logger.warning("removing stale lock %s (its process no longer runs)", lock)
                lock.unlink(missing_ok=True)
                continue
            owner = _lock_owner(lock)
            who = f"process {owner[0]} on {owner[1]}" if owner else "another process"
            raise DownloadLockedError(
                f"{target} is already being fetched by {who} (lock file {lock}). Wait for it "
                "to finish; if no such fetch is running any more, delete the lock file.") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    try:
        yield lock
    finally:
        try:
            if lock.read_text() == me:
                lock.unlink()
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------- hashing


def file_digest(path: str | os.PathLike, hash_name: str = "md5", *, block_size: int = BLOCK_SIZE,
                progress: bool = False, desc: str | None = None) -> str:
    """Hex digest of a file, read in large blocks.

    Parameters
    ----------
    path : path
        File to hash.
    hash_name : str
        Any :func:`hashlib.new` algorithm (``"md5"``, ``"sha1"``, ``"sha256"``, ...).
    block_size : int
        Bytes read at a time.
    progress : bool
        Show a tqdm bar (on stderr).
    desc : str, optional
        Label of the bar.
    """
    from ..progress import tqdm

    path = Path(path)
    hasher = hashlib.new(hash_name)
    buf = bytearray(block_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh, tqdm(
            total=path.stat().st_size, unit="B", unit_scale=True, disable=not progress,
            desc=desc or f"verify {path.name}", leave=False) as bar:
        while n := fh.readinto(buf):
            hasher.update(view[:n])
            bar.update(n)
    return hasher.hexdigest()


# --------------------------------------------------------------------------- retry loop


def _unreachable_reason(exc: BaseException) -> str | None:
    """Why the host could not be reached at all, if that is what ``exc`` says; else None.

    Walks the exception's causes (``requests`` wraps urllib3's errors, which wrap the
    socket's): a name that does not resolve, an unreachable network or host, a refused
    connection. Timeouts, resets and HTTP errors are not "unreachable".
    """
    stack, seen = [exc], set()
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, socket.gaierror) or type(err).__name__ == "NameResolutionError":
            return "its name could not be resolved"
        if isinstance(err, OSError) and err.errno in _UNREACHABLE_ERRNOS:
            return _UNREACHABLE_ERRNOS[err.errno]
        stack.extend([getattr(err, "reason", None), err.__cause__, err.__context__])
        stack.extend(a for a in err.args if isinstance(a, BaseException))
    return None


def _host_of(exc: BaseException, url: str | None) -> str:
    request = getattr(exc, "request", None)  # the request that failed, after any redirect
    return urlsplit(getattr(request, "url", None) or url or "").netloc or "the server"


def _run_with_retries(attempt: Callable[[], Any], policy: RetryPolicy, what: str,
                      made_progress: Callable[[], bool] = lambda: False,
                      url: str | None = None) -> Any:
    failures = 0
    unreachable_retried = False
    while True:
        try:
            return attempt()
        except requests.exceptions.SSLError as exc:  # a certificate problem does not go away
            raise DownloadError(f"{what} failed: {exc}") from exc
        except (_Retryable, requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            progressed = made_progress()
            reason = None if isinstance(exc, _Retryable) else _unreachable_reason(exc)
            if reason is not None and not progressed:
                host = _host_of(exc, url)
                if unreachable_retried:
                    raise DownloadError(f"{what} failed: cannot reach {host}: {reason} "
                                        "(no network?)") from None
                unreachable_retried = True
                wait = min(_UNREACHABLE_RETRY_S, policy.backoff_base)
                logger.warning("%s: cannot reach %s (%s); one retry in %.3g s", what, host,
                               reason, wait)
                _sleep(wait)
                continue
            failures = 1 if progressed else failures + 1
            if failures > policy.max_retries:
                raise DownloadError(f"{what} failed after {failures} attempts in a row: "
                                    f"{exc}") from exc
            wait = policy.delay(failures)
            logger.warning("%s: %s; retry %d of %d in %.3g s", what, exc, failures,
                           policy.max_retries, wait)
            _sleep(wait)


def _check_status(resp: requests.Response, what: str) -> None:
    code = resp.status_code
    if code >= 500 or code in _RETRY_STATUSES:
        raise _Retryable(f"server answered HTTP {code} {resp.reason}")
    if code >= 400:
        raise DownloadError(f"{what}: server answered HTTP {code} {resp.reason} for {resp.url}")


def _session(session: requests.Session | None) -> requests.Session:
    if session is not None:
        return session
    from .._version import __version__

    s = requests.Session()
    s.headers["User-Agent"] = f"dustmaps_ext/{__version__} python-requests/{requests.__version__}"
    return s


def get_json(url: str, *, params: dict | None = None, retry: RetryPolicy | None = None,
             session: requests.Session | None = None) -> Any:
    """GET a JSON document with the same retry policy as :func:`download`.

    Raises
    ------
    DownloadError
        On a 4xx answer, on a body that is not JSON, or when the retries are exhausted.
    """
    policy = retry or DEFAULT_RETRY
    sess = _session(session)
    own_session = session is None

    def attempt() -> Any:
        resp = sess.get(url, params=params, timeout=policy.timeout)
        with resp:
            _check_status(resp, f"GET {url}")
            try:
                return resp.json()
            except ValueError as exc:
                raise DownloadError(f"{resp.url} did not answer with JSON "
                                    f"(starts with {resp.text[:80]!r})") from exc

    try:
        return _run_with_retries(attempt, policy, f"GET {url}", url=url)
    finally:
        if own_session:
            sess.close()


# --------------------------------------------------------------------------- download


def _content_range(resp: requests.Response) -> tuple[int | None, int | None, int | None] | None:
    """(first byte, last byte, total length) from ``Content-Range: bytes a-b/total``.

    ``bytes */total`` gives ``(None, None, total)``; a ``*`` total gives None there. Returns
    None if there is no usable header.
    """
    value = resp.headers.get("Content-Range", "")
    try:
        unit, rest = value.strip().split(" ", 1)
        span, total = rest.split("/", 1)
        if unit.lower() != "bytes":
            return None
        total_n = None if total.strip() == "*" else int(total)
        if span.strip() == "*":
            return None, None, total_n
        first, last = (int(x) for x in span.split("-", 1))
        return first, last, total_n
    except ValueError:
        return None


def _range_problem(resp: requests.Response, offset: int, length: int | None) -> str | None:
    """Why a 206 answer cannot continue a ``.part`` of ``offset`` bytes; None if it can."""
    header = resp.headers.get("Content-Range")
    cr = _content_range(resp)
    if cr is None or cr[0] is None:
        return f"the answer to a resume at byte {offset} has no usable Content-Range ({header!r})"
    first, last, total = cr
    if first != offset or last < first or (total is not None and last >= total) or (
            length is not None and length != last - first + 1):
        return (f"the answer to a resume at byte {offset} has Content-Range {header!r}"
                + (f" with Content-Length {length}" if length is not None else ""))
    return None


def _body_pieces(resp: requests.Response, size: int) -> Iterator[bytes]:
    """The body as the network delivers it, at most ``size`` bytes at a time.

    Unlike ``iter_content(size)``, which collects ``size`` bytes before it yields and loses
    them all when the connection drops part way, every piece received is yielded at once.
    urllib3's errors are turned into the ``requests`` errors that the retry loop knows.
    """
    import urllib3.exceptions as u3

    raw = resp.raw
    read = getattr(raw, "read1", None)  # urllib3 >= 2: at most one read from the socket
    if read is None:  # urllib3 1.x: read(amt) returns what arrived before the connection ended
        size = min(size, 2**16)

        def read(amt):
            return raw.read(amt, decode_content=True)
    while True:
        try:
            piece = read(size)
        except u3.SSLError as exc:
            raise requests.exceptions.SSLError(exc, request=resp.request) from exc
        except u3.ReadTimeoutError as exc:
            raise requests.exceptions.ReadTimeout(exc, request=resp.request) from exc
        except u3.ProtocolError as exc:
            raise requests.exceptions.ChunkedEncodingError(exc, request=resp.request) from exc
        except (u3.HTTPError, OSError) as exc:
            raise requests.ConnectionError(exc, request=resp.request) from exc
        if not piece:
            return
        yield piece


def _verify_existing(dest: Path, expected_hash: str | None, hash_name: str,
                     expected_size: int | None, validate: Callable[[Path], None] | None,
                     progress: bool) -> None:
    hint = "delete it or pass clobber=True to download it again"
    if expected_size is not None and dest.stat().st_size != expected_size:
        raise ChecksumError(f"{dest} exists but has {dest.stat().st_size} bytes where the "
                            f"release has {expected_size}: {hint}")
    if expected_hash is not None:
        logger.info("verifying the %s checksum of the existing %s", hash_name, dest)
        got = file_digest(dest, hash_name, progress=progress)
        if got.lower() != expected_hash.lower():
            raise ChecksumError(f"{dest} exists but its {hash_name} is {got}, not the published "
                                f"{expected_hash} (a truncated or older file?): {hint}")
    if validate is not None:
        validate(dest)


def download(url: str, dest: str | os.PathLike, *, expected_hash: str | None = None,
             hash_name: str = "md5", expected_size: int | None = None, clobber: bool = False,
             progress: bool = True, desc: str | None = None, extra_bytes: int = 0,
             validate: Callable[[Path], None] | None = None, retry: RetryPolicy | None = None,
             block_size: int = BLOCK_SIZE, session: requests.Session | None = None,
             lock: bool = True) -> Path:
    """Download ``url`` to ``dest`` through ``<dest>.part``; resume, retry, verify, rename.

    Parameters
    ----------
    url : str
        HTTP(S) URL (redirects are followed).
    dest : path
        Final file name. Its folder is created if needed.
    expected_hash : str, optional
        Published hex digest; the download is refused (and its ``.part`` deleted) on mismatch.
    hash_name : str
        Algorithm of ``expected_hash`` (a :func:`hashlib.new` name), ``"md5"`` by default.
    expected_size : int, optional
        Published size in bytes; also used for the free-space check before the first request.
    clobber : bool
        Download again even if ``dest`` exists (an existing ``.part`` is discarded too).
        Without it, an existing ``dest`` is verified and returned, or a clear
        :class:`ChecksumError` says it does not match (it is never silently replaced).
    progress : bool
        Show a tqdm bar (bytes, rate, ETA) on stderr.
    desc : str, optional
        Label of the progress bar (default: the file name).
    extra_bytes : int
        Disk space needed after the download beside it (e.g. for unpacking), included in the
        free-space check.
    validate : callable, optional
        ``validate(path)`` raises if the downloaded bytes are not usable; it runs on the
        ``.part`` file before the rename (on failure the ``.part`` is deleted) and on an
        existing ``dest``.
    retry : RetryPolicy, optional
        Retry and timeout settings (default :data:`DEFAULT_RETRY`).
    block_size : int
        Bytes per read/write (default 4 MiB).
    session : requests.Session, optional
        Session to use (a new one by default).
    lock : bool
        Hold ``<dest>.lock`` during the download. Pass False only when the caller already
        holds :func:`file_lock` on ``dest``.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DownloadError
        Retries exhausted, or a 4xx answer, or an inconsistent server answer.
    ChecksumError
        Size or checksum mismatch (of the download, or of an existing ``dest``).
    DownloadLockedError
        The same file is being downloaded by another process.
    InsufficientSpaceError
        Not enough free disk space.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if lock:
        with file_lock(dest):
            return _download_locked(url, dest, expected_hash, hash_name, expected_size, clobber,
                                    progress, desc, extra_bytes, validate, retry, block_size,
                                    session)
    return _download_locked(url, dest, expected_hash, hash_name, expected_size, clobber,
                            progress, desc, extra_bytes, validate, retry, block_size, session)


def _download_locked(url, dest, expected_hash, hash_name, expected_size, clobber, progress,
                     desc, extra_bytes, validate, retry, block_size, session) -> Path:
    from ..progress import tqdm

    if block_size < 1:
        raise ValueError(f"block_size must be positive; got {block_size}")
    policy = retry or DEFAULT_RETRY
    part = dest.with_name(dest.name + ".part")
    if dest.exists() and not clobber:
        _verify_existing(dest, expected_hash, hash_name, expected_size, validate, progress)
        logger.info("%s is already present and verified; not downloading it again", dest)
        return dest
    if clobber:
        part.unlink(missing_ok=True)

    sess = _session(session)
    state: dict[str, Any] = {"hasher": hashlib.new(hash_name), "hashed": 0,
                             "space_checked": False, "longest": _size_of(part),
                             "restarts": 0, "received": 0, "total": expected_size}

    def ensure_space(remaining: int | None) -> None:
        if state["space_checked"] or remaining is None:
            return
        check_free_space(dest.parent, remaining + int(extra_bytes), what=f"downloading {dest.name}")
        state["space_checked"] = True

    def restart_part(why: str) -> None:
        """Start over from byte 0, a bounded number of times."""
        state["restarts"] += 1
        if state["restarts"] > MAX_RESTARTS:
            raise DownloadError(
                f"{url} does not honour HTTP Range requests: {why}, and {dest.name} had to "
                f"start over from byte 0 {MAX_RESTARTS} times already "
                f"({format_bytes(state['received'])} received in all); giving up. The bytes "
                f"kept are in {part}; try again later or from another source")
        logger.warning("%s; starting %s over from byte 0", why, dest.name)
        part.write_bytes(b"")
        state["hasher"] = hashlib.new(hash_name)
        state["hashed"] = 0

    def sync_hash(offset: int) -> None:
        if state["hashed"] != offset:  # a .part left by an earlier run: hash what is there
            hasher = hashlib.new(hash_name)
            with open(part, "rb") as fh:
                while block := fh.read(block_size):
                    hasher.update(block)
            state["hasher"], state["hashed"] = hasher, offset

    def count_received(n: int) -> None:
        state["received"] += n
        total = state["total"]
        if total is not None and state["received"] > TRANSFER_BUDGET * total + block_size:
            raise DownloadError(
                f"{url}: {format_bytes(state['received'])} received for a file of "
                f"{format_bytes(total)} ({state['restarts']} restarts from byte 0: the server "
                f"does not honour HTTP Range requests); giving up. The bytes kept are in {part}")

    def made_progress() -> bool:
        """Whether the .part is now longer than it ever was during this call."""
        size = _size_of(part)
        if size > state["longest"]:
            state["longest"] = size
            return True
        return False

    bar = tqdm(total=expected_size, unit="B", unit_scale=True, disable=not progress,
               desc=desc or dest.name, miniters=1, mininterval=0.5)

    def attempt() -> None:
        offset = _size_of(part)
        if expected_size is not None and offset > expected_size:
            restart_part(f"{part} is longer than the file ({offset} > {expected_size} bytes)")
            offset = 0
        ensure_space(None if expected_size is None else expected_size - offset)
        if expected_size is not None and offset == expected_size:
            return  # complete .part from an earlier run: only verification is left
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with sess.get(url, headers=headers, stream=True, timeout=policy.timeout) as resp:
            if resp.status_code == 416 and offset:
                cr = _content_range(resp)
                if cr is not None and cr[2] == offset:
                    return  # the .part already holds the whole file
                restart_part(f"the server refused to resume at byte {offset} (HTTP 416)")
                raise _Retryable("HTTP 416 Range Not Satisfiable")
            _check_status(resp, f"downloading {dest.name}")
            length = resp.headers.get("Content-Length")
            length = int(length) if length is not None and length.isdigit() else None
            if resp.status_code == 206:
                problem = _range_problem(resp, offset, length)
                if problem is not None:
                    restart_part(problem)
                    raise _Retryable(problem)
                total = _content_range(resp)[2]
                if total is None and length is not None:
                    total = offset + length
            else:
                if offset:
                    restart_part(f"the server ignored the Range request for byte {offset} "
                                 f"(HTTP {resp.status_code})")
                    offset = 0
                total = length
            if expected_size is not None and total is not None and total != expected_size:
                raise DownloadError(f"{url} serves {total} bytes but {dest.name} should have "
                                    f"{expected_size}: the server's file is not the one expected")
            if state["total"] is None:
                state["total"] = total
            ensure_space(None if total is None else total - offset)
            sync_hash(offset)
            bar.reset(total=total if total is not None else expected_size)
            bar.update(offset)
            written = offset
            hasher = state["hasher"]
            # every piece received is written (through the buffer) and hashed at once; on any
            # exit, Ctrl-C included, the buffer is flushed and fsynced, so the .part holds
            # every byte received and the next attempt resumes from its end
            with open(part, "ab", buffering=block_size) as fh:
                try:
                    for piece in _body_pieces(resp, block_size):
                        fh.write(piece)
                        hasher.update(piece)
                        state["hashed"] += len(piece)
                        written += len(piece)
                        count_received(len(piece))
                        bar.update(len(piece))
                finally:
                    fh.flush()
                    os.fsync(fh.fileno())
            if total is not None and written < total:
                raise _Retryable(f"connection closed after {written} of {total} bytes")

    try:
        part.touch()
        _run_with_retries(attempt, policy, f"downloading {url}", made_progress=made_progress,
                          url=url)
    finally:
        bar.close()
        if session is None:
            sess.close()

    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"download of {url} has {size} bytes, not the published "
                            f"{expected_size}; the partial file was removed, try again")
    sync_hash(size)
    if expected_hash is not None:
        got = state["hasher"].hexdigest()
        if got.lower() != expected_hash.lower():
            part.unlink(missing_ok=True)
            raise ChecksumError(f"download of {url} has {hash_name} {got}, not the published "
                                f"{expected_hash}; the corrupt file was removed and nothing was "
                                f"written to {dest}. Try again (a mirror may be out of date)")
    if validate is not None:
        try:
            validate(part)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    os.replace(part, dest)
    _fsync_dir(dest.parent)
    logger.info("downloaded %s (%s) to %s", url, format_bytes(size), dest)
    return dest


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _fsync_dir(directory: Path) -> None:
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
