"""The package's one threading policy for its compiled kernels.

The kernels release the GIL, so large inputs are answered by a pool of Python threads,
each running a serial kernel on its own part of the input (no barrier, safe from any
number of calling threads). How many: :func:`max_threads`, the number of threads numba
may use (``NUMBA_NUM_THREADS``, the machine's cores by default, the one setting users
change), at most :data:`MAX_THREADS_CAP`. Tests and benchmarks may set
:data:`MAX_THREADS` to override it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

import numba

__all__ = ["MAX_THREADS_CAP", "MAX_THREADS", "max_threads", "run_tasks"]

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
