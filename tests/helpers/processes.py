"""Running test code in a child process."""

from __future__ import annotations

import multiprocessing
import queue

import pytest


def in_forked_child(func, *args):
    """``func(*args)`` run in a child forked with multiprocessing's 'fork' context."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    proc = ctx.Process(target=lambda: results.put(func(*args)))
    proc.start()
    for _ in range(240):  # at most 2 minutes
        try:
            out = results.get(timeout=0.5)
            break
        except queue.Empty:
            if not proc.is_alive() and results.empty():
                pytest.fail(f"the forked child died (exit code {proc.exitcode})")
    else:
        proc.kill()
        pytest.fail("the forked child returned nothing in 2 minutes")
    proc.join(60)
    assert proc.exitcode == 0
    return out
