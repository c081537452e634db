"""Files, written once: atomic writes (temporary name, fsync, rename) and read-only memory maps.

Every file this package or its build pipeline writes appears under its final name only when
complete: :func:`atomic_output` hands out a temporary path beside the destination, and on
success flushes it to disk, renames it over the destination (atomic on one file system) and
flushes the folder entry; on failure it removes the temporary file. Readers that map a file
(:func:`map_read_only`) drop the pages they touched with :func:`release_pages` so that their
resident memory stays bounded; the pages stay in the operating system's page cache.
"""

from __future__ import annotations

import json
import mmap
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["map_data_dir", "missing_map_error", "open_hdf5", "atomic_output", "write_text_atomic", "write_json_atomic", "fsync_file",
           "fsync_dir", "map_read_only", "release_pages", "advise_access"]


def map_data_dir(name: str) -> Path:
    """``<dustmaps data_dir>/<name>``: where dustmaps (and this package) keep a map's files.

    Read at call time, so that a change of ``dustmaps.config['data_dir']`` applies.
    """
    from dustmaps.std_paths import data_dir

    return Path(data_dir()) / name


def missing_map_error(what: str, where: str, module: str, fetch_call: str,
                      shell: str) -> FileNotFoundError:
    """The error for a map that is not in the data directory, saying how to get it.

    Parameters
    ----------
    what : str
        The map (``"DECaPS map"``).
    where : str
        What was looked for, appended to "is not in the dustmaps data directory".
    module, fetch_call : str
        The Python module to import and the call that downloads the map.
    shell : str
        The shell command that downloads it.
    """
    return FileNotFoundError(
        f"The {what} is not in the dustmaps data directory{where}.\n"
        f"Download it with:\n\n    import {module}\n    {fetch_call}\n\n"
        f"or from the shell: {shell}\n"
        "To use another data directory: from dustmaps.config import config; "
        "config['data_dir'] = '/path/to/data'")


def open_hdf5(path: str | os.PathLike, what: str):
    """Open a map's HDF5 file read-only, with errors that say what is wrong.

    Parameters
    ----------
    path : path
        The file.
    what : str
        What the file should be, for the messages (e.g. ``"DECaPS map"``).

    Raises
    ------
    FileNotFoundError
        If it does not exist.
    dustmaps_ext.errors.MapFileError
        If it is not a readable HDF5 file (truncated, corrupt or something else).
    """
    import h5py

    from ..errors import MapFileError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise MapFileError(f"{path} is not a readable HDF5 file (truncated, corrupt or not "
                           f"HDF5 at all): {exc}") from exc


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_output(dest: str | os.PathLike, *, suffix: str = "", durable: bool = True,
                  unique: bool = True) -> Iterator[Path]:
    """Write ``dest`` through a temporary file that replaces it only when complete.

    Parameters
    ----------
    dest : path
        The final file; its folder must exist.
    suffix : str
        Ending of the temporary name (for writers that add one, e.g. ``".npz"``).
    durable : bool
        fsync the file before the rename and the folder after it (default), so that a
        crash never leaves a complete-looking file whose bytes are not on disk.
    unique : bool
        A temporary name unique to this process and thread (default: writers may run
        at once). With False the name is always ``.<dest name>.partial<suffix>``, so that
        the next run replaces what a killed one left (for a file one job writes).

    Yields
    ------
    pathlib.Path
        The temporary path to write, beside ``dest``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_output(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> sorted(p.name for p in d.iterdir()), (d / "a.txt").read_text()
    (['a.txt'], 'done')
    """
    import threading

    dest = Path(dest)
    tag = f"{os.getpid()}.{threading.get_ident()}.tmp" if unique else "partial"
    tmp = dest.with_name(f".{dest.name}.{tag}{suffix}")
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(dest.parent)


def write_text_atomic(dest: str | os.PathLike, text: str, *, durable: bool = True) -> Path:
    """Write ``text`` to ``dest`` atomically (see :func:`atomic_output`)."""
    with atomic_output(dest, durable=durable) as tmp:
        tmp.write_text(text)
    return Path(dest)


def write_json_atomic(dest: str | os.PathLike, obj: Any, *, durable: bool = True, **dumps) -> Path:
    """Write ``obj`` as JSON to ``dest`` atomically (``dumps`` go to :func:`json.dumps`)."""
    return write_text_atomic(dest, json.dumps(obj, **dumps), durable=durable)


def map_read_only(path: str | os.PathLike) -> mmap.mmap:
    """Map a whole file read-only; the mapping outlives the file object."""
    with open(path, "rb") as fh:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def release_pages(mapping: mmap.mmap, start: int = 0, stop: int | None = None) -> None:
    """Drop bytes ``[start, stop)`` of a mapping from this process's resident set.

    The data stay in the page cache; a later read maps them again. ``start`` is rounded
    down to a page boundary. Does nothing where ``madvise(MADV_DONTNEED)`` is unavailable.
    """
    if not hasattr(mapping, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    if start == 0 and stop is None:
        mapping.madvise(mmap.MADV_DONTNEED)
        return
    stop = len(mapping) if stop is None else min(int(stop), len(mapping))
    start = int(start) - int(start) % mmap.PAGESIZE
    if stop > start:
        mapping.madvise(mmap.MADV_DONTNEED, start, stop - start)


def advise_access(mapping: mmap.mmap, sequential: bool) -> None:
    """Tell the kernel how a mapping will be read: ``False`` reads only the pages touched
    (no read-ahead), ``True`` restores normal read-ahead."""
    if hasattr(mapping, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mapping.madvise(mmap.MADV_NORMAL if sequential else mmap.MADV_RANDOM)
