"""Pickling of query objects by file path: what lets them travel to other processes.

A query object holds memory maps, open files or whole maps in RAM; none of that should be
copied into a pickle (the DECaPS map in RAM is 74 GB). :class:`ReopenByPath` makes an
object pickle to its class and the arguments that opened it, with every map file as an
absolute path, and reopen its files when it is unpickled in the receiving process
(``multiprocessing`` with fork, spawn or forkserver, ``concurrent.futures``, Dask, lsdb).

:meth:`ReopenByPath.__dask_tokenize__` makes ``dask.base.tokenize`` deterministic: the
token depends on the class, the options and, for each file, its absolute path, size and
modification time, so two objects on the same unchanged file get the same token, and a
rewritten file gets a new one.

A process that unpickles the same object many times (a Dask worker running one task per
partition) opens its file once: the last few objects reopened in a process are reused
while their file is unchanged (same path, size and modification time).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

__all__ = ["ReopenByPath"]

#: Options that change how an object is opened but not its answers: left out of tokens.
_NOT_IN_TOKEN = frozenset({"progress"})


#: The objects this process reopened last, by token: a Dask worker unpickles the query
#: object once per task, and must not load a map into RAM once per partition.
_REOPENED: OrderedDict = OrderedDict()
_REOPENED_MAX = 4
_REOPENED_LOCK = threading.Lock()


def _reopen(cls, kwargs: dict):
    """Unpickle: open the map again in this process (quietly, without progress bars), or
    reuse the object this process reopened last from the same unchanged file and options."""
    if "progress" in kwargs:
        kwargs = dict(kwargs, progress=False)
    key = (cls.__module__, cls.__qualname__, _token_of(
        {k: v for k, v in kwargs.items() if k not in _NOT_IN_TOKEN}))
    with _REOPENED_LOCK:
        obj = _REOPENED.get(key)
        if obj is not None:
            _REOPENED.move_to_end(key)
            return obj
    obj = cls(**kwargs)
    with _REOPENED_LOCK:
        _REOPENED[key] = obj
        while len(_REOPENED) > _REOPENED_MAX:
            _REOPENED.popitem(last=False)
    return obj


def _file_token(path: Path) -> tuple:
    stat = os.stat(path)
    return ("file", str(path), stat.st_size, stat.st_mtime_ns)


def _token_of(value: Any):
    """A deterministic, hashable description of one init argument."""
    if isinstance(value, ReopenByPath):
        return value.__dask_tokenize__()
    if isinstance(value, Path):
        return _file_token(value)
    if isinstance(value, (list, tuple)):
        return tuple(_token_of(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _token_of(v)) for k, v in value.items()))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    # anything else (e.g. a dustmaps BayestarQuery given to the combined map) pickles by
    # value; its token is that of its type and identity only within this process
    return (type(value).__module__, type(value).__qualname__, id(value))


class ReopenByPath:
    """Mixin: pickle to (class, init arguments with absolute file paths); reopen on load.

    A class using it calls :meth:`_remember_init` at the end of ``__init__`` with keyword
    arguments that reopen the same map: files as :class:`~pathlib.Path` objects (stored
    resolved and absolute; never ``None``, so that the receiving process opens the very
    same file whatever its dustmaps configuration), other options as given.
    """

    _init_kwargs: dict | None = None

    def _remember_init(self, **kwargs) -> None:
        self._init_kwargs = {k: (Path(v).resolve() if isinstance(v, os.PathLike) else v)
                             for k, v in kwargs.items()}

    def __reduce__(self):
        if self._init_kwargs is None:
            raise TypeError(f"{type(self).__name__} was not opened through its constructor, "
                            "so it cannot be pickled by path")
        return (_reopen, (type(self), dict(self._init_kwargs)))

    def __dask_tokenize__(self):
        kwargs = {k: v for k, v in (self._init_kwargs or {}).items() if k not in _NOT_IN_TOKEN}
        return (type(self).__module__, type(self).__qualname__, _token_of(kwargs))
