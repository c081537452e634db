"""Progress bars of :mod:`dustmaps_ext` and its build pipelines.

Every bar of the package is a :class:`tqdm` of this module: a :class:`tqdm.auto.tqdm` that
stays silent when the ``TQDM_DISABLE`` environment variable is set (to anything but an
empty string, ``0``, ``false``, ``no`` or ``off``), even where the code asks for a bar
(``progress=True``, the default of the functions that show one). tqdm itself reads
``TQDM_DISABLE`` only as a default, which an explicit ``disable=False`` overrides.

Example
-------
>>> import os
>>> from dustmaps_ext.progress import bars_disabled_by_env
>>> os.environ["TQDM_DISABLE"] = "1"
>>> bars_disabled_by_env()
True
>>> del os.environ["TQDM_DISABLE"]
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm as _auto_tqdm

__all__ = ["tqdm", "bars_disabled_by_env"]

_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


def bars_disabled_by_env() -> bool:
    """Whether the ``TQDM_DISABLE`` environment variable asks for no progress bars."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in _FALSE_WORDS


class tqdm(_auto_tqdm):  # noqa: N801  (the name users know from tqdm)
    """:class:`tqdm.auto.tqdm`, silenced by ``TQDM_DISABLE`` whatever ``disable`` says."""

    def __init__(self, *args, disable: bool | None = False, **kwargs):
        super().__init__(*args, disable=True if bars_disabled_by_env() else disable, **kwargs)
