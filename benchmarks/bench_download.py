"""Download throughput: dustmaps_ext's engine vs dustmaps' loop, a whole-block reader, curl.

A file of random bytes is served by ``python -m http.server`` in another process on
127.0.0.1, and downloaded with its MD5 checked by:

* ``dustmaps_ext._io.download.download`` (reads what the network delivers, writes through a
  4 MiB buffer, hashes while it streams);
* the whole-block reader it replaced: ``requests`` ``iter_content(4 MiB)``, write, hash;
* ``dustmaps.fetch_utils.download_and_verify`` (dustmaps 1.0.14);
* ``curl`` then ``md5sum``, and ``curl`` alone (no checksum).

Medians of ``--runs`` runs, reported in MB/s and as ratios to the engine. Writes
``benchmarks/results/bench_download.md`` (not with ``--quick``).

    python benchmarks/bench_download.py [--mb 200] [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import requests

from dustmaps_ext._io.download import download


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(directory: Path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                             "127.0.0.1", "--directory", str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def whole_blocks(url: str, dest: Path, md5: str) -> None:
    hasher = hashlib.md5()
    with requests.get(url, stream=True, timeout=60) as resp, open(dest, "wb") as fh:
        for block in resp.iter_content(chunk_size=4 * 2**20):
            fh.write(block)
            hasher.update(block)
    assert hasher.hexdigest() == md5


def with_dustmaps(url: str, dest: Path, md5: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from dustmaps.fetch_utils import download_and_verify
    with contextlib.redirect_stdout(io.StringIO()):
        download_and_verify(url, md5, fname=str(dest), clobber=True, verbose=False)


def with_curl(url: str, dest: Path, md5: str | None) -> None:
    subprocess.run(["curl", "-sS", "-o", str(dest), url], check=True)
    if md5 is not None:
        out = subprocess.run(["md5sum", str(dest)], check=True, capture_output=True, text=True)
        assert out.stdout.split()[0] == md5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    size_mb, runs = (50, 1) if args.quick else (args.mb, args.runs)

    methods = {
        "dustmaps_ext engine (MD5)": lambda u, d, m: download(u, d, expected_hash=m,
                                                              progress=False, clobber=True),
        "whole 4 MiB blocks, requests (MD5)": whole_blocks,
        "dustmaps 1.0.14 download_and_verify (MD5)": with_dustmaps,
    }
    if shutil.which("curl") and shutil.which("md5sum"):
        methods["curl, then md5sum"] = with_curl
        methods["curl alone (no checksum)"] = lambda u, d, m: with_curl(u, d, None)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "srv").mkdir()
        payload = os.urandom(size_mb * 10**6)
        md5 = hashlib.md5(payload).hexdigest()
        (tmp / "srv" / "file.bin").write_bytes(payload)
        del payload
        times: dict[str, list[float]] = {name: [] for name in methods}
        with serve(tmp / "srv") as base:
            url = f"{base}/file.bin"
            for _ in range(runs):  # interleaved, so that a busy moment hits every method
                for name, method in methods.items():
                    dest = tmp / "out.bin"
                    dest.unlink(missing_ok=True)
                    t0 = time.perf_counter()
                    method(url, dest, md5)
                    times[name].append(time.perf_counter() - t0)
                    dest.unlink(missing_ok=True)

    engine = sorted(times["dustmaps_ext engine (MD5)"])[runs // 2]
    lines = [
        "# Download throughput",
        "",
        (f"{size_mb} MB of random bytes from `python -m http.server` on 127.0.0.1 (another "
         f"process), median of {runs} interleaved runs; {platform.node()}, {os.cpu_count()} "
         f"CPUs, Python {platform.python_version()}, requests {requests.__version__}."),
        "",
        "| method | MB/s | time / engine's |",
        "|---|---|---|",
    ]
    for name, ts in times.items():
        t = sorted(ts)[runs // 2]
        lines.append(f"| {name} | {size_mb / t:.0f} | {t / engine:.2f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.quick:
        out = Path(__file__).parent / "results" / "bench_download.md"
        out.write_text(report)


if __name__ == "__main__":
    main()
