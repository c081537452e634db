"""A small HTTP server on 127.0.0.1 that imitates Dataverse and a GitHub release, with faults.

It serves, from memory:

* ``GET /api/datasets/:persistentId?persistentId=doi:<doi>``: Dataverse dataset metadata
  (``data.latestVersion.files[*].dataFile`` with ``id``, ``filename``, ``filesize``, ``md5``,
  ``contentType``); an unknown DOI gets a 404 with a Dataverse-style JSON error;
* ``GET /api/access/datafile/<id>``: a 303 redirect to ``/store/<id>/<filename>`` (as Harvard's
  Dataverse redirects to its object store), which serves the bytes;
* any path added with :meth:`FakeServer.add_url` (e.g. the GitHub release asset, optionally
  behind a 302 as GitHub does).

Byte ranges (``Range: bytes=a-`` / ``a-b``) get 206 answers with ``Content-Range``, unless the
path is in :attr:`FakeServer.ignore_range` (then 200 and the whole file) or in
:attr:`FakeServer.wrong_range` (then 206 with the whole file and ``Content-Range: bytes
0-.../size``, whatever was asked). A path in :attr:`FakeServer.drop_every` has every answer cut
after that many body bytes (the connection is closed). Faults are queued per path with
:meth:`FakeServer.inject` and consumed one per request:

* ``"drop"``: announce the full length, send half of it, then close the connection;
* ``("drop", n)``: the same after ``n`` bytes of the body;
* ``("stall", n)``: send ``n`` bytes of the body, then send nothing for
  :attr:`FakeServer.hang_s` seconds and close the connection;
* an integer status (e.g. ``500``): answer that status with a short body;
* ``"hang"``: wait :attr:`FakeServer.hang_s` seconds before closing without an answer.

Every request is logged in :attr:`FakeServer.log`, with the body bytes sent. The server runs in daemon threads, stops
when its ``with`` block ends, and stops itself after ``lifetime_s`` seconds in any case.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeServer", "LoggedRequest"]


@dataclass
class LoggedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    range: str | None
    status: int | None = None
    sent: int = 0  # body bytes written to the socket


@dataclass
class _Resource:
    content: bytes
    content_type: str
    redirect_to: str | None = None  # answer with a redirect to this path instead


@dataclass
class FakeServer:
    """An imitation of Dataverse and of a GitHub release, on ``127.0.0.1`` port 0.

    Parameters
    ----------
    lifetime_s : float
        The server shuts itself down after this many seconds, whatever happens.
    hang_s : float
        How long a ``"hang"`` fault waits before closing the connection.
    """

    lifetime_s: float = 120.0
    hang_s: float = 1.0
    log: list[LoggedRequest] = field(default_factory=list)
    ignore_range: set[str] = field(default_factory=set)
    wrong_range: set[str] = field(default_factory=set)
    drop_every: dict[str, int] = field(default_factory=dict)
    _resources: dict[str, _Resource] = field(default_factory=dict)
    _datasets: dict[str, list[dict]] = field(default_factory=dict)
    _faults: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))
    _next_id: int = 11_838_924
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False

    # ----------------------------------------------------------------- content

    def add_dataverse_file(self, doi: str, filename: str, content: bytes, *,
                           md5: str | None = None, checksum_type: str | None = None,
                           content_type: str = "application/x-hdf5") -> int:
        """Publish ``content`` as ``filename`` in dataset ``doi``; returns the file id.

        ``md5`` overrides the checksum announced in the metadata (to inject a wrong one).
        ``checksum_type`` (e.g. ``"SHA-256"``) announces ``checksum: {type, value}`` instead of
        ``md5``, as Dataverse installations configured for another algorithm do.
        """
        with self._lock:
            file_id = self._next_id
            self._next_id += 1
        store = f"/store/{file_id}/{filename}"
        self._resources[store] = _Resource(content, content_type)
        self._resources[self.access_path(file_id)] = _Resource(b"", content_type,
                                                               redirect_to=store)
        data_file = {"id": file_id, "filename": filename, "filesize": len(content),
                     "contentType": content_type}
        if checksum_type is None:
            data_file["md5"] = md5 or hashlib.md5(content).hexdigest()
        else:
            algo = checksum_type.replace("-", "").lower()
            data_file["checksum"] = {"type": checksum_type,
                                     "value": hashlib.new(algo, content).hexdigest()}
        self._datasets.setdefault(doi, []).append({"label": filename, "dataFile": data_file})
        return file_id

    def add_dataset(self, doi: str) -> None:
        """Declare a dataset (possibly with no files)."""
        self._datasets.setdefault(doi, [])

    @staticmethod
    def access_path(file_id: int) -> str:
        """Path of the Dataverse access endpoint of a file."""
        return f"/api/access/datafile/{file_id}"

    def store_path(self, file_id: int) -> str:
        """Path that serves the bytes of a Dataverse file (after the access redirect)."""
        return self._resources[self.access_path(file_id)].redirect_to

    def add_url(self, path: str, content: bytes, *,
                content_type: str = "application/octet-stream", redirect: bool = False) -> str:
        """Serve ``content`` at ``path`` (behind a 302, as GitHub does, if ``redirect``)."""
        if redirect:
            target = "/release-assets" + path
            self._resources[target] = _Resource(content, content_type)
            self._resources[path] = _Resource(b"", content_type, redirect_to=target)
        else:
            self._resources[path] = _Resource(content, content_type)
        return self.url + path

    def inject(self, path: str, *faults) -> None:
        """Queue faults for the next requests of ``path`` (``"drop"``, ``("drop", n)``,
        ``("stall", n)``, ``"hang"`` or a status)."""
        self._faults[path].extend(faults)

    def requests_for(self, path: str) -> list[LoggedRequest]:
        """Logged requests of one path."""
        return [r for r in self.log if r.path == path]

    def bytes_sent(self, path: str) -> int:
        """Body bytes sent for one path over all its requests."""
        return sum(r.sent for r in self.requests_for(path))

    # ----------------------------------------------------------------- lifetime

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeServer:
        """Start serving in a daemon thread; returns self."""
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent; also called by the lifetime timer)."""
        with self._lock:
            if getattr(self, "_httpd", None) is None or self._stopped:
                return
            self._stopped = True
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """Clients that hang up (timeouts, dropped connections) are part of the tests."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeServer
    timeout = 30  # a stuck client cannot hold a server thread for ever

    def log_message(self, format, *args):  # keep test output clean
        pass

    def _log(self, status: int | None) -> LoggedRequest:
        entry = LoggedRequest("GET", urlsplit(self.path).path, self.headers.get("Range"), status)
        self.fake.log.append(entry)
        return entry

    def _simple(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        faults = self.fake._faults.get(path)
        fault = faults.popleft() if faults else None
        if isinstance(fault, int):
            self._simple(fault, f"injected HTTP {fault}\n".encode())
            return
        if fault == "hang":
            self._log(None)
            time.sleep(self.fake.hang_s)
            self.close_connection = True
            return
        if path == "/api/datasets/:persistentId":
            self._metadata(parse_qs(parts.query).get("persistentId", [""])[0])
            return
        resource = self.fake._resources.get(path)
        if resource is None:
            self._simple(404, b"not found\n")
            return
        if resource.redirect_to is not None:
            self._log(303)
            self.send_response(303 if path.startswith("/api/") else 302)
            self.send_header("Location", resource.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._serve(path, resource, fault)

    def _metadata(self, persistent_id: str) -> None:
        doi = persistent_id.removeprefix("doi:")
        files = self.fake._datasets.get(doi)
        if files is None:
            body = {"status": "ERROR", "message": f"Dataset with Persistent ID {persistent_id} "
                                                  "not found."}
            self._simple(404, json.dumps(body).encode(), "application/json")
            return
        body = {"status": "OK", "data": {"latestVersion": {"versionState": "RELEASED",
                                                           "files": files}}}
        self._simple(200, json.dumps(body).encode(), "application/json")

    def _serve(self, path: str, resource: _Resource, fault) -> None:
        content = resource.content
        size = len(content)
        start, end = 0, size
        status = 200
        rng = self.headers.get("Range")
        if rng and path in self.fake.wrong_range:
            status = 206  # claims a range, sends the file from byte 0
        elif rng and path not in self.fake.ignore_range:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start = int(first)
            end = int(last) + 1 if last else size
            if start >= size:
                self._log(416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        entry = self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", resource.content_type)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        body = memoryview(content)[start:end]
        cut, stall = None, False
        if fault == "drop":
            cut = len(body) // 2
        elif isinstance(fault, tuple) and fault[0] in ("drop", "stall"):
            cut, stall = fault[1], fault[0] == "stall"
        if path in self.fake.drop_every:
            cut = min(self.fake.drop_every[path], len(body) if cut is None else cut)
        try:
            if cut is None:
                self.wfile.write(body)
                entry.sent = len(body)
                return
            self.wfile.write(body[:cut])
            self.wfile.flush()
            entry.sent = min(cut, len(body))
            if stall:
                time.sleep(self.fake.hang_s)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
