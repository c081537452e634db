"""The download engine and the Dataverse lookup, against the local fake server (no internet).

Every download runs at the engine's default block size (4 MiB), the one users get.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dustmaps_ext._io import download as dl
from dustmaps_ext._io.dataverse import DataverseError, dataset_files, find_file, resolve_base_url
from helpers.fake_dataverse import FakeServer

DOI = "10.7910/DVN/TESTDS"
FAST = dl.RetryPolicy(max_retries=3, backoff_base=0.01, timeout=(2.0, 2.0))


@pytest.fixture
def server():
    with FakeServer(lifetime_s=60) as srv:
        yield srv


@pytest.fixture
def payload():
    return os.urandom(3 * 2**20 + 12345)  # not a multiple of the block size


@pytest.fixture
def sleeps(monkeypatch):
    """Record the backoff delays instead of sleeping them."""
    delays: list[float] = []
    monkeypatch.setattr(dl, "_sleep", delays.append)
    return delays


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def _publish(server, payload, name="map.h5", **kw):
    fid = server.add_dataverse_file(DOI, name, payload, **kw)
    return server.url + server.access_path(fid), server.store_path(fid)


def _get(url, dest, payload, **kw):
    kw.setdefault("expected_hash", _md5(payload))
    kw.setdefault("expected_size", len(payload))
    kw.setdefault("retry", FAST)
    kw.setdefault("progress", False)
    return dl.download(url, dest, **kw)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix in (".part", ".lock"))


# --------------------------------------------------------------------------- happy path


def test_download_verifies_and_renames_atomically(server, payload, tmp_path):
    url, store = _publish(server, payload)
    dest = tmp_path / "sub" / "map.h5"
    assert _get(url, dest, payload) == dest
    assert dest.read_bytes() == payload
    assert _leftovers(dest.parent) == []
    assert [r.status for r in server.requests_for(store)] == [200]


def test_present_file_with_right_checksum_is_not_downloaded_again(server, payload, tmp_path):
    url, store = _publish(server, payload)
    dest = tmp_path / "map.h5"
    _get(url, dest, payload)
    mtime = dest.stat().st_mtime_ns
    _get(url, dest, payload)
    assert len(server.requests_for(store)) == 1
    assert dest.stat().st_mtime_ns == mtime
    _get(url, dest, payload, clobber=True)
    assert len(server.requests_for(store)) == 2
    assert dest.read_bytes() == payload


def test_present_file_with_wrong_checksum_is_refused_not_replaced(server, payload, tmp_path):
    url, store = _publish(server, payload)
    dest = tmp_path / "map.h5"
    dest.write_bytes(payload[:-1] + b"\0")  # same size, wrong content
    with pytest.raises(dl.ChecksumError, match="clobber=True"):
        _get(url, dest, payload)
    assert dest.read_bytes() != payload  # the user's file is left alone
    assert server.requests_for(store) == []
    _get(url, dest, payload, clobber=True)
    assert dest.read_bytes() == payload


# --------------------------------------------------------------------------- faults


def test_dropped_connection_is_resumed_with_range(server, payload, tmp_path, sleeps):
    url, store = _publish(server, payload)
    server.inject(store, "drop")
    dest = tmp_path / "map.h5"
    _get(url, dest, payload)
    assert dest.read_bytes() == payload
    first, second = server.requests_for(store)
    assert (first.range, first.status) == (None, 200)
    assert second.status == 206
    # the server sent half the file before closing: every byte of it was kept
    assert second.range == f"bytes={len(payload) // 2}-"
    assert server.bytes_sent(store) == len(payload)
    assert sleeps == [FAST.backoff_base]
    assert _leftovers(tmp_path) == []


def test_existing_part_is_resumed_from_its_end(server, payload, tmp_path):
    url, store = _publish(server, payload)
    dest = tmp_path / "map.h5"
    n = 1_000_003
    (tmp_path / "map.h5.part").write_bytes(payload[:n])
    _get(url, dest, payload)
    assert dest.read_bytes() == payload
    [req] = server.requests_for(store)
    assert (req.range, req.status) == (f"bytes={n}-", 206)


def test_server_ignoring_range_restarts_cleanly(server, payload, tmp_path):
    url, store = _publish(server, payload)
    server.ignore_range.add(store)
    dest = tmp_path / "map.h5"
    # a stale .part whose bytes are NOT a prefix of the file: appending the full body to it
    # would give a wrong file, so a correct result proves the restart from byte 0
    (tmp_path / "map.h5.part").write_bytes(b"x" * 777_777)
    _get(url, dest, payload)
    assert dest.read_bytes() == payload
    [req] = server.requests_for(store)
    assert (req.range, req.status) == ("bytes=777777-", 200)


def test_500_then_200_is_retried_with_backoff(server, payload, tmp_path, sleeps):
    url, store = _publish(server, payload)
    server.inject(store, 500, 503)
    dest = tmp_path / "map.h5"
    _get(url, dest, payload)
    assert dest.read_bytes() == payload
    assert [r.status for r in server.requests_for(store)] == [500, 503, 200]
    assert sleeps == [0.01, 0.02]


def test_retries_are_bounded(server, payload, tmp_path, sleeps):
    url, store = _publish(server, payload)
    server.inject(store, *[500] * 10)
    dest = tmp_path / "map.h5"
    with pytest.raises(dl.DownloadError, match="failed after 4 attempts"):
        _get(url, dest, payload)
    assert len(server.requests_for(store)) == FAST.max_retries + 1
    assert sleeps == [0.01, 0.02, 0.04]  # exponential
    assert not dest.exists()


def test_timeout_is_retried(server, payload, tmp_path, sleeps):
    url, store = _publish(server, payload)
    server.hang_s = 0.6
    server.inject(store, "hang")
    dest = tmp_path / "map.h5"
    _get(url, dest, payload, retry=dl.RetryPolicy(max_retries=2, backoff_base=0.01,
                                                   timeout=(2.0, 0.2)))
    assert dest.read_bytes() == payload
    assert [r.status for r in server.requests_for(store)] == [None, 200]
    assert len(sleeps) == 1


def test_client_error_is_not_retried(server, tmp_path, sleeps):
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download(server.url + "/nothing/here", tmp_path / "x", retry=FAST, progress=False)
    assert len(server.requests_for("/nothing/here")) == 1
    assert sleeps == []


def test_wrong_md5_keeps_nothing(server, payload, tmp_path):
    url, store = _publish(server, payload)
    dest = tmp_path / "map.h5"
    with pytest.raises(dl.ChecksumError, match="nothing was written"):
        _get(url, dest, payload, expected_hash=_md5(b"something else"))
    assert not dest.exists()
    assert _leftovers(tmp_path) == []


def test_size_announced_by_server_must_match(server, payload, tmp_path):
    url, _ = _publish(server, payload)
    with pytest.raises(dl.DownloadError, match="should have"):
        _get(url, tmp_path / "map.h5", payload, expected_size=len(payload) + 1)
    assert not (tmp_path / "map.h5").exists()


def test_complete_part_is_only_verified(server, payload, tmp_path):
    url, store = _publish(server, payload)
    (tmp_path / "map.h5.part").write_bytes(payload)
    _get(url, tmp_path / "map.h5", payload)
    assert (tmp_path / "map.h5").read_bytes() == payload
    assert server.requests_for(store) == []


def test_complete_part_of_unknown_size_is_recognised_by_416(server, payload, tmp_path):
    url, store = _publish(server, payload)
    (tmp_path / "map.h5.part").write_bytes(payload)
    _get(url, tmp_path / "map.h5", payload, expected_size=None)
    assert (tmp_path / "map.h5").read_bytes() == payload
    assert [r.status for r in server.requests_for(store)] == [416]


def test_validate_callback_failure_keeps_nothing(server, payload, tmp_path):
    url, _ = _publish(server, payload)

    def reject(path):
        assert path.name == "map.h5.part"
        raise ValueError("not what we wanted")

    with pytest.raises(ValueError, match="not what we wanted"):
        _get(url, tmp_path / "map.h5", payload, validate=reject)
    assert list(tmp_path.iterdir()) == []


def test_other_checksum_algorithms(server, payload, tmp_path):
    fid = server.add_dataverse_file(DOI, "sha.h5", payload, checksum_type="SHA-256")
    info = find_file(DOI, "sha.h5", server.url, retry=FAST)
    assert (info.hash_name, info.checksum) == ("sha256", hashlib.sha256(payload).hexdigest())
    dest = dl.download(info.access_url, tmp_path / "sha.h5", expected_hash=info.checksum,
                       hash_name=info.hash_name, expected_size=info.size, retry=FAST,
                       progress=False)
    assert dest.read_bytes() == payload
    assert info.id == fid


# --------------------------------------------------------------------------- partial blocks


@pytest.fixture
def ten_mb():
    return os.urandom(10_000_000)


def test_every_byte_is_kept_when_the_server_drops_every_megabyte(server, ten_mb, tmp_path,
                                                                 sleeps):
    url, store = _publish(server, ten_mb)
    server.drop_every[store] = 1_000_000  # well under one 4 MiB block
    dest = _get(url, tmp_path / "map.h5", ten_mb)
    assert hashlib.md5(dest.read_bytes()).hexdigest() == _md5(ten_mb)
    reqs = server.requests_for(store)
    assert [r.range for r in reqs] == [None] + [f"bytes={k * 1_000_000}-" for k in range(1, 10)]
    assert server.bytes_sent(store) == len(ten_mb)  # nothing received twice
    # each attempt brought new bytes: the failure count never grows past the first backoff
    assert sleeps == [FAST.backoff_base] * 9


def test_bytes_received_before_a_stall_are_kept(server, ten_mb, tmp_path, sleeps):
    url, store = _publish(server, ten_mb)
    server.hang_s = 2.0
    server.inject(store, ("stall", 1_500_000))
    _get(url, tmp_path / "map.h5", ten_mb,
         retry=dl.RetryPolicy(max_retries=2, backoff_base=0.01, timeout=(2.0, 0.5)))
    assert (tmp_path / "map.h5").read_bytes() == ten_mb
    # the read timed out in the stall; the retry asked for what followed the bytes received
    assert server.requests_for(store)[-1].range == "bytes=1500000-"


def _interrupt_after(monkeypatch, n_bytes: int) -> list[int]:
    """Raise KeyboardInterrupt from the progress bar once ``n_bytes`` have been counted."""
    import tqdm.std

    counted = [0]
    real_update = tqdm.std.tqdm.update

    def update(self, n=1):
        counted[0] += n
        if counted[0] >= n_bytes:
            raise KeyboardInterrupt
        return real_update(self, n)

    monkeypatch.setattr(tqdm.std.tqdm, "update", update)
    return counted


def test_ctrl_c_keeps_the_bytes_received_and_the_next_call_resumes(server, ten_mb, tmp_path,
                                                                   monkeypatch):
    url, store = _publish(server, ten_mb)
    server.drop_every[store] = 3_000_000  # the first answer ends before one 4 MiB block
    dest = tmp_path / "map.h5"
    counted = _interrupt_after(monkeypatch, 1_000_000)
    with pytest.raises(KeyboardInterrupt):
        _get(url, dest, ten_mb)
    part = tmp_path / "map.h5.part"
    kept = part.stat().st_size
    # every byte counted was kept, though the interrupt came before one 4 MiB block (how
    # much of the 3 MB answer had arrived by then depends on the machine's load)
    assert 1_000_000 <= kept == counted[0] <= 3_000_000 < dl.BLOCK_SIZE
    assert part.read_bytes() == ten_mb[:kept]
    assert _leftovers(tmp_path) == ["map.h5.part"]  # the lock is released
    monkeypatch.undo()
    del server.drop_every[store]
    _get(url, dest, ten_mb)
    assert dest.read_bytes() == ten_mb
    assert server.requests_for(store)[-1].range == f"bytes={kept}-"
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- bounded work


@pytest.mark.parametrize("misbehaviour", ["ignore_range", "wrong_range"])
def test_server_without_usable_ranges_that_drops_is_given_up_on(server, ten_mb, tmp_path,
                                                                sleeps, misbehaviour):
    url, store = _publish(server, ten_mb)
    getattr(server, misbehaviour).add(store)
    server.drop_every[store] = 4_500_000  # more than one block, less than the file
    dest = tmp_path / "map.h5"
    # as many retries as users get: the restarts from byte 0 are what stops it
    policy = dl.RetryPolicy(backoff_base=0.001, timeout=(2.0, 2.0))
    with pytest.raises(dl.DownloadError, match=r"does not honour HTTP Range.*MB received") as err:
        _get(url, dest, ten_mb, retry=policy)
    assert str(dl.MAX_RESTARTS) in str(err.value)
    # a 200 restarts at once; a wrong 206 is dropped and asked again without Range
    n_requests = dl.MAX_RESTARTS + 2 if misbehaviour == "ignore_range" else 2 * dl.MAX_RESTARTS + 2
    assert len(server.requests_for(store)) == n_requests
    assert server.bytes_sent(store) <= n_requests * 4_500_000 <= 4 * len(ten_mb)
    assert not dest.exists()
    # what was kept is a true prefix of the file, and a later call (the server fixed) uses it
    part = (tmp_path / "map.h5.part").read_bytes()
    assert part == ten_mb[:len(part)]


def test_transfer_budget_bounds_the_bytes_received(server, ten_mb, tmp_path, sleeps,
                                                   monkeypatch):
    url, store = _publish(server, ten_mb)
    server.ignore_range.add(store)
    server.drop_every[store] = 9_000_000
    monkeypatch.setattr(dl, "MAX_RESTARTS", 100)  # only the byte budget can stop it
    monkeypatch.setattr(dl, "TRANSFER_BUDGET", 2)
    with pytest.raises(dl.DownloadError, match=r"received for a file of 10\.0 MB"):
        _get(url, tmp_path / "map.h5", ten_mb,
             retry=dl.RetryPolicy(max_retries=50, backoff_base=0.001))
    assert server.bytes_sent(store) <= 2 * len(ten_mb) + dl.BLOCK_SIZE + 9_000_000


def test_wrong_content_range_is_not_appended(server, ten_mb, tmp_path, sleeps):
    url, store = _publish(server, ten_mb)
    server.wrong_range.add(store)
    (tmp_path / "map.h5.part").write_bytes(ten_mb[:1234])
    _get(url, tmp_path / "map.h5", ten_mb)
    assert (tmp_path / "map.h5").read_bytes() == ten_mb
    assert [r.range for r in server.requests_for(store)] == ["bytes=1234-", None]


# --------------------------------------------------------------------------- offline


def test_unresolvable_host_fails_at_once_naming_it(tmp_path, sleeps):
    # .invalid never resolves (RFC 2606): no packet leaves the machine
    with pytest.raises(dl.DownloadError,
                       match=r"cannot reach nonexistent\.invalid: .*resolved \(no network\?\)"):
        dl.download("http://nonexistent.invalid/map.h5", tmp_path / "map.h5", progress=False)
    assert sleeps == [0.5]  # one quick retry with the default policy, no backoff
    with pytest.raises(dl.DownloadError, match=r"nonexistent\.invalid.*no network\?"):
        find_file(DOI, "map.h5", "http://nonexistent.invalid")
    assert sleeps == [0.5, 0.5]


def test_refused_connection_fails_at_once(tmp_path, sleeps):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(dl.DownloadError,
                       match=rf"cannot reach 127\.0\.0\.1:{port}: the connection was refused"):
        dl.download(f"http://127.0.0.1:{port}/map.h5", tmp_path / "map.h5", progress=False)
    assert sleeps == [0.5]


def test_503_then_200_still_backs_off_and_succeeds(server, payload, tmp_path, sleeps):
    url, store = _publish(server, payload)
    server.inject(store, 503, 503, 429)
    _get(url, tmp_path / "map.h5", payload, retry=dl.DEFAULT_RETRY)
    assert (tmp_path / "map.h5").read_bytes() == payload
    assert sleeps == [1.0, 2.0, 4.0]


# --------------------------------------------------------------------------- consent first


@pytest.mark.parametrize("terminal", [False, True])
def test_consent_refusal_makes_no_request(server, payload, dustmaps_data_dir, monkeypatch,
                                          terminal):
    from dustmaps_ext._io import fetchers

    server.add_dataverse_file(fetchers.DECAPS_DOI, "decaps_mean.h5", payload)
    stdin = io.StringIO("no\n")
    stdin.isatty = lambda: terminal
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr("builtins.input", lambda prompt="": stdin.readline())
    with pytest.raises(fetchers.FetchConsentError):
        fetchers.fetch_decaps(mean_only=True, base_url=server.url, progress=False)
    assert server.log == []  # not even the Dataverse metadata
    fetchers.fetch_decaps(mean_only=True, base_url=server.url, progress=False, repack=False,
                          silence_warnings=True)
    assert (dustmaps_data_dir / "decaps" / "decaps_mean.h5").read_bytes() == payload


# --------------------------------------------------------------------------- lock, space


def test_second_fetch_of_the_same_file_is_refused(server, payload, tmp_path):
    url, store = _publish(server, payload)
    dest = tmp_path / "map.h5"
    with dl.file_lock(dest) as lock:
        assert lock.read_text().split() == [str(os.getpid()), socket.gethostname()]
        with pytest.raises(dl.DownloadLockedError, match=f"process {os.getpid()}"):
            _get(url, dest, payload)
    assert server.requests_for(store) == []
    assert not lock.exists()
    _get(url, dest, payload)  # free again
    assert dest.read_bytes() == payload


def test_stale_lock_of_a_dead_process_is_taken_over(server, payload, tmp_path):
    url, _ = _publish(server, payload)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dest = tmp_path / "map.h5"
    (tmp_path / "map.h5.lock").write_text(f"{dead.pid} {socket.gethostname()}\n")
    _get(url, dest, payload)
    assert dest.read_bytes() == payload
    assert _leftovers(tmp_path) == []


def test_lock_held_on_another_host_is_respected(server, payload, tmp_path):
    url, _ = _publish(server, payload)
    (tmp_path / "map.h5.lock").write_text("12345 some-other-host\n")
    with pytest.raises(dl.DownloadLockedError, match="some-other-host"):
        _get(url, tmp_path / "map.h5", payload)


def test_not_enough_disk_space_is_a_clear_error(server, payload, tmp_path, monkeypatch):
    url, store = _publish(server, payload)
    real = dl.shutil.disk_usage

    def small_disk(path):
        usage = real(path)
        return usage._replace(free=len(payload) + 4321)

    monkeypatch.setattr(dl.shutil, "disk_usage", small_disk)
    with pytest.raises(dl.InsufficientSpaceError, match=r"needs 3\.2 MB") as err:
        _get(url, tmp_path / "map.h5", payload, extra_bytes=0)
    assert str(tmp_path) in str(err.value)
    assert server.requests_for(store) == []
    monkeypatch.setattr(dl, "SPACE_MARGIN", 0)
    _get(url, tmp_path / "map.h5", payload)  # just fits without the margin
    with pytest.raises(dl.InsufficientSpaceError, match="unpacking"):
        dl.check_free_space(tmp_path, len(payload) + 5000, what="unpacking")


# --------------------------------------------------------------------------- progress


def test_progress_bar_shows_bytes_and_can_be_turned_off(server, payload, tmp_path, capsys):
    url, _ = _publish(server, payload)
    _get(url, tmp_path / "a.h5", payload, progress=True, desc="fake map")
    err = capsys.readouterr().err
    assert "fake map" in err and "3.16M/3.16M" in err and "B/s" in err
    _get(url, tmp_path / "b.h5", payload, progress=False)
    assert capsys.readouterr() == ("", "")


# --------------------------------------------------------------------------- Dataverse


def test_dataverse_lookup(server, payload):
    _publish(server, payload, "a.h5")
    _publish(server, b"bbb", "b.h5")
    files = dataset_files("doi:" + DOI, server.url + "/", retry=FAST)
    assert [(f.filename, f.size) for f in files] == [("a.h5", len(payload)), ("b.h5", 3)]
    info = find_file(DOI, "b.h5", server.url, retry=FAST)
    assert info.access_url == f"{server.url}/api/access/datafile/{info.id}"
    assert info.checksum == _md5(b"bbb")


def test_dataverse_missing_file_names_doi_and_files(server, payload):
    _publish(server, payload, "a.h5")
    _publish(server, payload, "b.h5")
    with pytest.raises(DataverseError, match=rf"doi:{DOI} .* no file named 'c.h5'.*a\.h5, b\.h5"):
        find_file(DOI, "c.h5", server.url, retry=FAST)


def test_dataverse_unknown_doi(server, sleeps):
    with pytest.raises(dl.DownloadError, match=r"doi:10\.1234/NOPE.*HTTP 404"):
        find_file("10.1234/NOPE", "x.h5", server.url, retry=FAST)
    assert sleeps == []


def test_dataverse_metadata_is_retried(server, payload, sleeps):
    _publish(server, payload, "a.h5")
    server.inject("/api/datasets/:persistentId", 502)
    assert find_file(DOI, "a.h5", server.url, retry=FAST).filename == "a.h5"
    assert sleeps == [0.01]


def test_base_url_from_argument_environment_or_default(monkeypatch):
    monkeypatch.delenv("DUSTMAPS_EXT_DATAVERSE_URL", raising=False)
    assert resolve_base_url() == "https://dataverse.harvard.edu"
    monkeypatch.setenv("DUSTMAPS_EXT_DATAVERSE_URL", "http://mirror.example/")
    assert resolve_base_url() == "http://mirror.example"
    assert resolve_base_url("https://other.example") == "https://other.example"
    with pytest.raises(ValueError, match="http"):
        resolve_base_url("ftp://x")


def test_retry_policy_checks_its_arguments():
    with pytest.raises(ValueError, match="max_retries"):
        dl.RetryPolicy(max_retries=-1)
    assert dl.RetryPolicy(backoff_base=1.0, backoff_max=5.0).delay(10) == 5.0
