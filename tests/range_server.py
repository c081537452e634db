"""The fake Dataverse of :mod:`tests.fake_dataverse`, with latency, range faults and counting.

:class:`RangeServer` serves like :class:`tests.fake_dataverse.FakeServer` (DOI lookup, the
access API's redirect to the store, ``Range: bytes=a-b`` answered with 206 and
``Content-Range``) and adds what region cutouts are tested against:

* :attr:`RangeServer.latency_s`: a delay before every answer (a distant server);
* faults, queued per path with :meth:`FakeServer.inject` as there (``"drop"`` sends half of
  the asked range and closes the connection; an integer answers that status), plus
  ``"wrong_range"`` (206 with the bytes and ``Content-Range`` of the range shifted by one
  byte) and ``"ignore_range"`` (200 with the whole file);
* :attr:`RangeServer.body_bytes`: file bytes sent per path (bodies of faults included, error
  pages not), and :meth:`RangeServer.ranges` the ``(first, last)`` ranges asked per path.

Sockets use ``TCP_NODELAY`` so that small answers are not held back by Nagle's algorithm.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from tests.fake_dataverse import FakeServer, _Handler, _QuietServer, _Resource

__all__ = ["RangeServer"]


@dataclass
class RangeServer(FakeServer):
    """A :class:`FakeServer` with latency, more range faults and byte counting."""

    latency_s: float = 0.0
    body_bytes: dict = field(default_factory=lambda: defaultdict(int))

    def start(self) -> "RangeServer":
        server = self

        class Handler(_RangeHandler):
            fake = server

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def ranges(self, path: str) -> list[tuple[int, int | None]]:
        """``(first, last)`` of every Range request of ``path`` (last None for ``a-``)."""
        out = []
        for r in self.requests_for(path):
            if r.range:
                first, _, last = r.range.removeprefix("bytes=").partition("-")
                out.append((int(first), int(last) if last else None))
        return out

    def reset_counts(self) -> None:
        """Forget the request log and the byte counts."""
        self.log.clear()
        self.body_bytes.clear()


class _RangeHandler(_Handler):
    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802
        if self.fake.latency_s:
            time.sleep(self.fake.latency_s)
        path = self.path.split("?", 1)[0]
        faults = self.fake._faults.get(path)
        if faults and faults[0] in ("wrong_range", "ignore_range"):
            fault = faults.popleft()
            resource = self.fake._resources[path]
            self._serve_range(path, resource, shift=1 if fault == "wrong_range" else 0,
                              whole=fault == "ignore_range", drop=False)
            return
        super().do_GET()

    def _serve(self, path: str, resource: _Resource, drop: bool) -> None:
        self._serve_range(path, resource, shift=0, whole=path in self.fake.ignore_range,
                          drop=drop)

    def _serve_range(self, path: str, resource: _Resource, *, shift: int, whole: bool,
                     drop: bool) -> None:
        content = resource.content
        size = len(content)
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        if rng and not whole:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start = int(first)
            end = min(int(last) + 1, size) if last else size
            if start >= size:
                self._simple(416, b"")
                return
            start, end = min(start + shift, size - 1), min(end + shift, size)
            status = 206
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", resource.content_type)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        body = memoryview(content)[start:end]
        if drop:
            body = body[: len(body) // 2]
        try:
            self.wfile.write(body)
            self.wfile.flush()
            self.fake.body_bytes[path] += len(body)
            if drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
