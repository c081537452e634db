"""The fake Dataverse of :mod:`tests.helpers.fake_dataverse`, with latency, range faults and counting.

:class:`RangeServer` serves like :class:`tests.helpers.fake_dataverse.FakeServer` (DOI lookup, the
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
import time
from collections import defaultdict
from dataclasses import dataclass, field

from helpers.fake_dataverse import FakeServer, _Handler

__all__ = ["RangeServer"]


@dataclass
class RangeServer(FakeServer):
    """A :class:`FakeServer` with latency, more range faults and byte counting."""

    latency_s: float = 0.0
    body_bytes: dict = field(default_factory=lambda: defaultdict(int))

    def start(self) -> RangeServer:
        """Start serving (as :meth:`FakeServer.start`) with the range-aware handler."""
        super().start()
        server = self

        class Handler(_RangeHandler):
            fake = server

        self._httpd.RequestHandlerClass = Handler
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


class _CountingWriter:
    """Counts the body bytes written through a handler's ``wfile`` (headers excluded)."""

    def __init__(self, handler: _RangeHandler, raw) -> None:
        self._handler = handler
        self._raw = raw

    def write(self, data) -> int:
        n = self._raw.write(data)
        if self._handler.in_body:
            self._handler.fake.body_bytes[self._handler.served_path] += len(data)
        return n

    def __getattr__(self, name):
        return getattr(self._raw, name)


class _RangeHandler(_Handler):
    in_body = False
    served_path = ""
    _error_page = False

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.wfile = _CountingWriter(self, self.wfile)

    def end_headers(self) -> None:
        super().end_headers()
        self.in_body = self.command == "GET" and not self._error_page

    def do_GET(self) -> None:
        self.in_body = self._error_page = False
        self.served_path = self.path.split("?", 1)[0]
        if self.fake.latency_s:
            time.sleep(self.fake.latency_s)
        faults = self.fake._faults.get(self.served_path)
        if faults and faults[0] in ("wrong_range", "ignore_range"):
            fault = faults.popleft()
            asked = self.headers.get("Range")
            if fault == "ignore_range":
                del self.headers["Range"]
            elif asked:
                first, _, last = asked.removeprefix("bytes=").partition("-")
                self.headers.replace_header(
                    "Range", f"bytes={int(first) + 1}-" + (str(int(last) + 1) if last else ""))
        super().do_GET()

    def _simple(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self._error_page = True  # error pages and metadata are not file bytes
        super()._simple(status, body, content_type)
