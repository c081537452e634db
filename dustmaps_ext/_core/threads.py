"""The package's one threading policy for its compiled kernels.

The kernels release the GIL, so large inputs are answered by a pool of Python threads,
each running a serial kernel on its own part of the input (no barrier, safe from any
number of calling threads). How many: :func:`max_threads`, the number of threads numba
may use (``NUMBA_NUM_THREADS``, the machine's cores by default, the one setting users
change), at most :data:`MAX_THREADS_CAP`. Tests and benchmarks may set
:data:`MAX_THREADS` to override it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import numba

__all__ = ["MAX_THREADS_CAP", "MAX_THREADS", "PARALLEL_MIN_POINTS", "max_threads", "run_tasks",
           "parallel_slot"]

T = TypeVar("T")

#: Upper bound on the threads of one call (more rarely helps: memory bandwidth bounds the kernels).
MAX_THREADS_CAP = 8
#: Override of :func:`max_threads` (None: the policy).
MAX_THREADS: int | None = None


def max_threads() -> int:
    """Threads one call may use: :data:`MAX_THREADS` if set, else
    ``min(NUMBA_NUM_THREADS, MAX_THREADS_CAP)``, at least 1."""
    if MAX_THREADS is not None:
        return max(1, int(MAX_THREADS))
    return max(1, min(int(numba.config.NUMBA_NUM_THREADS), MAX_THREADS_CAP))


def run_tasks(func: Callable[[T], object], tasks: Iterable[T], *, parallel: bool = True) -> None:
    """Call ``func(task)`` for every task: on a pool of :func:`max_threads` threads when
    ``parallel`` and there is more than one task and thread, else in order on this thread.
    An exception in a task is raised here."""
    tasks = list(tasks)
    workers = max_threads()
    if parallel and len(tasks) > 1 and workers > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            for _ in pool.map(func, tasks):
                pass
    else:
        for task in tasks:
            func(task)


#: Inputs at least this long may run a numba ``parallel=True`` kernel (see :func:`parallel_slot`).
PARALLEL_MIN_POINTS = 4096

# numba's default (workqueue) threading layer must not run two parallel kernels at once:
# parallel kernels (the RING pixel lookup of the Wang et al. map) run under this lock (see
# parallel_slot), and a caller that finds it taken runs the serial one. The model kernels
# are serial and release the GIL; large inputs run them on a pool of Python threads
# (independent blocks of points: no barrier to wait for, and safe to call from any number
# of threads).
_PARALLEL_LOCK = threading.Lock()

# A process forked from one whose numba thread pool runs on OpenMP must not run a parallel
# kernel: GNU OpenMP cannot be used after fork(), and numba's 'omp' layer kills such a child
# ("fork() called from a process already using GNU OpenMP"). multiprocessing forks by default
# on Linux, where numba picks 'omp' when TBB is not installed. Such a child (and its own
# children) runs the serial kernels; the 'workqueue' and 'tbb' layers start again after a
# fork, so their children keep the parallel ones.
_POOL_INHERITED_ACROSS_FORK = False


def _pool_unusable_after_fork() -> bool:
    """Whether this process started numba's thread pool on a layer a forked child cannot use."""
    try:
        return numba.threading_layer() == "omp"
    except ValueError:  # no parallel kernel has run here: no pool was started
        return False


def _after_fork_in_child() -> None:
    global _PARALLEL_LOCK, _POOL_INHERITED_ACROSS_FORK
    _PARALLEL_LOCK = threading.Lock()  # the thread that held it did not come along
    _POOL_INHERITED_ACROSS_FORK = _POOL_INHERITED_ACROSS_FORK or _pool_unusable_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def parallel_slot(n_points: int) -> Iterator[bool]:
    """Whether a parallel kernel may run now on ``n_points`` points.

    Yields True (holding the one parallel slot of the process until the block ends) for
    inputs of :data:`PARALLEL_MIN_POINTS` points or more when no other parallel kernel is
    running, else False (the caller then runs its serial kernel)::

        with parallel_slot(n) as parallel:
            (kernel_parallel if parallel else kernel_serial)(...)

    Always False in a process forked after its parent ran a parallel kernel on numba's
    OpenMP layer, where the parallel kernel would kill the process.
    """
    lock = _PARALLEL_LOCK
    parallel = (n_points >= PARALLEL_MIN_POINTS and not _POOL_INHERITED_ACROSS_FORK
                and lock.acquire(blocking=False))
    try:
        yield parallel
    finally:
        if parallel:
            lock.release()
