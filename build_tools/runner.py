"""Run independent blocks of a build on Dask, with progress, per-block outputs and resume.

Shared by the parametric and DECaPS pipelines. A build is a list of integer block ids
(HEALPix blocks, for both pipelines) and a function ``process_block(block_id) -> dict of
arrays``. :func:`run_blocks` runs the function for every block not yet done and saves each
result as ``out_dir/block_{id:06d}.npz``, atomically (temporary name, fsync, ``os.replace``),
so a killed build restarts where it stopped; :func:`load_blocks` concatenates the results.

``process_block`` must be a picklable, top-level callable (a module-level function, or a
:func:`functools.partial` of one whose arguments pickle), because Dask ships it to worker
processes. It must be deterministic: when it needs random numbers, derive them from a
global seed and the block id with :func:`block_seed`, so that results do not depend on
which worker ran which block, or when.

Block files are written byte-for-byte reproducibly (fixed zip timestamps), so a resumed
build yields the same files, and the same final product, as an uninterrupted one.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dustmaps_ext.files import atomic_output, write_json_atomic

__all__ = ["run_blocks", "load_blocks", "save_block", "block_path", "block_seed", "job_fingerprint",
           "dashboard_address", "DASHBOARD_ADDRESS_KEY", "DEFAULT_DASHBOARD_ADDRESS"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
_MANIFEST_FORMAT = 1
_LOCAL_SCHEDULERS = ("synchronous", "threads", "processes")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def block_path(out_dir: str | os.PathLike, block_id: int) -> Path:
    """Path of the result file of ``block_id`` in ``out_dir``."""
    return Path(out_dir) / f"block_{int(block_id):06d}.npz"


def block_seed(global_seed: int, block_id: int) -> np.random.SeedSequence:
    """Seed of one block, derived from the build's seed and the block id.

    Use ``np.random.default_rng(block_seed(seed, block_id))`` inside ``process_block``.
    """
    if int(global_seed) < 0 or int(block_id) < 0:
        raise ValueError("global_seed and block_id must be non-negative integers")
    return np.random.SeedSequence([int(global_seed), int(block_id)])


def job_fingerprint(process_block: Callable) -> str:
    """SHA-256 of the function's qualified name and, for a :func:`functools.partial`, of
    its pickled arguments: two jobs with the same fingerprint compute the same blocks.

    Raises
    ------
    TypeError
        If the arguments cannot be pickled (then pass ``fingerprint=`` to :func:`run_blocks`).
    """
    func, args, kwargs = process_block, (), {}
    while isinstance(func, functools.partial):
        args = func.args + args
        kwargs = {**func.keywords, **kwargs}
        func = func.func
    name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
    digest = hashlib.sha256(name.encode())
    try:
        digest.update(pickle.dumps((args, sorted(kwargs.items())), protocol=4))
    except Exception as exc:  # pickling errors come in several types
        raise TypeError(f"cannot fingerprint the arguments of {name} ({exc}); pass "
                        "fingerprint= explicitly") from exc
    return digest.hexdigest()


def save_block(out_dir: str | os.PathLike, block_id: int, result: dict) -> Path:
    """Write ``result`` atomically and reproducibly as the block's .npz file.

    Parameters
    ----------
    out_dir : path
        The folder of block files.
    block_id : int
        The block (names the file, :func:`block_path`).
    result : dict of str to array
        Non-empty; keys must be identifiers, arrays must not hold Python objects.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    if not isinstance(result, dict) or not result:
        raise TypeError(f"process_block({block_id}) must return a non-empty dict of arrays, "
                        f"got {type(result).__name__}")
    final = block_path(out_dir, block_id)
    with atomic_output(final) as tmp, open(tmp, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key in sorted(result):
                if not isinstance(key, str) or not key.isidentifier():
                    raise ValueError(f"block {block_id}: result keys must be identifiers, "
                                     f"got {key!r}")
                arr = np.asarray(result[key])
                if arr.dtype.hasobject:
                    raise TypeError(f"block {block_id}: result {key!r} has object dtype")
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())
    return final


def _run_and_save(process_block: Callable, block_id: int, out_dir: str) -> str:
    return str(save_block(out_dir, block_id, process_block(block_id)))


def _check_manifest(out_dir: Path, fingerprint: str, resume: bool) -> None:
    manifest = out_dir / MANIFEST_NAME
    if manifest.exists() and resume:
        try:
            old = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{manifest} is unreadable ({exc}); remove {out_dir} or run "
                             "with resume=False") from exc
        if old.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{out_dir} holds blocks of a different job (fingerprint "
                f"{old.get('fingerprint')!r}, this job {fingerprint!r}); resuming would mix "
                "results. Use another output folder or run with resume=False to start over.")
        return
    if not resume:
        for old_block in out_dir.glob("block_*.npz"):
            old_block.unlink()
    write_json_atomic(manifest, {"format": _MANIFEST_FORMAT, "fingerprint": fingerprint},
                      indent=1, sort_keys=True)


#: Dask configuration key of the address the local cluster's dashboard listens on;
#: ``None`` turns the dashboard off. ``build-decaps`` and ``build-parametric`` set it from
#: ``--dashboard-address``; scripts use ``dask.config.set({DASHBOARD_ADDRESS_KEY: ...})``.
DASHBOARD_ADDRESS_KEY = "dustmaps_ext.dashboard_address"
#: By default the dashboard is reachable from this machine only, on a free port.
DEFAULT_DASHBOARD_ADDRESS = "127.0.0.1:0"


def dashboard_address() -> str | None:
    """Where the local cluster's dashboard listens (``None``: no dashboard).

    The value of the Dask configuration key :data:`DASHBOARD_ADDRESS_KEY`, by default
    :data:`DEFAULT_DASHBOARD_ADDRESS` (this machine only, never all interfaces).
    """
    import dask

    return dask.config.get(DASHBOARD_ADDRESS_KEY, DEFAULT_DASHBOARD_ADDRESS)


def run_blocks(block_ids: Sequence[int], process_block: Callable[[int], dict[str, np.ndarray]],
               out_dir: str | os.PathLike, *, scheduler: str | None = None,
               n_workers: int | None = None, progress: bool = True, resume: bool = True,
               fingerprint: str | None = None, task_name: str = "block") -> list[Path]:
    """Run ``process_block`` for every block not yet complete in ``out_dir``, on Dask.

    Parameters
    ----------
    block_ids : sequence of int
        Blocks of the job (non-negative, distinct).
    process_block : callable
        ``process_block(block_id) -> dict[str, numpy.ndarray]``; a picklable top-level
        callable (see the module notes), deterministic for a given block id.
    out_dir : path
        Folder of the block files and of ``manifest.json`` (created if needed).
    scheduler : str, optional
        ``None``: a :class:`distributed.LocalCluster` of ``n_workers`` single-threaded worker
        processes (dashboard on a free port of 127.0.0.1, see :func:`dashboard_address`;
        a script that uses it needs the usual
        ``if __name__ == "__main__":`` guard, as worker processes are spawned); ``"synchronous"``, ``"threads"`` or ``"processes"``: Dask's local
        schedulers; anything else: the address of a running Dask scheduler
        (e.g. ``"tcp://host:8786"``), whose workers send the results back to this process,
        which writes them (no shared file system needed).
    n_workers : int, optional
        Workers of the local cluster or pool (default: the number of CPUs).
    progress : bool
        Show a tqdm bar over completed blocks.
    resume : bool
        Keep the block files already in ``out_dir`` (after checking that the manifest's
        fingerprint matches) and compute only the missing ones; ``False`` deletes existing
        block files and starts over.
    fingerprint : str, optional
        Identity of the job, stored in the manifest; by default :func:`job_fingerprint`
        of ``process_block``.
    task_name : str
        What a task is called in the progress bar and the log ("block", "shard", "tile").

    Returns
    -------
    list of pathlib.Path
        The block files of all ``block_ids``, in block-id order.

    Raises
    ------
    ValueError
        Bad block ids, or resuming in a folder holding another job's blocks.
    """
    ids = [int(b) for b in block_ids]
    if any(b < 0 for b in ids) or len(set(ids)) != len(ids):
        raise ValueError("block_ids must be distinct non-negative integers")
    ids.sort()
    if not callable(process_block):
        raise TypeError("process_block must be callable")
    if n_workers is not None and int(n_workers) < 1:
        raise ValueError("n_workers must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".block_*.tmp"):
        stale.unlink()
    _check_manifest(out, fingerprint or job_fingerprint(process_block), resume)
    todo = [b for b in ids if not block_path(out, b).exists()]
    logger.info("%d %ss: %d already done in %s, %d to run", len(ids), task_name,
                len(ids) - len(todo), out, len(todo))
    if todo:
        from dustmaps_ext.progress import tqdm

        with tqdm(total=len(ids), initial=len(ids) - len(todo), disable=not progress,
                  desc=f"{task_name}s", unit=task_name) as bar:
            if scheduler in _LOCAL_SCHEDULERS:
                _run_local(todo, process_block, out, scheduler, n_workers, bar)
            else:
                _run_distributed(todo, process_block, out, scheduler, n_workers, bar)
    return [block_path(out, b) for b in ids]


def _run_local(todo, process_block, out, scheduler, n_workers, bar) -> None:
    import dask
    from dask.callbacks import Callback

    tasks = [dask.delayed(_run_and_save, pure=False)(process_block, b, str(out)) for b in todo]
    keys = {t.key for t in tasks}

    def _posttask(key, result, dsk, state, worker_id):
        if key in keys:
            bar.update(1)
            logger.debug("block file written: %s", result)

    kwargs = {"scheduler": scheduler}
    if scheduler != "synchronous" and n_workers:
        kwargs["num_workers"] = int(n_workers)
    with Callback(posttask=_posttask):
        dask.compute(*tasks, **kwargs)


def _run_distributed(todo, process_block, out, scheduler, n_workers, bar) -> None:
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=int(n_workers or os.cpu_count() or 1),
                               threads_per_worker=1, processes=True,
                               dashboard_address=dashboard_address())
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = {client.submit(process_block, b, pure=False): b for b in todo}
        try:
            for fut in as_completed(futures):
                b = futures[fut]
                save_block(out, b, fut.result())
                bar.update(1)
                logger.debug("block %d written", b)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def load_blocks(paths: Sequence[os.PathLike]) -> dict[str, np.ndarray]:
    """Concatenate, key by key and in the given order, the arrays of block files.

    Raises
    ------
    ValueError
        If the files do not all hold the same keys, or no paths are given.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no block files to load")
    parts: dict[str, list[np.ndarray]] = {}
    keys = None
    for p in paths:
        with np.load(p, allow_pickle=False) as data:
            these = sorted(data.files)
            if keys is None:
                keys = these
            elif these != keys:
                raise ValueError(f"{p} holds keys {these}, the first block {keys}")
            for k in these:
                parts.setdefault(k, []).append(data[k])
    return {k: np.concatenate(v) for k, v in parts.items()}
